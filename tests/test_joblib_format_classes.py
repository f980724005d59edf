"""joblib's format classes: NumpyPickler/NumpyUnpickler/NumpyArrayWrapper, the compressor
file objects and wrappers, numpy_pickle_utils and numpy_pickle_compat; checked against joblib."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import joblib_rs
from joblib_rs import compressor, numpy_pickle, numpy_pickle_compat, numpy_pickle_utils

joblib = pytest.importorskip("joblib")
from joblib import compressor as j_compressor  # noqa: E402
from joblib import numpy_pickle as j_numpy_pickle  # noqa: E402


def _sample():
    return {
        "floats": np.arange(10.0),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "strided": np.arange(20)[::3],
        "objects": np.array([1, "x", None], dtype=object),
        "matrix": np.matrix([[1, 2]]),
        "empty": np.zeros((0, 3)),
        "big_endian": np.arange(4, dtype=">i4"),
        "structured": np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", ">f8")]),
        "plain": [1, "x", (None, b"y")],
    }


def _assert_same(loaded, expected):
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(value))
            assert np.asarray(loaded[key]).dtype == value.dtype or key == "big_endian"
        else:
            assert loaded[key] == value


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_pickler_writes_joblibs_format(tmp_path, protocol):
    path = tmp_path / "data.pkl"
    with open(path, "wb") as fh:
        numpy_pickle.NumpyPickler(fh, protocol=protocol).dump(_sample())
    _assert_same(joblib.load(path), _sample())
    _assert_same(joblib_rs.load(path), _sample())
    theirs = io.BytesIO()
    j_numpy_pickle.NumpyPickler(theirs, protocol=protocol).dump(_sample())
    assert path.read_bytes() == theirs.getvalue()  # byte for byte


def test_numpy_pickler_without_tell_writes_unaligned_data():
    class NoTell(io.RawIOBase):
        def __init__(self):
            self.chunks = []

        def writable(self):
            return True

        def write(self, b):
            self.chunks.append(bytes(b))
            return len(b)

        def tell(self):
            raise io.UnsupportedOperation

    sink = NoTell()
    numpy_pickle.NumpyPickler(sink).dump(np.arange(3))
    data = io.BytesIO(b"".join(sink.chunks))
    np.testing.assert_array_equal(
        numpy_pickle.NumpyUnpickler("", data, False).load(), np.arange(3)
    )


def test_numpy_unpickler_reads_joblib_files_and_maps_arrays(tmp_path):
    path = str(tmp_path / "joblib.pkl")
    joblib.dump(_sample(), path)
    with open(path, "rb") as fh:
        unpickler = numpy_pickle.NumpyUnpickler(path, fh, ensure_native_byte_order=False)
        _assert_same(unpickler.load(), _sample())
    with open(path, "rb") as fh:
        loaded = numpy_pickle.NumpyUnpickler(path, fh, False, mmap_mode="r").load()
    assert isinstance(loaded["floats"], np.memmap) and loaded["floats"].mode == "r"
    with open(path, "rb") as fh:
        native = numpy_pickle.NumpyUnpickler(path, fh, ensure_native_byte_order=True).load()
    assert native["big_endian"].dtype.isnative
    np.testing.assert_array_equal(native["big_endian"], np.arange(4))


def test_restricted_loader_subclass(tmp_path):
    class Restricted(numpy_pickle.NumpyUnpickler):
        def find_class(self, module, name):
            if module.split(".")[0] in ("numpy", "joblib", "builtins"):
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"global '{module}.{name}' is forbidden")

    ok, bad = tmp_path / "ok.pkl", tmp_path / "bad.pkl"
    joblib.dump(_sample(), ok)
    joblib.dump({"f": os.path.join}, bad)
    with open(ok, "rb") as fh:
        _assert_same(Restricted(str(ok), fh, False).load(), _sample())
    with open(bad, "rb") as fh, pytest.raises(pickle.UnpicklingError, match="forbidden"):
        Restricted(str(bad), fh, False).load()


def test_array_wrapper_fields():
    wrapper = numpy_pickle.NumpyArrayWrapper(np.ndarray, (2, 3), "C", np.dtype("f8"))
    assert wrapper.allow_mmap is False
    assert wrapper.safe_get_numpy_array_alignment_bytes() == 16
    assert (
        vars(wrapper).keys()
        == vars(j_numpy_pickle.NumpyArrayWrapper(np.ndarray, (2, 3), "C", np.dtype("f8"))).keys()
    )


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (compressor.BinaryZlibFile, j_compressor.BinaryZlibFile),
        (compressor.BinaryGzipFile, j_compressor.BinaryGzipFile),
    ],
)
def test_binary_zlib_files_as_joblibs(ours, theirs, tmp_path):
    data = os.urandom(3000) * 100
    mine, reference = io.BytesIO(), io.BytesIO()
    with ours(mine, "wb", compresslevel=3) as fh:
        fh.write(data)
        assert fh.tell() == len(data)
    with theirs(reference, "wb", compresslevel=3) as fh:
        fh.write(data)
    assert mine.getvalue() == reference.getvalue()
    with ours(io.BytesIO(reference.getvalue() * 2), "rb") as fh:  # two streams in a row
        assert fh.read(10) == data[:10]
        assert fh.seek(5) == 5 and fh.read(5) == data[5:10]
        assert fh.read() == data[10:] + data
    path = tmp_path / "f.z"
    with ours(str(path), "wb") as fh:
        fh.write(b"abc")
    with ours(str(path)) as fh:
        assert fh.read() == b"abc"
    with pytest.raises(ValueError, match="'compresslevel' must be an integer between 1 and 9"):
        ours(str(path), "wb", compresslevel=10)
    with pytest.raises(ValueError, match="Invalid mode"):
        ours(str(path), "ab")
    with pytest.raises(TypeError):
        ours(1)


def test_gzip_file_is_gzip():
    buffer = io.BytesIO()
    with compressor.BinaryGzipFile(buffer, "wb") as fh:
        fh.write(b"payload")
    assert gzip.decompress(buffer.getvalue()) == b"payload"


@pytest.mark.parametrize("name", ["zlib", "gzip", "bz2", "lzma", "xz", "lz4"])
def test_compressor_wrappers_round_trip_and_prefix(name):
    cls = {
        "zlib": compressor.ZlibCompressorWrapper,
        "gzip": compressor.GzipCompressorWrapper,
        "bz2": compressor.BZ2CompressorWrapper,
        "lzma": compressor.LZMACompressorWrapper,
        "xz": compressor.XZCompressorWrapper,
        "lz4": compressor.LZ4CompressorWrapper,
    }[name]
    if name == "lz4":
        pytest.importorskip("lz4")
    wrapper = cls()
    assert isinstance(wrapper, compressor.CompressorWrapper)
    buffer = io.BytesIO()
    with wrapper.compressor_file(buffer, compresslevel=3) as fh:
        fh.write(b"data" * 100)
    assert buffer.getvalue().startswith(wrapper.prefix)
    buffer.seek(0)
    with wrapper.decompressor_file(buffer) as fh:
        assert fh.read() == b"data" * 100
    reference = getattr(j_compressor, cls.__name__)()
    assert (wrapper.prefix, wrapper.extension) == (reference.prefix, reference.extension)


def test_prefix_constants_as_joblib():
    for name in (
        "_ZFILE_PREFIX",
        "_ZLIB_PREFIX",
        "_GZIP_PREFIX",
        "_BZ2_PREFIX",
        "_XZ_PREFIX",
        "_LZMA_PREFIX",
        "_LZ4_PREFIX",
        "LZ4_NOT_INSTALLED_ERROR",
    ):
        assert getattr(compressor, name) == getattr(j_compressor, name), name


def test_numpy_pickle_utils():
    big = np.arange(3, dtype=">f8" if sys.byteorder == "little" else "<f8")
    assert numpy_pickle_utils._is_numpy_array_byte_order_mismatch(big)
    native = numpy_pickle_utils._ensure_native_byte_order(big)
    assert native.dtype.isnative and np.array_equal(native, big)
    assert numpy_pickle_utils._detect_compressor(io.BytesIO(zlib.compress(b"x"))) == "zlib"
    assert numpy_pickle_utils._detect_compressor(io.BytesIO(b"ZF...")) == "compat"
    assert numpy_pickle_utils._detect_compressor(io.BytesIO(b"\x80\x04")) == "not-compressed"
    assert numpy_pickle_utils._read_bytes(io.BytesIO(b"abcdef"), 4) == b"abcd"
    with pytest.raises(ValueError, match="EOF: reading array data, expected 9 bytes got 6"):
        numpy_pickle_utils._read_bytes(io.BytesIO(b"abcdef"), 9, "array data")
    with numpy_pickle_utils._write_fileobject(io.BytesIO(), ("gzip", 3)) as fh:
        fh.write(b"x")


def test_zfile_round_trip_and_old_format(tmp_path):
    data = b"Foo, \n Bar, baz, \n\nfoobar"
    path = tmp_path / "z"
    with open(path, "wb") as fh:
        numpy_pickle_compat.write_zfile(fh, data)
    with open(path, "rb") as fh:
        assert numpy_pickle_compat.read_zfile(fh) == data
    # A joblib < 0.10 compressed dump: a Z-file pickle naming a Z-file of array data.
    array = np.arange(6.0).reshape(2, 3)
    reduced = array.__reduce__()
    init_args, state = reduced[1], reduced[2]
    with open(tmp_path / "old.pkl_01.npy.z", "wb") as fh:
        numpy_pickle_compat.write_zfile(fh, array.tobytes())
    wrapper = numpy_pickle_compat.ZNDArrayWrapper("old.pkl_01.npy.z", init_args, state[:-1])
    # Pickled under the name joblib's files use for the wrapper.
    payload = pickle.dumps({"x": wrapper}, protocol=2).replace(
        b"joblib_rs.numpy_pickle_compat", b"joblib.numpy_pickle"
    )
    with open(tmp_path / "old.pkl", "wb") as fh:
        numpy_pickle_compat.write_zfile(fh, payload)
    loaded = numpy_pickle_compat.load_compatibility(str(tmp_path / "old.pkl"))
    np.testing.assert_array_equal(loaded["x"], array)


def test_missing_names_report_runs():
    script = Path(__file__).parent / "compat" / "missing_names.py"
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=300
    )
    assert "joblib.numpy_pickle: " not in out.stdout or "NumpyPickler" not in out.stdout
    assert "joblib.func_inspect" not in out.stdout


class _CallsGetcwd:
    def __reduce__(self):
        return (os.getcwd, ())


def test_restricting_find_class_also_guards_object_array_streams(tmp_path):
    path = str(tmp_path / "objects.pkl")
    joblib.dump(np.array([_CallsGetcwd()], dtype=object), path)
    rejected = []

    class Restricted(numpy_pickle.NumpyUnpickler):
        def find_class(self, module, name):
            if module.split(".")[0] in ("os", "posix", "nt"):
                rejected.append(module)
                raise pickle.UnpicklingError(f"blocked {module}.{name}")
            return super().find_class(module, name)

    with open(path, "rb") as fh, pytest.raises(pickle.UnpicklingError, match="blocked"):
        Restricted(path, fh, ensure_native_byte_order=True).load()
    assert rejected  # refused inside the nested stream of the object array
    with open(path, "rb") as fh:
        assert numpy_pickle.NumpyUnpickler(path, fh, True).load()[0] == os.getcwd()
