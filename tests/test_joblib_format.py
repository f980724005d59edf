"""``dump(..., format="joblib")``: files that real joblib loads (issue 17, items 1 and 4)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from compat.joblib_files import JOBLIB_COMPRESSIONS, sample_object
from test_numpy_pickle import assert_same

import joblib_rs
from joblib_rs import _core
from joblib_rs._joblib_format import resolve_joblib_compress

#: Every compression joblib reads, with the first bytes of such a file.
PREFIXES = {
    "zlib": b"x",
    "gzip": b"\x1f\x8b",
    "bz2": b"BZh",
    "xz": b"\xfd7zXZ",
    "lzma": b"]\x00\x00",
    "lz4": b"\x04\x22\x4d\x18",
}


def decompress(data: bytes) -> bytes:
    """The pickle stream of a joblib file, decompressed by Python's own modules."""
    if data.startswith(PREFIXES["gzip"]):
        return gzip.decompress(data)
    if data.startswith(PREFIXES["bz2"]):
        return bz2.decompress(data)
    if data.startswith(PREFIXES["xz"]):
        return lzma.decompress(data, format=lzma.FORMAT_XZ)
    if data.startswith(PREFIXES["lzma"]):
        return lzma.decompress(data, format=lzma.FORMAT_ALONE)
    if data.startswith(PREFIXES["lz4"]):
        import lz4.frame

        return lz4.frame.decompress(data)
    if data.startswith(b"x"):
        return zlib.decompress(data)
    return data


def name_of(compress: Any) -> str:
    return "plain" if compress == 0 else f"{compress[0]}{compress[1]}"


