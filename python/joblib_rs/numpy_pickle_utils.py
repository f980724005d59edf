"""Helpers of joblib's ``joblib.numpy_pickle_utils``: compressor detection, byte order, I/O.

These are the building blocks of joblib's own file format (``joblib.numpy_pickle``), kept for
code written against joblib's module layout. ``joblib_rs.dump``/``load`` do not go through
them: the Rust core reads and writes files.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import sys
from collections.abc import Iterator
from typing import IO, Any

from joblib_rs._joblib_compressors import (
    _ZFILE_PREFIX,
    GzipCompressorWrapper,
    LZ4CompressorWrapper,
    ZlibCompressorWrapper,
)
from joblib_rs.compressor import _COMPRESSORS

__all__ = ["BUFFER_SIZE", "Pickler", "Unpickler"]

#: The pure-Python pickle classes joblib's format builds on (their ``save``/``load_build``
#: can be overridden).
Unpickler = pickle._Unpickler  # type: ignore[attr-defined]
Pickler = pickle._Pickler  # type: ignore[attr-defined]

#: Buffer of the buffered file objects wrapped around compressor files.
_IO_BUFFER_SIZE = 1024**2
#: Bytes read at a time by array readers.
BUFFER_SIZE = 2**18


def _is_raw_file(fileobj: Any) -> bool:
    """True for a plain (not compressing) file object."""
    fileobj = getattr(fileobj, "raw", fileobj)
    return isinstance(fileobj, io.FileIO)


def _get_prefixes_max_len() -> int:
    """Length of the longest magic prefix of the registered compressors."""
    return max([len(c.prefix) for c in _COMPRESSORS.values()] + [len(_ZFILE_PREFIX)])


def _is_numpy_array_byte_order_mismatch(array: Any) -> bool:
    """True when ``array``'s data (or, for a structured dtype, every field) is stored in the
    byte order opposite to this machine's."""
    foreign = ">" if sys.byteorder == "little" else "<"
    dtype = array.dtype
    if dtype.byteorder == foreign:
        return True
    if dtype.byteorder == "|" and dtype.fields:
        return all(field[0].byteorder == foreign for field in dtype.fields.values())
    return False


def _ensure_native_byte_order(array: Any) -> Any:
    """``array`` with its data in this machine's byte order (same values); unchanged when it
    already is."""
    if _is_numpy_array_byte_order_mismatch(array):
        return array.byteswap().view(array.dtype.newbyteorder("="))
    return array


def _detect_compressor(fileobj: Any) -> str:
    """Name of the registered compressor whose prefix starts ``fileobj``; ``'compat'`` for a
    Z-file of joblib < 0.9.3, ``'not-compressed'`` otherwise. The position is kept."""
    size = _get_prefixes_max_len()
    if hasattr(fileobj, "peek"):
        head = fileobj.peek(size)
    else:
        head = fileobj.read(size)
        fileobj.seek(0)
    if head.startswith(_ZFILE_PREFIX):
        return "compat"
    for name, compressor in _COMPRESSORS.items():
        if compressor.prefix and head.startswith(compressor.prefix):
            return name
    return "not-compressed"


def _buffered_read_file(fobj: Any) -> io.BufferedReader:
    """``fobj`` behind a read buffer of :data:`_IO_BUFFER_SIZE` bytes."""
    return io.BufferedReader(fobj, buffer_size=_IO_BUFFER_SIZE)


def _buffered_write_file(fobj: Any) -> io.BufferedWriter:
    """``fobj`` behind a write buffer of :data:`_IO_BUFFER_SIZE` bytes."""
    return io.BufferedWriter(fobj, buffer_size=_IO_BUFFER_SIZE)


def _validate_fileobject_and_memmap(
    fileobj: Any, filename: str, mmap_mode: str | None = None
) -> tuple[Any, str | None]:
    """``(fileobj, mmap_mode)``, with ``mmap_mode`` dropped (and a warning) when the file is
    compressed or is not a plain file, since such data cannot be memory-mapped."""
    import warnings

    if mmap_mode is None:
        return fileobj, None
    if _detect_compressor(fileobj) != "not-compressed":
        warnings.warn(
            f'mmap_mode "{mmap_mode}" is not compatible with compressed file {filename}. '
            f'"{mmap_mode}" flag will be ignored.',
            stacklevel=3,
        )
        return fileobj, None
    if not _is_raw_file(fileobj):
        warnings.warn(
            f'"{mmap_mode}" mode is not compatible with file object {fileobj!r}. '
            f'"{mmap_mode}" flag will be ignored.',
            stacklevel=3,
        )
        return fileobj, None
    return fileobj, mmap_mode


@contextlib.contextmanager
def _read_fileobject(fileobj: Any, filename: str, mmap_mode: str | None = None) -> Iterator[Any]:
    """Context manager giving a readable, decompressing file object over ``fileobj``.

    Yields ``filename`` itself for a Z-file of joblib < 0.9.3 (read by
    :func:`joblib_rs.numpy_pickle_compat.load_compatibility`).
    """
    compressor = _detect_compressor(fileobj)
    if compressor == "compat":
        import warnings

        warnings.warn(
            f"The file '{filename}' has been generated with a joblib version less than "
            "0.10. Please regenerate this pickle file.",
            DeprecationWarning,
            stacklevel=3,
        )
        yield filename
        return
    if compressor in _COMPRESSORS and compressor != "not-compressed":
        inner = _COMPRESSORS[compressor].decompressor_file(fileobj)
        fileobj = _buffered_read_file(inner)
    fileobj, _ = _validate_fileobject_and_memmap(fileobj, filename, mmap_mode)
    yield fileobj


def _write_fileobject(filename: Any, compress: tuple[str, int] = ("zlib", 3)) -> Any:
    """A buffered file object compressing into ``filename`` with ``compress = (name, level)``
    (zlib when the name is not registered)."""
    method, level = compress
    joblib_classes = {
        "zlib": ZlibCompressorWrapper,
        "gzip": GzipCompressorWrapper,
        "lz4": LZ4CompressorWrapper,
    }
    if method in joblib_classes:
        compressor: Any = joblib_classes[method]()
    else:
        compressor = _COMPRESSORS.get(method)
        if compressor is None or getattr(compressor, "fileobj_factory", None) is None:
            compressor = ZlibCompressorWrapper()
    return _buffered_write_file(compressor.compressor_file(filename, compresslevel=level))


def _read_bytes(fp: IO[bytes], size: int, error_template: str = "ran out of data") -> bytes:
    """Exactly ``size`` bytes from ``fp`` (reading as many times as needed).

    Raises
    ------
    ValueError
        If the file ends first.
    """
    parts = []
    got = 0
    while got < size:
        try:
            chunk = fp.read(size - got)
        except io.BlockingIOError:
            continue
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    data = b"".join(parts)
    if len(data) != size:
        raise ValueError(f"EOF: reading {error_template}, expected {size} bytes got {len(data)}")
    return data


def _reconstruct(*args: Any, **kwargs: Any) -> Any:
    """numpy's ``_reconstruct`` (an empty array of a given subclass), whatever numpy's major
    version."""
    try:
        from numpy._core.multiarray import _reconstruct as reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct as reconstruct
    return reconstruct(*args, **kwargs)
