"""The persistence side of the Python/Rust boundary: typed frames, one codec table, one open.

- ``_core.read_path`` / ``read_bytes`` / ``read_fileobj`` return :class:`_core.Frame` values
  with named fields, their kinds compared with the Rust constants; ``inspect_path`` returns
  :class:`_core.FrameReport` values.
- The native codecs' magic bytes and extensions come from ``joblib_core::codec`` through
  ``_core``; ``compressor``'s table is built from them.
- A Memory hit of a big or memory-mapped output opens ``output.jrs`` once (checked with
  ``strace`` when it is there and allowed to trace).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import joblib_rs
from joblib_rs import _core, _loading, compressor
from joblib_rs._store_base import CacheWarning

# ------------------------------------------------------------------------------------------
# Frames


def _dumped(tmp_path: Path, **kwargs) -> tuple[Path, np.ndarray]:
    path = tmp_path / "obj.jrs"
    a = np.arange(1000, dtype=np.float64)
    joblib_rs.dump({"a": a, "s": "text"}, path, **kwargs)
    return path, a


def test_read_path_returns_frames_with_named_fields(tmp_path):
    path, a = _dumped(tmp_path)
    raw = path.read_bytes()
    frames = _core.read_path(str(path), _loading.alloc)
    assert [type(f) for f in frames] == [_core.Frame, _core.Frame]
    buf, pick = frames
    assert (buf.kind, buf.kind_name, buf.codec) == (_core.Frame.BUFFER, "buffer", "none")
    assert (pick.kind, pick.kind_name) == (_core.Frame.PICKLE, "pickle")
    assert buf.raw_len == a.nbytes and buf.verified and not buf.mapped
    assert raw[buf.offset : buf.offset + buf.raw_len] == a.tobytes()
    assert bytes(buf.data) == a.tobytes()
    # The kinds are the container's (docs/format.md: 1 buffer, 2 pickle, 3 index).
    assert _core.CONTAINER_FRAME_KINDS == {
        "buffer": _core.Frame.BUFFER,
        "pickle": _core.Frame.PICKLE,
        "index": _core.Frame.INDEX,
    }
    assert "kind='buffer'" in repr(buf) and "verified=True" in repr(buf)


def test_frames_are_frozen_values(tmp_path):
    path, _ = _dumped(tmp_path)
    frame = _core.read_path(str(path), _loading.alloc)[0]
    with pytest.raises(AttributeError):
        frame.kind = _core.Frame.PICKLE


def test_skipped_buffers_are_mapped_frames_without_data(tmp_path):
    path, _ = _dumped(tmp_path)
    buf, pick = _core.read_path(str(path), _loading.alloc, skip_buffers=True)
    assert buf.mapped and buf.data is None and not buf.verified
    assert not pick.mapped and pick.data is not None
    verified = _core.read_path(str(path), _loading.alloc, True, True)[0]
    assert verified.mapped and verified.verified


def test_read_bytes_and_read_fileobj_return_the_same_frames(tmp_path):
    path, _ = _dumped(tmp_path, compress=("zstd", 3))
    by_path = _core.read_path(str(path), _loading.alloc)
    by_bytes = _core.read_bytes(path.read_bytes(), _loading.alloc)
    data = path.read_bytes()
    stream = io.BytesIO(data[8:])
    by_file = _core.read_fileobj(stream, data[:8], _loading.alloc)
    for frames in (by_bytes, by_file):
        assert [(f.kind, f.codec, f.raw_len, f.offset) for f in frames] == [
            (f.kind, f.codec, f.raw_len, f.offset) for f in by_path
        ]
        assert [bytes(f.data) for f in frames] == [bytes(f.data) for f in by_path]


def test_inspect_path_reports_frames_by_name(tmp_path):
    path, a = _dumped(tmp_path, compress=("lz4", 1))
    report = _core.inspect_path(str(path))
    frames = report["frames"]
    assert [type(f) for f in frames] == [_core.FrameReport] * 2
    buf = frames[0]
    assert (buf.index, buf.kind, buf.kind_name, buf.codec) == (
        0,
        _core.Frame.BUFFER,
        "buffer",
        "lz4",
    )
    assert buf.raw_len == a.nbytes and buf.offset == buf.header_offset + 64
    assert buf.stored_len > 0 and buf.checksum == report["frames"][0][5]
    # Read by the frames the reader returns too.
    read = _core.read_path(str(path), _loading.alloc)
    assert [f.offset for f in frames] == [f.offset for f in read]


# ------------------------------------------------------------------------------------------
# One codec table


def test_compressor_table_is_the_cores_codec_table():
    native = {
        name: (c.prefix, c.extension)
        for name, c in compressor._COMPRESSORS.items()
        if isinstance(c, compressor.NativeCompressorWrapper)
    }
    assert native == {
        name: (_core.CODEC_MAGIC[name], _core.CODEC_EXTENSIONS[name]) for name in _core.CODECS
    }
    assert list(native) == list(_core.CODECS)


@pytest.mark.parametrize("codec", ["zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zstd"])
def test_whole_file_streams_start_with_the_cores_magic(codec):
    stream = _core.compress_stream(codec, _core.CODEC_LEVELS[codec][0] or 1, b"x" * 10_000)
    assert stream.startswith(_core.CODEC_MAGIC[codec])
    assert _loading.detect_format(stream[:16]) == codec


@pytest.mark.parametrize("codec", ["gzip", "bz2", "xz", "zstd"])
def test_extension_from_the_cores_table_selects_the_codec(tmp_path, codec):
    path = tmp_path / f"obj.pkl{_core.CODEC_EXTENSIONS[codec]}"
    joblib_rs.dump(np.arange(10_000), path)
    codecs = {f.codec for f in _core.inspect_path(str(path))["frames"]}
    assert codec in codecs
    np.testing.assert_array_equal(joblib_rs.load(path), np.arange(10_000))


# ------------------------------------------------------------------------------------------
# Memory hits read in place


def _make(n):
    return np.arange(n, dtype=np.float64)


def _make_two(n):
    return {"a": _make(n), "b": _make(n) + 1}


def _entry_output(memory_dir: Path) -> Path:
    (output,) = memory_dir.rglob(_core.STORE_OUTPUT)
    return output


def test_a_big_output_hit_is_read_in_place_and_damage_is_caught(tmp_path):
    memory = joblib_rs.Memory(tmp_path, verbose=0)
    cached = memory.cache(_make)
    n = 300_000  # 2.4 MB: above the 1 MiB read limit
    expected = _make(n)
    cached(n)
    hit = memory.store_backend.reader.fetch(str(_entry_output(tmp_path).parent))
    assert hit.found and hit.size is None
    np.testing.assert_array_equal(hit.value, expected)
    output = _entry_output(tmp_path)
    with open(output, "r+b") as f:
        f.seek(os.path.getsize(output) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.warns(CacheWarning, match="checksum"):
        np.testing.assert_array_equal(cached(n), expected)


@pytest.mark.parametrize("mode", ["r", "c", "r+"])
def test_a_mapped_hit_maps_the_arrays_from_one_map(tmp_path, mode):
    memory = joblib_rs.Memory(tmp_path, verbose=0, mmap_mode=mode)
    cached = memory.cache(_make_two)
    cached(1000)
    got = cached(1000)
    a, b = got["a"], got["b"]
    assert isinstance(a, np.memmap) and isinstance(b, np.memmap)
    assert a.filename == b.filename == str(_entry_output(tmp_path))
    assert a.mode == b.mode == mode
    assert a._mmap is b._mmap  # one map of the file for every array
    raw = Path(a.filename).read_bytes()
    assert raw[a.offset : a.offset + a.nbytes] == _make(1000).tobytes()
    np.testing.assert_array_equal(b, _make(1000) + 1)
    assert a.flags.writeable == (mode != "r")


def test_an_unknown_mmap_mode_is_reported_by_the_load_as_before(tmp_path):
    memory = joblib_rs.Memory(tmp_path, verbose=0, mmap_mode="bogus")
    cached = memory.cache(_make)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cached(10)  # computed, then loaded back as joblib does under mmap_mode
        np.testing.assert_array_equal(cached(10), _make(10))
    assert caught and all(issubclass(w.category, CacheWarning) for w in caught)
    assert "mmap_mode should be one of" in str(caught[0].message)


_STRACE_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import joblib_rs

    def make(n):
        return np.ones(n)

    def mark(name):
        try:
            open("/nonexistent-joblib-rs-mark-" + name)
        except OSError:
            pass

    root = sys.argv[1]
    for mode in (None, "r", "r+"):
        memory = joblib_rs.Memory(os.path.join(root, str(mode)), verbose=0, mmap_mode=mode)
        cached = memory.cache(make)
        for n in (100, 1 << 18):  # small and 2 MiB outputs
            cached(n)
            time.sleep(0.06)  # the version settles: later hits are the common ones
            cached(n)
            mark(f"{mode}-{n}-start")
            cached(n)
            mark(f"{mode}-{n}-end")
    """
)


