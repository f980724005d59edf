"""Tests of joblib_rs.dump / joblib_rs.load (DESIGN §4, docs/format.md)."""

from __future__ import annotations

import bz2
import collections
import datetime
import decimal
import fractions
import gzip
import io
import lzma
import os
import pickle
import shutil
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from compat.joblib_files import JOBLIB_COMPRESSIONS, sample_object, write_with_joblib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import joblib_rs
from joblib_rs import CorruptFileError, _core
from joblib_rs.compressor import CompressorWrapper
from joblib_rs.numpy_pickle import _alloc

TO_PERSIST = [("a", [1, 2, 3]), ("b", np.arange(10))]
MANUAL_REPR = "[('a', [1, 2, 3]), ('b', array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))]"


def assert_same(a: Any, b: Any) -> None:
    """Deep equality that understands arrays (dtype, shape, values incl. NaN)."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), type(b)
        # Byte order may differ (load converts to native by default); nothing else may.
        assert a.dtype.newbyteorder("=") == b.dtype.newbyteorder("="), (a.dtype, b.dtype)
        assert a.shape == b.shape
        if a.dtype.hasobject:
            assert a.tolist() == b.tolist()
        else:
            np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert type(a) is type(b) and a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b or (a != a and b != b), (a, b)


def frame_codecs(path: Path) -> list[str]:
    """Codecs of the frames of a joblib-rs file, read by the core."""
    return [codec for _kind, codec, *_ in _core.read_path(str(path), _alloc)]


# ------------------------------------------------------------------------------------------
# The manual's §2.5 examples


def test_manual_simple_example(tmp_path: Path) -> None:
    filename = os.path.join(tmp_path, "test.joblib")
    assert joblib_rs.dump(TO_PERSIST, filename) == [filename]
    assert repr(joblib_rs.load(filename)) == MANUAL_REPR


def test_manual_file_objects(tmp_path: Path) -> None:
    filename = os.path.join(tmp_path, "test.joblib")
    with open(filename, "wb") as fo:
        assert joblib_rs.dump(TO_PERSIST, fo) is None
    with open(filename, "rb") as fo:
        assert repr(joblib_rs.load(fo)) == MANUAL_REPR


def test_manual_compressed_pickles(tmp_path: Path) -> None:
    filename = os.path.join(tmp_path, "test.joblib")
    assert joblib_rs.dump(TO_PERSIST, filename + ".compressed", compress=True) == [
        filename + ".compressed"
    ]
    assert repr(joblib_rs.load(filename + ".compressed")) == MANUAL_REPR
    assert joblib_rs.dump(TO_PERSIST, filename + ".z") == [filename + ".z"]
    assert repr(joblib_rs.load(filename + ".z")) == MANUAL_REPR
    # The manual writes `compress='gzip', 3`, a syntax error; the 2-tuple is what it means.
    assert joblib_rs.dump(TO_PERSIST, filename + ".gz", compress=("gzip", 3)) == [filename + ".gz"]
    assert repr(joblib_rs.load(filename + ".gz")) == MANUAL_REPR
    assert joblib_rs.dump(TO_PERSIST, filename + ".bz2", compress=("bz2", 3)) == [
        filename + ".bz2"
    ]
    assert repr(joblib_rs.load(filename + ".bz2")) == MANUAL_REPR
    assert joblib_rs.dump(TO_PERSIST, filename + ".gz", compress="gzip") == [filename + ".gz"]
    assert repr(joblib_rs.load(filename + ".gz")) == MANUAL_REPR
    with gzip.GzipFile(filename + ".gz", "wb", compresslevel=3) as fo:
        joblib_rs.dump(TO_PERSIST, fo)
    with gzip.GzipFile(filename + ".gz", "rb") as fo:
        assert repr(joblib_rs.load(fo)) == MANUAL_REPR
    assert joblib_rs.dump(TO_PERSIST, filename + ".lz4") == [filename + ".lz4"]
    assert repr(joblib_rs.load(filename + ".lz4")) == MANUAL_REPR


# ------------------------------------------------------------------------------------------
# dump / load basics


def test_pathlib_and_return_value(tmp_path: Path) -> None:
    path = tmp_path / "obj.jrs"
    assert joblib_rs.dump({"x": 1}, path) == [str(path)]
    assert joblib_rs.load(path) == {"x": 1}


def test_file_starts_with_container_magic_and_arrays_are_aligned(tmp_path: Path) -> None:
    path = tmp_path / "obj.jrs"
    a = np.arange(1000, dtype=np.float64)
    joblib_rs.dump({"a": a}, path)
    raw = path.read_bytes()
    assert raw[:8] == b"\x89JRS\r\n\x1a\n"
    frames = _core.read_path(str(path), _alloc)
    kind, codec, raw_len, offset, verified, _ = frames[0]
    assert (kind, codec, raw_len, verified) == (1, "none", 8000, True)
    assert offset % 64 == 0
    assert raw[offset : offset + 8000] == a.tobytes()


def test_non_seekable_and_bytesio_file_objects(tmp_path: Path) -> None:
    class WriteOnly:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def write(self, b: bytes) -> int:
            self.parts.append(bytes(b))
            return len(b)

    sink = WriteOnly()
    value = {"a": np.arange(100_000), "b": "text"}
    joblib_rs.dump(value, sink, compress=3)
    assert_same(joblib_rs.load(io.BytesIO(b"".join(sink.parts))), value)
    buf = io.BytesIO()
    joblib_rs.dump(value, buf)
    buf.seek(0)
    assert_same(joblib_rs.load(buf), value)


@pytest.mark.parametrize("opener", [gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile])
def test_stdlib_compressed_file_objects(tmp_path: Path, opener: Any) -> None:
    path = tmp_path / "obj.bin"
    value = [np.arange(5000).reshape(50, 100), "x"]
    with opener(path, "wb") as f:
        joblib_rs.dump(value, f)
    with opener(path, "rb") as f:
        assert_same(joblib_rs.load(f), value)
    # The path alone is recognised from the stream's magic bytes.
    assert_same(joblib_rs.load(path), value)


def test_second_argument_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Second argument should be a filename"):
        joblib_rs.dump({"a": 1}, 42)  # type: ignore[arg-type]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jrs"
    with pytest.raises(FileNotFoundError) as exc:
        joblib_rs.load(missing)
    assert "nope.jrs" in str(exc.value)


def test_lower_protocols_work(tmp_path: Path) -> None:
    value = {"a": np.arange(20.0), "b": [1, 2]}
    for protocol in (2, 4, 5, -1):
        joblib_rs.dump(value, tmp_path / "p.jrs", protocol=protocol)
        assert_same(joblib_rs.load(tmp_path / "p.jrs"), value)


def test_works_without_numpy(tmp_path: Path) -> None:
    path = tmp_path / "plain.jrs"
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import joblib_rs\n"
        f"joblib_rs.dump({{'a': [1, 2.5, 'x'], 'b': b'bytes'}}, {str(path)!r}, compress=3)\n"
        f"print(joblib_rs.load({str(path)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "{'a': [1, 2.5, 'x'], 'b': b'bytes'}"


def test_shared_and_repeated_arrays(tmp_path: Path) -> None:
    a = np.arange(100)
    value = [a, a, {"again": a}]
    joblib_rs.dump(value, tmp_path / "s.jrs")
    out = joblib_rs.load(tmp_path / "s.jrs")
    assert out[0] is out[1] is out[2]["again"]
    np.testing.assert_array_equal(out[0], a)


def test_loaded_arrays_are_writable_and_independent(tmp_path: Path) -> None:
    a = np.arange(100)
    a.flags.writeable = False
    joblib_rs.dump([a, np.arange(10)], tmp_path / "w.jrs")
    x, y = joblib_rs.load(tmp_path / "w.jrs")
    assert x.flags.writeable and y.flags.writeable
    x[0] = 7
    np.testing.assert_array_equal(y, np.arange(10))


# ------------------------------------------------------------------------------------------
# compress argument and codecs


@pytest.mark.parametrize(
    "compress, codec",
    [
        (0, "none"),
        (False, "none"),
        (True, "zstd"),
        (1, "zstd"),
        (9, "zstd"),
        ("zlib", "zlib"),
        ("gzip", "gzip"),
        ("bz2", "bz2"),
        ("lzma", "lzma"),
        ("xz", "xz"),
        ("lz4", "lz4"),
        ("zstd", "zstd"),
        (("zlib", 6), "zlib"),
        (("zstd", 19), "zstd"),
        (("gzip", 0), "none"),
    ],
)
def test_compress_argument_selects_codec(tmp_path: Path, compress: Any, codec: str) -> None:
    value = {"a": np.tile(np.arange(1000.0), 20), "t": "text" * 100}
    path = tmp_path / "c.jrs"
    joblib_rs.dump(value, path, compress=compress)
    assert set(frame_codecs(path)) == {codec}
    assert_same(joblib_rs.load(path), value)
    if codec != "none":
        assert path.stat().st_size < value["a"].nbytes / 2


@pytest.mark.parametrize(
    "ext, codec",
    [
        (".z", "zlib"),
        (".gz", "gzip"),
        (".bz2", "bz2"),
        (".lzma", "lzma"),
        (".xz", "xz"),
        (".lz4", "lz4"),
        (".zst", "zstd"),
        (".pkl", "none"),
    ],
)
def test_extension_selects_codec(tmp_path: Path, ext: str, codec: str) -> None:
    path = tmp_path / f"obj{ext}"
    value = np.tile(np.arange(100.0), 100)
    joblib_rs.dump(value, path)
    assert set(frame_codecs(path)) == {codec}
    np.testing.assert_array_equal(joblib_rs.load(path), value)
    # An explicit tuple wins over the extension, as in joblib.
    joblib_rs.dump(value, path, compress=("zlib", 1))
    assert set(frame_codecs(path)) == {"zlib"}


@pytest.mark.parametrize(
    "compress, match",
    [
        (10, 'Non valid compress level given: "10"'),
        (-1, 'Non valid compress level given: "-1"'),
        (("zlib", "high"), 'Non valid compress level given: "high"'),
        (("zlib",), "exactly 2 elements"),
        ("snappy", 'Non valid compression method given: "snappy"'),
        (("snappy", 3), 'Non valid compression method given: "snappy"'),
    ],
)
def test_invalid_compress_names_the_value(tmp_path: Path, compress: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        joblib_rs.dump([1], tmp_path / "x.jrs", compress=compress)
    assert not (tmp_path / "x.jrs").exists()


def test_large_array_compresses_in_many_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    value = np.round(rng.standard_normal(3_000_000), 2)  # 24 MB, 6 chunks
    for compress in ["zstd", "lz4", ("zlib", 1)]:
        joblib_rs.dump(value, tmp_path / "big.jrs", compress=compress)
        assert (tmp_path / "big.jrs").stat().st_size < value.nbytes
        np.testing.assert_array_equal(joblib_rs.load(tmp_path / "big.jrs"), value)


class _MagicZlibFile(io.RawIOBase):
    """A minimal file-object compressor: the magic b'MZ01' then a raw deflate stream."""

    MAGIC = b"MZ01"

    def __init__(self, fileobj: Any, mode: str = "rb", compresslevel: int = 6) -> None:
        super().__init__()
        self._f = fileobj
        self._mode = mode
        if "w" in mode:
            self._c = zlib.compressobj(compresslevel, zlib.DEFLATED, -15)
            self._f.write(self.MAGIC)
        else:
            data = self._f.read()
            if not data.startswith(self.MAGIC):
                raise OSError("not an MZ01 stream")
            self._buf = io.BytesIO(zlib.decompress(data[4:], -15))

    def readable(self) -> bool:
        return "r" in self._mode

    def writable(self) -> bool:
        return "w" in self._mode

    def write(self, b: Any) -> int:
        self._f.write(self._c.compress(bytes(b)))
        return len(b)

    def readinto(self, b: Any) -> int:
        data = self._buf.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and "w" in self._mode:
            self._f.write(self._c.flush())
        super().close()


def test_register_compressor(tmp_path: Path) -> None:
    wrapper = CompressorWrapper(_MagicZlibFile, prefix=_MagicZlibFile.MAGIC, extension=".mz")
    joblib_rs.register_compressor("mz", wrapper)
    with pytest.raises(ValueError, match=r"Compressor 'mz' already registered\."):
        joblib_rs.register_compressor("mz", wrapper)
    joblib_rs.register_compressor("mz", wrapper, force=True)
    with pytest.raises(ValueError, match="Compressor name should be a string"):
        joblib_rs.register_compressor(3, wrapper)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CompressorWrapper interface"):
        joblib_rs.register_compressor("bad", object())  # type: ignore[arg-type]

    value = {"a": np.tile(np.arange(50.0), 200), "b": "x" * 1000}
    for target, kwargs in [
        (tmp_path / "obj.bin", {"compress": ("mz", 3)}),
        (tmp_path / "obj.mz", {}),
    ]:
        joblib_rs.dump(value, target, **kwargs)
        raw = target.read_bytes()
        assert raw.startswith(b"MZ01")
        assert len(raw) < value["a"].nbytes / 2
        assert_same(joblib_rs.load(target), value)
        with open(target, "rb") as f:
            assert_same(joblib_rs.load(f), value)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------------------------------
# mmap_mode


def test_mmap_r_maps_arrays_in_place(tmp_path: Path) -> None:
    path = tmp_path / "m.jrs"
    value = {
        "a": np.arange(10_000, dtype=np.float32).reshape(100, 100),
        "f": np.asfortranarray(np.ones((30, 20))),
    }
    joblib_rs.dump(value, path)
    out = joblib_rs.load(path, mmap_mode="r")
    for key in value:
        arr = out[key]
        assert isinstance(arr, np.memmap)
        assert arr.filename == str(path.resolve())
        assert arr.offset % 64 == 0
        assert not arr.flags.writeable
        np.testing.assert_array_equal(arr, value[key])
    assert out["f"].flags.f_contiguous
    raw = path.read_bytes()
    assert raw[out["a"].offset : out["a"].offset + 16] == value["a"].tobytes()[:16]


def test_mmap_r_plus_writes_through_and_c_does_not(tmp_path: Path) -> None:
    path = tmp_path / "m.jrs"
    joblib_rs.dump([np.zeros(1000)], path)
    (m,) = joblib_rs.load(path, mmap_mode="r+")
    m[:10] = 5
    m.flush()
    del m
    np.testing.assert_array_equal(joblib_rs.load(path)[0][:11], [5] * 10 + [0])
    (c,) = joblib_rs.load(path, mmap_mode="c")
    c[:] = 9
    del c
    assert joblib_rs.load(path)[0][20] == 0
    (w,) = joblib_rs.load(path, mmap_mode="w+")  # as joblib: w+ acts as r+
    assert isinstance(w, np.memmap) and w[0] == 5


def test_mmap_on_compressed_file_warns_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "m.jrs"
    value = np.arange(10_000)
    joblib_rs.dump(value, path, compress=3)
    with pytest.warns(UserWarning, match='mmap_mode "r" is not compatible with compressed file'):
        out = joblib_rs.load(path, mmap_mode="r")
    assert not isinstance(out, np.memmap)
    np.testing.assert_array_equal(out, value)


def test_mmap_mode_and_byte_order_arguments_checked(tmp_path: Path) -> None:
    joblib_rs.dump([1], tmp_path / "x.jrs")
    with pytest.raises(ValueError, match="'rw'"):
        joblib_rs.load(tmp_path / "x.jrs", mmap_mode="rw")
    with pytest.raises(ValueError, match="Native byte ordering can only be enforced"):
        joblib_rs.load(tmp_path / "x.jrs", mmap_mode="r", ensure_native_byte_order=True)


def test_big_endian_arrays_come_back_native_unless_told(tmp_path: Path) -> None:
    path = tmp_path / "be.jrs"
    big = np.arange(1000, dtype=">f8")
    joblib_rs.dump(big, path)
    native = joblib_rs.load(path)
    assert native.dtype == np.dtype("=f8") and native.dtype.isnative
    np.testing.assert_array_equal(native, big)
    kept = joblib_rs.load(path, ensure_native_byte_order=False)
    assert kept.dtype == np.dtype(">f8")
    mapped = joblib_rs.load(path, mmap_mode="r")
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.dtype(">f8")
    np.testing.assert_array_equal(mapped, big)


# ------------------------------------------------------------------------------------------
# Atomic writes


class _FailsToPickle:
    def __reduce__(self) -> Any:
        raise RuntimeError("boom while pickling")


def test_failed_dump_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "keep.jrs"
    joblib_rs.dump({"old": np.arange(10)}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        joblib_rs.dump([np.arange(10), _FailsToPickle()], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jrs"]


def test_dump_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "r.jrs"
    joblib_rs.dump("first", path)
    ino = path.stat().st_ino
    joblib_rs.dump("second", path)
    assert joblib_rs.load(path) == "second"
    assert path.stat().st_ino != ino  # a new file was renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jrs"]


# ------------------------------------------------------------------------------------------
# Files written by the real joblib


@pytest.mark.parametrize("compress", JOBLIB_COMPRESSIONS, ids=str)
def test_reads_files_written_by_joblib(tmp_path: Path, compress: Any) -> None:
    path = write_with_joblib(tmp_path, compress)
    assert_same(joblib_rs.load(path), sample_object())
    with open(path, "rb") as f:
        assert_same(joblib_rs.load(f), sample_object())


def test_reads_joblib_file_with_mmap(tmp_path: Path) -> None:
    path = write_with_joblib(tmp_path, 0)
    out = joblib_rs.load(path, mmap_mode="r")
    expected = sample_object()
    assert isinstance(out["floats"], np.memmap)
    assert isinstance(out["fortran"], np.memmap) and out["fortran"].flags.f_contiguous
    assert out["big_endian"].dtype == np.dtype(">i4")
    for key in expected:
        assert_same(expected[key], out[key])


def test_joblib_compressed_file_with_mmap_warns(tmp_path: Path) -> None:
    path = write_with_joblib(tmp_path, ("zlib", 3))
    with pytest.warns(UserWarning, match="not compatible with compressed file"):
        out = joblib_rs.load(path, mmap_mode="r")
    assert not isinstance(out["floats"], np.memmap)


def test_joblib_file_arrays_native_byte_order(tmp_path: Path) -> None:
    path = write_with_joblib(tmp_path, 0)
    out = joblib_rs.load(path)
    assert out["big_endian"].dtype.isnative
    np.testing.assert_array_equal(out["big_endian"], np.arange(10))


def test_joblib_can_be_read_but_files_are_not_joblib_format(tmp_path: Path) -> None:
    import joblib

    joblib_rs.dump([1, 2], tmp_path / "ours.jrs")
    with pytest.raises(Exception):  # noqa: B017 - joblib cannot read our container
        joblib.load(tmp_path / "ours.jrs")


# ------------------------------------------------------------------------------------------
# Restricted load


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


@pytest.mark.parametrize("writer", ["joblib_rs", "joblib"])
def test_restricted_load_refuses_os_system_before_running_it(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    payload = {"data": np.arange(3), "evil": _Evil(marker)}
    if writer == "joblib":
        import joblib

        joblib.dump(payload, path)
    else:
        joblib_rs.dump(payload, path)
    system_name = f"{os.system.__module__}.system"
    for allowed in ["safe", ["safe", "builtins.*"], ["safe", f"{os.system.__module__}.getcwd"]]:
        with pytest.raises(pickle.UnpicklingError, match=system_name.replace(".", r"\.")):
            joblib_rs.load(path, allowed=allowed)
        assert not marker.exists()
    # Proof that the payload is live: an unrestricted load runs it.
    joblib_rs.load(path)
    assert marker.exists()


def test_restricted_load_accepts_safe_content(tmp_path: Path) -> None:
    value = {
        "arr": np.arange(12.0).reshape(3, 4),
        "scalar": np.float32(1.5),
        "dt": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "d": datetime.date(2020, 2, 29),
        "td": datetime.timedelta(seconds=5),
        "dec": decimal.Decimal("1.10"),
        "frac": fractions.Fraction(1, 3),
        "od": collections.OrderedDict(a=1),
        "dq": collections.deque([1, 2]),
        "cnt": collections.Counter("aab"),
        "misc": [1 + 2j, {1, 2}, frozenset({3}), bytearray(b"ab"), range(3), slice(1, 2)],
    }
    joblib_rs.dump(value, tmp_path / "safe.jrs")
    out = joblib_rs.load(tmp_path / "safe.jrs", allowed="safe")
    assert out["dt"] == value["dt"] and out["dec"] == value["dec"]
    assert out["misc"] == value["misc"] and out["cnt"] == value["cnt"]
    np.testing.assert_array_equal(out["arr"], value["arr"])
    # Object arrays are not data: refused by "safe", built from element lists (never from
    # raw bytes) once the allow-list names code the user trusts.
    joblib_rs.dump({"objs": np.array([1, "a"], dtype=object)}, tmp_path / "objs.jrs")
    with pytest.raises(pickle.UnpicklingError, match="object dtype"):
        joblib_rs.load(tmp_path / "objs.jrs", allowed="safe")
    out = joblib_rs.load(tmp_path / "objs.jrs", allowed=["safe", "numpy.object_"])
    assert out["objs"].tolist() == [1, "a"]
    import joblib

    joblib.dump(sample_object(), tmp_path / "jl.pkl", compress=3)
    with pytest.raises(pickle.UnpicklingError, match="object dtype"):
        joblib_rs.load(tmp_path / "jl.pkl", allowed="safe")
    loaded = joblib_rs.load(tmp_path / "jl.pkl", allowed=["safe", "numpy.object_"])
    assert_same(loaded, sample_object())
    data_only = {k: v for k, v in sample_object().items() if k != "objects"}
    joblib.dump(data_only, tmp_path / "data.pkl")
    assert_same(joblib_rs.load(tmp_path / "data.pkl", allowed="safe"), data_only)


def test_allowed_patterns(tmp_path: Path) -> None:
    joblib_rs.dump([Point(1, 2)], tmp_path / "p.jrs")
    qual = f"{Point.__module__}.Point"
    with pytest.raises(pickle.UnpicklingError, match=qual):
        joblib_rs.load(tmp_path / "p.jrs", allowed="safe")
    assert joblib_rs.load(tmp_path / "p.jrs", allowed=["safe", qual]) == [Point(1, 2)]
    assert joblib_rs.load(tmp_path / "p.jrs", allowed=[f"{Point.__module__}.*"]) == [Point(1, 2)]
    with pytest.raises(TypeError, match="allowed"):
        joblib_rs.load(tmp_path / "p.jrs", allowed=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'Point'"):
        joblib_rs.load(tmp_path / "p.jrs", allowed=["Point"])


# ------------------------------------------------------------------------------------------
# Damage


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.jrs"
    joblib_rs.dump({"a": np.arange(500, dtype=np.int64), "s": "payload"}, path)
    return path


def test_flipped_byte_in_array_is_a_checksum_error(good_file: Path) -> None:
    raw = bytearray(good_file.read_bytes())
    raw[128 + 100] ^= 0x01
    good_file.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="checksum mismatch in buffer frame 0"):
        joblib_rs.load(good_file)
    with pytest.raises(ValueError) as err:
        joblib_rs.load(good_file)
    assert isinstance(err.value, pickle.UnpicklingError)


def test_truncated_file(good_file: Path) -> None:
    raw = good_file.read_bytes()
    for cut in (10, 64, 200, len(raw) // 2, len(raw) - 1):
        good_file.write_bytes(raw[:cut])
        with pytest.raises(CorruptFileError, match=r"truncated|damaged"):
            joblib_rs.load(good_file)


def test_wrong_magic(good_file: Path) -> None:
    raw = bytearray(good_file.read_bytes())
    raw[1] = ord("X")
    good_file.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="not a joblib-rs or joblib file"):
        joblib_rs.load(good_file)


def test_frame_length_past_the_end(good_file: Path) -> None:
    raw = bytearray(good_file.read_bytes())
    raw[80:88] = (1 << 40).to_bytes(8, "little")
    good_file.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="frame header checksum mismatch"):
        joblib_rs.load(good_file)


@pytest.mark.parametrize("seed", range(12))
def test_random_files_raise_clear_errors(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.bytes(int(rng.integers(1, 5000)))
    prefixes = [
        b"",
        b"\x80\x05",
        b"x\x9c",
        b"\x1f\x8b",
        b"BZh9",
        b"\xfd7zXZ",
        b"]\x00\x00",
        b"\x04\x22\x4d\x18",
        b"\x28\xb5\x2f\xfd",
        b"\x89JRS\r\n\x1a\n",
        b"\x80\x04",
        b"\x80\x02",
    ]
    path = tmp_path / "random.bin"
    path.write_bytes(prefixes[seed] + data)
    with pytest.raises(CorruptFileError):
        joblib_rs.load(path)


def test_every_single_byte_flip_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "small.jrs"
    joblib_rs.dump([np.arange(20, dtype=np.int32), "s"], path, compress="lz4")
    raw = path.read_bytes()
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x40
        with pytest.raises(CorruptFileError):
            joblib_rs.load(io.BytesIO(bytes(bad)))


def test_damaged_joblib_files(tmp_path: Path) -> None:
    for compress in [0, ("zlib", 3), ("xz", 3)]:
        path = write_with_joblib(tmp_path, compress)
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
        with pytest.raises(CorruptFileError):
            joblib_rs.load(path)


# ------------------------------------------------------------------------------------------
# Property tests

DTYPES = [
    "?",
    "i1",
    "u1",
    "i2",
    "u2",
    "<i4",
    ">i4",
    "u4",
    "<i8",
    ">u8",
    "f2",
    "<f4",
    ">f8",
    "c8",
    ">c16",
    "M8[ns]",
    "m8[s]",
    "<U5",
    ">U3",
    "S4",
    [("a", "<i4"), ("b", ">f8"), ("c", "S2")],
]


@st.composite
def arrays(draw: Any) -> np.ndarray:
    kind = draw(st.sampled_from(["plain", "object"]))
    if kind == "object":
        items = draw(
            st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=6)
        )
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return arr
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    arr = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(["C", "F", "strided", "transposed"]))
    if layout == "F":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim >= 1:
        arr = arr[::2]
    elif layout == "transposed":
        arr = arr.T
    return arr


leaves = st.one_of(
    arrays(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.none(),
    st.booleans(),
)
nested = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
    ),
    max_leaves=12,
)


def _has_object_array(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.hasobject
    if isinstance(value, dict):
        return any(_has_object_array(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_object_array(v) for v in value)
    return False


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(value=nested, compress=st.sampled_from([0, "zstd", "lz4", ("zlib", 1), "xz"]))
def test_round_trip_property(tmp_path_factory: Any, value: Any, compress: Any) -> None:
    path = tmp_path_factory.mktemp("prop") / "v.jrs"
    joblib_rs.dump(value, path, compress=compress)
    assert_same(value, joblib_rs.load(path))
    # Everything generated here but object arrays is plain data: "safe" accepts all of it.
    allowed = ["safe", "numpy.object_"] if _has_object_array(value) else "safe"
    assert_same(value, joblib_rs.load(path, allowed=allowed))
    if compress == 0:
        assert_same(value, joblib_rs.load(path, mmap_mode="r"))


def test_pandas_dataframe_round_trip(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {
            "i": np.arange(1000),
            "f": np.linspace(0, 1, 1000),
            "s": [f"row{i}" for i in range(1000)],
            "c": pd.Categorical(["a", "b"] * 500),
            "t": pd.date_range("2020-01-01", periods=1000, freq="h"),
        }
    ).set_index("s")
    for compress in (0, 3):
        joblib_rs.dump(df, tmp_path / "df.jrs", compress=compress)
        pd.testing.assert_frame_equal(joblib_rs.load(tmp_path / "df.jrs"), df)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        joblib_rs.dump(df, tmp_path / "df.jrs")
        mapped = joblib_rs.load(tmp_path / "df.jrs", mmap_mode="r")
        assert any(isinstance(mapped[c].values, np.memmap) for c in ("i", "f"))
        assert mapped.equals(df) and list(mapped.columns) == list(df.columns)


def test_mmap_with_file_objects_warns_as_joblib(tmp_path: Path) -> None:
    path = tmp_path / "f.jrs"
    joblib_rs.dump([np.arange(100)], path)
    buf = io.BytesIO(path.read_bytes())
    with pytest.warns(UserWarning, match="In memory persistence is not compatible"):
        out = joblib_rs.load(buf, mmap_mode="r")
    assert not isinstance(out[0], np.memmap)
    with open(path, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("error")
        out = joblib_rs.load(f, mmap_mode="r")  # a raw file: silently in memory, as joblib
    np.testing.assert_array_equal(out[0], np.arange(100))
    with gzip.GzipFile(tmp_path / "f.gz", "wb") as g:
        joblib_rs.dump([1], g)
    with gzip.GzipFile(tmp_path / "f.gz", "rb") as g:
        with pytest.warns(UserWarning, match="is not a raw file"):
            assert joblib_rs.load(g, mmap_mode="r") == [1]


def test_file_larger_than_background_sync_interval(tmp_path: Path) -> None:
    # 80 MB: the writer starts background fdatasyncs every 64 MiB before the final fsync.
    value = np.arange(10_000_000, dtype=np.float64)
    path = tmp_path / "big.jrs"
    joblib_rs.dump(value, path)
    assert path.stat().st_size > value.nbytes
    np.testing.assert_array_equal(joblib_rs.load(path), value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jrs"]


def test_big_payload_read_by_two_threads_detects_damage_in_either_half(tmp_path: Path) -> None:
    # Payloads of 64 MiB or more are read by two threads (front half hashed while read, back
    # half read by a helper): a flipped byte in either half, or a cut, must still be caught.
    value = np.arange(9_000_000, dtype=np.float64)  # 72 MB
    path = tmp_path / "big.jrs"
    joblib_rs.dump(value, path, fsync=False)
    np.testing.assert_array_equal(joblib_rs.load(path), value)
    raw = path.read_bytes()
    start = raw.index(value[:8].tobytes())
    for where in (start + 1000, start + value.nbytes - 1000):
        damaged = bytearray(raw)
        damaged[where] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptFileError, match="checksum"):
            joblib_rs.load(path)
    path.write_bytes(raw[: start + value.nbytes // 2 + 12345])
    with pytest.raises(CorruptFileError):
        joblib_rs.load(path)


def test_joblib_file_with_impossible_array_size_is_rejected(tmp_path: Path) -> None:
    import joblib

    path = tmp_path / "shape.pkl"
    joblib.dump(np.arange(1000, dtype=np.int64), path)
    raw = path.read_bytes()
    # The wrapper pickles shape (1000,) as a BININT2 1000 (M\xe8\x03); claim 60000 elements.
    assert raw.count(b"M\xe8\x03") == 1
    path.write_bytes(raw.replace(b"M\xe8\x03", b"M\x60\xea"))
    with pytest.raises(CorruptFileError, match="bytes left in the file"):
        joblib_rs.load(path)


def test_dumping_a_loaded_memmap(tmp_path: Path) -> None:
    first = tmp_path / "first.jrs"
    joblib_rs.dump({"a": np.arange(5000.0).reshape(50, 100)}, first)
    mapped = joblib_rs.load(first, mmap_mode="r")["a"]
    assert isinstance(mapped, np.memmap)
    second = tmp_path / "second.jrs"
    joblib_rs.dump([mapped, mapped[::3, 1:]], second, compress="lz4")
    a, b = joblib_rs.load(second)
    assert type(a) is np.ndarray and type(b) is np.ndarray
    np.testing.assert_array_equal(a, mapped)
    np.testing.assert_array_equal(b, np.asarray(mapped)[::3, 1:])


def test_several_dumps_in_one_file_object_load_in_sequence(tmp_path: Path) -> None:
    path = tmp_path / "many.bin"
    values = [{"i": i, "a": np.full(1000 * (i + 1), i)} for i in range(3)]
    with open(path, "wb") as f:
        for v in values:
            joblib_rs.dump(v, f, compress=("zstd", 1) if values.index(v) == 1 else 0)
    with open(path, "rb") as f:
        for v in values:
            assert_same(joblib_rs.load(f), v)
        assert f.read() == b""


def test_file_object_errors_propagate(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)
            self._reads = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            self._reads += 1
            if self._reads > 2:
                raise OSError("disk on fire")
            return self._data.read(n)

    buf = io.BytesIO()
    joblib_rs.dump({"a": np.arange(100_000)}, buf)
    with pytest.raises(OSError, match="disk on fire"):
        joblib_rs.load(Broken(buf.getvalue()))


def test_dump_into_missing_folder_names_the_target(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "x.jrs"
    with pytest.raises(FileNotFoundError) as exc:
        joblib_rs.dump([1], target)
    assert str(target) in str(exc.value)


def test_gil_is_released_while_compressing_and_reading(tmp_path: Path) -> None:
    import threading

    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            stop.wait(0.001)

    value = np.random.default_rng(3).random(2_000_000)  # 16 MB: four chunks
    path = tmp_path / "gil.jrs"
    t = threading.Thread(target=count)
    t.start()
    try:
        before = ticks
        joblib_rs.dump(value, path, compress=("zlib", 9))  # a slow codec: the call lasts
        during_dump = ticks - before
        before = ticks
        out = joblib_rs.load(path)
        during_load = ticks - before
    finally:
        stop.set()
        t.join()
    np.testing.assert_array_equal(out, value)
    # A Python thread kept running during both calls: the GIL was not held throughout.
    assert during_dump >= 3, during_dump
    assert during_load >= 1, during_load


def test_non_durable_dump_for_caches(tmp_path: Path) -> None:
    from joblib_rs.numpy_pickle import _dump

    path = tmp_path / "cache.jrs"
    value = {"a": np.arange(1000)}
    assert _dump(value, path, 3, None, durable=False) == [str(path)]
    assert_same(joblib_rs.load(path), value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.jrs"]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
@pytest.mark.parametrize("fsync", [True, False])
def test_dump_fsync_switch(tmp_path: Path, fsync: bool) -> None:
    # Count the flush system calls of a real dump: fsync=True flushes the file (and its
    # folder), fsync=False flushes nothing, as joblib.
    path = tmp_path / "value.jrs"
    code = (
        "import sys, numpy as np, joblib_rs\n"
        f"joblib_rs.dump({{'a': np.arange(10)}}, sys.argv[1], fsync={fsync})\n"
    )
    trace = tmp_path / "trace"
    subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            code,
            str(path),
        ],
        check=True,
        timeout=120,
    )
    flushes = [line for line in trace.read_text().splitlines() if "sync(" in line]
    assert (len(flushes) >= 1) == fsync, flushes
    assert_same(joblib_rs.load(path), {"a": np.arange(10)})
    with pytest.raises(TypeError, match="fsync must be True or False"):
        joblib_rs.dump(1, path, fsync="yes")  # type: ignore[arg-type]


def test_unaligned_joblib_array_is_mapped_with_joblibs_warning(tmp_path: Path) -> None:
    """A joblib < 1.2 file (no alignment padding): mapped anyway, with joblib's warning."""
    from hostile_pickles import P, dtype

    p = P(2).glob("joblib.numpy_pickle", "NumpyArrayWrapper").empty_tuple().raw(pickle.NEWOBJ)
    p = p.mark().str("subclass").glob("numpy", "ndarray").str("shape").mark().int(4).tuple()
    p = dtype("i4")(p.str("order").str("C").str("dtype"))
    p = p.str("allow_mmap").bool(True).dict().build()
    path = tmp_path / "old.pkl"
    path.write_bytes(bytes(p.out) + np.arange(4, dtype="<i4").tobytes() + pickle.STOP)
    import joblib

    assert joblib.load(path).tolist() == [0, 1, 2, 3]
    with pytest.warns(UserWarning, match="not byte aligned"):
        mapped = joblib_rs.load(path, mmap_mode="r")
    assert isinstance(mapped, np.memmap) and mapped.tolist() == [0, 1, 2, 3]
    assert joblib_rs.load(path, allowed="safe").tolist() == [0, 1, 2, 3]