@pytest.mark.parametrize("compress", JOBLIB_COMPRESSIONS, ids=name_of)
def test_joblib_loads_every_codec_by_path(tmp_path: Path, compress: Any) -> None:
    path = tmp_path / "sample.pkl"
    value = sample_object()
    assert joblib_rs.dump(value, path, compress=compress, format="joblib") == [str(path)]
    data = path.read_bytes()
    if compress != 0:
        assert data.startswith(PREFIXES[compress[0]])
    # Nothing of joblib_rs in the file: it loads where only joblib is installed.
    assert b"joblib_rs" not in decompress(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(value, joblib.load(path))
    assert_same(value, joblib_rs.load(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.pkl"]


@pytest.mark.parametrize("compress", JOBLIB_COMPRESSIONS, ids=name_of)
def test_joblib_loads_every_codec_from_a_file_object(compress: Any) -> None:
    value = sample_object()
    buf = io.BytesIO()
    assert joblib_rs.dump(value, buf, compress=compress, format="joblib") is None
    buf.seek(0)
    assert_same(value, joblib.load(buf))
    buf.seek(0)
    assert_same(value, joblib_rs.load(buf))


def test_a_process_with_joblib_only_loads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl.gz"
    value = {"w": np.arange(12.0).reshape(3, 4), "name": "m"}
    joblib_rs.dump(value, path, format="joblib")
    code = (
        "import sys\n"
        "sys.modules['joblib_rs'] = None  # joblib_rs cannot be imported here\n"
        "import joblib, numpy as np\n"
        "v = joblib.load(sys.argv[1])\n"
        "assert v['name'] == 'm' and v['w'].tolist() == np.arange(12.0).reshape(3, 4).tolist()\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("mmap_mode", ["r", "c", "r+"])
def test_joblib_memory_maps_uncompressed_files_aligned(tmp_path: Path, mmap_mode: str) -> None:
    path = tmp_path / "arrays.pkl"
    rng = np.random.default_rng(0)
    value = {
        "odd": np.arange(3, dtype=np.int8),  # shifts the next array's position
        "floats": rng.random((100, 3)),
        "fortran": np.asfortranarray(rng.random((5, 7))),
        "strided": np.arange(40.0).reshape(8, 5)[::2, 1:],
        "objects": np.array([1, None], dtype=object),
    }
    joblib_rs.dump(value, path, format="joblib")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # joblib warns about unaligned arrays: must not
        out = joblib.load(path, mmap_mode=mmap_mode)
    for key in ("odd", "floats", "fortran", "strided"):
        assert isinstance(out[key], np.memmap), key
        assert out[key].offset % 16 == 0, (key, out[key].offset)
        assert_same(value[key], np.asarray(out[key]))
    assert out["fortran"].flags.f_contiguous
    assert out["objects"].tolist() == [1, None]
    mapped = joblib_rs.load(path, mmap_mode="r")
    assert_same(value["floats"], np.asarray(mapped["floats"]))


#: Folders holding older joblib releases to check against (``pip install --target DIR
#: joblib==1.0.1``), separated by ``os.pathsep``; the test is skipped without it.
OLD_JOBLIBS = [p for p in os.environ.get("JOBLIB_RS_OLD_JOBLIB", "").split(os.pathsep) if p]


@pytest.mark.skipif(not OLD_JOBLIBS, reason="set JOBLIB_RS_OLD_JOBLIB to older joblib folders")
@pytest.mark.parametrize("folder", OLD_JOBLIBS)
def test_older_joblib_releases_load_every_codec(tmp_path: Path, folder: str) -> None:
    value = sample_object()
    del value["big_endian"]  # joblib < 1.2 byte-swaps with an API numpy 2 removed
    paths = []
    for compress in JOBLIB_COMPRESSIONS:
        paths.append(tmp_path / f"{name_of(compress)}.pkl")
        joblib_rs.dump(value, paths[-1], compress=compress, format="joblib")
    code = (
        "import sys, warnings, numpy as np, joblib\n"
        "warnings.simplefilter('error', UserWarning)  # e.g. 'not byte aligned'\n"
        "for p in sys.argv[1:]:\n"
        "    v = joblib.load(p, mmap_mode='r' if p.endswith('plain.pkl') else None)\n"
        "    assert v['ints'].tolist() == list(range(1000)), p\n"
        "    assert v['objects'].tolist() == [1, 'two', None, 3.0], p\n"
        "    assert v['fortran'].flags.f_contiguous, p\n"
        "print(joblib.__version__)\n"
    )
    env = {**os.environ, "PYTHONPATH": folder}
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert not out.stdout.startswith(joblib.__version__)  # really the older release


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_every_pickle_protocol(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "p.pkl"
    value = sample_object()
    joblib_rs.dump(value, path, protocol=protocol, format="joblib")
    assert_same(value, joblib.load(path))
    assert_same(value, joblib_rs.load(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # protocol 0: joblib warns of unaligned arrays
        mapped = joblib.load(path, mmap_mode="r")
    assert isinstance(mapped["floats"], np.memmap)
    if protocol >= 1:
        assert mapped["floats"].offset % 16 == 0


def test_objects_without_arrays_are_plain_pickles(tmp_path: Path) -> None:
    path = tmp_path / "plain.pkl"
    value = [(i, i * 0.5, str(i)) for i in range(1000)]
    joblib_rs.dump(value, path, format="joblib")
    assert pickle.loads(path.read_bytes()) == value
    assert joblib.load(path) == value


def test_arrays_met_late_switch_to_the_wrapper_layout(tmp_path: Path) -> None:
    path = tmp_path / "late.pkl"
    mapped = np.memmap(tmp_path / "m", dtype="i2", shape=3, mode="w+")
    value = [*range(10_000), np.arange(5), mapped]
    joblib_rs.dump(value, path, format="joblib")
    out = joblib.load(path)
    assert out[:10_000] == list(range(10_000))
    assert_same(np.arange(5), out[10_000])
    assert_same(np.zeros(3, dtype="i2"), out[10_001])


def test_joblib_semantics_of_compress() -> None:
    assert resolve_joblib_compress(0, "a.pkl") == (None, 0)
    assert resolve_joblib_compress(True, "a.pkl") == ("zlib", 3)
    assert resolve_joblib_compress(6, "a.pkl") == ("zlib", 6)
    assert resolve_joblib_compress("lz4", "a.pkl") == ("lz4", 0)
    assert resolve_joblib_compress(("bz2", 2), "a.gz") == ("bz2", 2)
    assert resolve_joblib_compress(0, "a.pkl.gz") == ("gzip", 3)
    assert resolve_joblib_compress(5, "a.xz") == ("xz", 5)
    assert resolve_joblib_compress(0, "a.zst") == (None, 0)
    with pytest.raises(ValueError, match="zstd"):
        resolve_joblib_compress(("zstd", 3), "a")
    with pytest.raises(ValueError, match="Non valid compress level"):
        resolve_joblib_compress(10, "a")
    with pytest.raises(ValueError, match="Non valid compression method"):
        resolve_joblib_compress(("snappy", 3), "a")


def test_extension_picks_the_codec_as_joblib(tmp_path: Path) -> None:
    for ext, codec in (
        (".z", "zlib"),
        (".gz", "gzip"),
        (".bz2", "bz2"),
        (".xz", "xz"),
        (".lzma", "lzma"),
        (".lz4", "lz4"),
    ):
        path = tmp_path / f"f{ext}"
        joblib_rs.dump({"a": np.arange(100)}, path, format="joblib")
        assert path.read_bytes().startswith(PREFIXES[codec]), ext
        assert_same({"a": np.arange(100)}, joblib.load(path))


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format must be"):
        joblib_rs.dump(1, tmp_path / "x", format="pickle")
    with pytest.raises(ValueError, match="Second argument"):
        joblib_rs.dump(1, 3, format="joblib")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zstd"):
        joblib_rs.dump(1, tmp_path / "x", compress=("zstd", 3), format="joblib")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("compress", [3, ("gzip", 1), ("bz2", 1), ("xz", 1), ("lz4", 3)])
def test_large_array_over_many_chunks(tmp_path: Path, compress: Any) -> None:
    # 40 MB: several 4 MiB chunks compressed in parallel, and more than one encoder batch.
    value = np.repeat(np.arange(625_000, dtype=np.float64), 8)
    path = tmp_path / "big.pkl"
    joblib_rs.dump(value, path, compress=compress, format="joblib")
    np.testing.assert_array_equal(joblib.load(path), value)
    np.testing.assert_array_equal(joblib_rs.load(path), value)


@pytest.mark.parametrize("compress", [("zlib", 3), ("gzip", 3), ("lz4", 3), ("bz2", 3)])
def test_sizes_close_to_joblibs(tmp_path: Path, compress: Any) -> None:
    value = np.repeat(np.arange(1_000_000, dtype=np.float64), 8)  # 64 MB, compressible
    ours, theirs = tmp_path / "ours.pkl", tmp_path / "theirs.pkl"
    joblib_rs.dump(value, ours, compress=compress, format="joblib")
    joblib.dump(value, theirs, compress=compress)
    ratio = ours.stat().st_size / theirs.stat().st_size
    assert ratio <= 1.05, ratio


def test_lz4_levels_from_3_are_lz4_hc_in_both_formats(tmp_path: Path) -> None:
    value = np.repeat(np.arange(1_000_000, dtype=np.float64), 8)  # 64 MB, compressible
    sizes = {}
    for name, kwargs in {
        "jrs0": {"compress": ("lz4", 0)},
        "jrs3": {"compress": ("lz4", 3)},
        "joblib3": {"compress": ("lz4", 3), "format": "joblib"},
    }.items():
        path = tmp_path / name
        joblib_rs.dump(value, path, **kwargs)
        sizes[name] = path.stat().st_size
        np.testing.assert_array_equal(joblib_rs.load(path), value)
    reference = tmp_path / "reference"
    joblib.dump(value, reference, compress=("lz4", 3))
    assert sizes["jrs3"] < 0.8 * sizes["jrs0"], sizes
    assert sizes["jrs3"] <= 1.05 * reference.stat().st_size, sizes
    assert sizes["joblib3"] <= 1.05 * reference.stat().st_size, sizes


def test_stream_encoder_matches_python_decoders() -> None:
    data = np.repeat(np.arange(300_000, dtype=np.int32), 3).tobytes()
    for codec in PREFIXES:
        enc = _core.StreamEncoder(codec, 1)
        out = enc.write(data[:1000]) + enc.write(memoryview(data)[1000:]) + enc.finish()
        assert decompress(out) == data, codec
        with pytest.raises(ValueError, match="finished"):
            enc.finish()
    with pytest.raises(ValueError):
        _core.StreamEncoder("zstd", 3)


@pytest.mark.parametrize("compress", [3, ("gzip", 3), ("lz4", 3), ("xz", 1)])
def test_compressed_joblib_files_load_arrays_as_views_of_the_decoded_stream(
    tmp_path: Path, compress: Any
) -> None:
    # joblib's compressed files are one stream: it is decoded once into a buffer that this
    # load owns, and the (aligned) arrays are writable views of it, not copies.
    c = np.arange(12.0).reshape(3, 4)
    f = np.asfortranarray(np.arange(20, dtype=np.int32).reshape(4, 5))
    swapped = np.arange(6, dtype=">i8")
    path = tmp_path / "data.pkl"
    joblib.dump({"c": c, "f": f, "swapped": swapped, "text": "x"}, path, compress=compress)
    loaded = joblib_rs.load(path)
    assert loaded["c"].flags.c_contiguous and np.array_equal(loaded["c"], c)
    assert loaded["f"].flags.f_contiguous and np.array_equal(loaded["f"], f)
    assert loaded["swapped"].dtype.isnative and np.array_equal(loaded["swapped"], swapped)

    def owner(array: np.ndarray) -> Any:
        while isinstance(array, np.ndarray) and array.base is not None:
            array = array.base
        return array.obj if isinstance(array, memoryview) else array

    assert isinstance(owner(loaded["c"]), bytearray)
    assert owner(loaded["c"]) is owner(loaded["f"])
    for key in ("c", "f", "swapped"):
        assert loaded[key].flags.writeable
    loaded["c"][:] = -1  # the views do not overlap
    assert np.array_equal(loaded["f"], f) and np.array_equal(loaded["swapped"], swapped)
    assert joblib_rs.load(path, allowed="safe")["c"].sum() == c.sum()