def _strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(
        ["strace", "-f", "-e", "trace=openat", "-o", os.devnull, sys.executable, "-c", "0"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _strace_works(), reason="needs strace allowed to trace")
def test_a_hit_opens_the_output_once(tmp_path):
    log = tmp_path / "strace.txt"
    script = tmp_path / "child.py"
    script.write_text(_STRACE_CHILD)
    child = [sys.executable, str(script), str(tmp_path / "cache")]
    subprocess.run(
        ["strace", "-f", "-e", "trace=openat", "-o", str(log), *child], check=True, timeout=300
    )
    opens: dict[str, int] = {}
    current = None
    for line in log.read_text().splitlines():
        mark = re.search(r"nonexistent-joblib-rs-mark-(\S+)-(start|end)\"", line)
        if mark:
            current = mark.group(1) if mark.group(2) == "start" else None
            if current:
                opens[current] = 0
        elif current and "openat" in line and _core.STORE_OUTPUT in line:
            opens[current] += 1
    # Every hit opens output.jrs exactly once: small or big, read or mapped. (A small output
    # without arrays is not opened at all: its verified pickle is kept, test_memory_hit.py.)
    assert opens == {
        "None-100": 1,
        f"None-{1 << 18}": 1,
        "r-100": 1,
        f"r-{1 << 18}": 1,
        "r+-100": 1,
        f"r+-{1 << 18}": 1,
    }


def test_mapped_payloads_are_verified_once_per_file_version(tmp_path):
    memory = joblib_rs.Memory(tmp_path, verbose=0, mmap_mode="r")
    cached = memory.cache(_make)
    cached(10_000)
    time.sleep(0.06)
    cached(10_000)  # verified, version settled: remembered
    output = _entry_output(tmp_path)
    offset = cached(10_000).offset
    # A change that keeps the version (same size, modification time put back) is not seen
    # by later mapped hits of this process (docs/memory.md)...
    st = os.stat(output)
    with open(output, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff")
    os.utime(output, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cached(10_000)[0] != 0
    # ...while a write that changes the version is verified again, warned, recomputed.
    with open(output, "r+b") as f:
        f.seek(offset + 8)
        f.write(b"\xff")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = cached(10_000)
    assert any(issubclass(w.category, CacheWarning) for w in caught)
    np.testing.assert_array_equal(again, _make(10_000))


# ------------------------------------------------------------------------------------------
# numpy_pickle's reading path in _loading


def test_load_maps_every_array_of_a_file_from_one_map(tmp_path):
    path = tmp_path / "arrays.jrs"
    joblib_rs.dump([_make(1000) + i for i in range(5)], path)
    for mode in ("r", "c", "r+"):
        arrays = joblib_rs.load(path, mmap_mode=mode)
        assert len({id(a._mmap) for a in arrays}) == 1
        for i, a in enumerate(arrays):
            assert isinstance(a, np.memmap) and a.mode == mode
            assert a.filename == str(path) and a.offset % 64 == 0
            np.testing.assert_array_equal(a, _make(1000) + i)
        del arrays


def test_numpy_pickle_keeps_the_names_of_its_reading_path():
    from joblib_rs import numpy_pickle

    moved = {
        "_alloc": _loading.alloc,
        "_unpickle": _loading.unpickle,
        "_load_container_frames": _loading.load_frames,
        "_detect": _loading.detect_format,
        "_decompress_whole": _loading.decompress_whole,
        "_load_bytes": _loading.load_bytes,
        "_load_path": _loading.load_path,
        "_load_mapped_verified": _loading.load_mapped_verified,
        "_size_from": _loading.size_from,
        "_seekable": _loading.seekable,
        "_warn_compressed_mmap": _loading.warn_compressed_mmap,
        "_ENSURE_NATIVE": _loading.ENSURE_NATIVE,
    }
    for name, value in moved.items():
        assert getattr(numpy_pickle, name) is value, name
    assert numpy_pickle._BUFFER_FRAME == _core.Frame.BUFFER
    assert numpy_pickle._PICKLE_FRAME == _core.Frame.PICKLE
    # Pickles name the array rebuilder by this path (docs/format.md): it stays.
    assert numpy_pickle._rebuild_array.__module__ == "joblib_rs.numpy_pickle"
