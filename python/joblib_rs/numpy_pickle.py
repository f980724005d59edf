"""Persistence: :func:`dump` and :func:`load`, joblib's API over a checksummed container.

A file written by :func:`dump` holds a pickle (protocol 5) whose numpy buffers travel out of
band, each in its own frame, 64-byte aligned when uncompressed so that ``mmap_mode`` maps them
in place. The byte layout is specified in ``docs/format.md``; the Rust core reads, writes,
compresses and checks it without the GIL. :func:`load` also reads files written by joblib
(>= 0.10, plain or whole-file compressed).
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import warnings
from collections.abc import Iterable
from typing import IO, Any, Protocol

from joblib_rs import _core, _loading, _restricted
from joblib_rs.compressor import (
    _COMPRESSORS,
    DEFAULT_CODEC,
    CompressorWrapper,
    NativeCompressorWrapper,
    register_compressor,
)

__all__ = ["CorruptFileError", "dump", "load", "register_compressor"]

#: Raised when a file is damaged, truncated or not a joblib/joblib-rs file. Subclasses both
#: :class:`pickle.UnpicklingError` and :class:`ValueError`.
CorruptFileError: type[Exception] = _core.CorruptFileError

# The reading path lives in joblib_rs._loading; its helpers keep their old names here
# (private, but other modules and tools import them from numpy_pickle).
_BUFFER_FRAME = _loading.BUFFER_FRAME
_CONTAINER_MAGIC = _loading.CONTAINER_MAGIC
_ENSURE_NATIVE = _loading.ENSURE_NATIVE
_GC_PAUSE_MIN = _loading.GC_PAUSE_MIN
_MAX_STREAM_RATIO = _loading.MAX_STREAM_RATIO
_PICKLE_FRAME = _loading.PICKLE_FRAME
_PICKLE_STARTS = _loading.PICKLE_STARTS
_alloc = _loading.alloc
_decompress_whole = _loading.decompress_whole
_detect = _loading.detect_format
_load_bytes = _loading.load_bytes
_load_fileobj = _loading.load_fileobj
_load_container_frames = _loading.load_frames
_load_mapped_verified = _loading.load_mapped_verified
_load_path = _loading.load_path
_seekable = _loading.seekable
_size_from = _loading.size_from
_unpickle = _loading.unpickle
_warn_compressed_mmap = _loading.warn_compressed_mmap

_MMAP_MODES = (None, "r+", "r", "w+", "c")
#: Arrays smaller than this stay inside a compressed pickle (per-frame overhead would
#: dominate); uncompressed files send every non-empty array out of band so all of them can be
#: memory-mapped, as joblib does.
_OOB_MIN_COMPRESSED = 4096


# ---------------------------------------------------------------------------------------------
# Arrays


def _rebuild_array(buf: Any, dtype: Any, shape: tuple[int, ...], order: str) -> Any:
    """Rebuild an array from its out-of-band (or in-band) buffer, without copying."""
    import numpy as np

    if isinstance(buf, memoryview) and isinstance(buf.obj, np.ndarray):
        # READONLY_BUFFER wrapped our buffer in a read-only view: use the array behind it.
        base = buf.obj
    elif isinstance(buf, np.ndarray):
        base = buf
    else:
        base = np.frombuffer(buf, dtype=np.uint8)
    if dtype.itemsize == 0:
        arr = np.empty(shape, dtype=dtype, order=order)
    else:
        arr = base.view(dtype).reshape(shape, order=order)
    if not isinstance(arr, np.memmap) and not arr.flags.writeable:
        arr = arr.copy(order="K")
    if _ENSURE_NATIVE.get() and not arr.dtype.isnative and arr.dtype.byteorder != "|":
        arr = arr.byteswap().view(arr.dtype.newbyteorder("="))
    return arr


class _Pickler(pickle.Pickler):
    """C pickler sending numpy array data out of band through ``buffer_callback``."""

    def __init__(self, file: IO[bytes], protocol: int, oob_min: int) -> None:
        self.buffers: list[memoryview] = []
        self._oob_min = oob_min
        super().__init__(file, protocol=protocol, buffer_callback=self._take)
        np = sys.modules.get("numpy")
        self._array_types = (np.ndarray, np.memmap) if np is not None else ()
        self._np = np

    def _take(self, pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        if raw.nbytes < self._oob_min:
            return True  # small: serialised in band
        self.buffers.append(raw)
        return False

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t not in self._array_types:
            return NotImplemented
        dtype = obj.dtype
        if dtype.hasobject or dtype.itemsize == 0:
            return NotImplemented
        if obj.flags.c_contiguous:
            order, arr = "C", obj
        elif obj.flags.f_contiguous:
            order, arr = "F", obj
        else:
            order, arr = "C", self._np.ascontiguousarray(obj)
        flat = arr.ravel(order="K").view(self._np.uint8)
        return _rebuild_array, (pickle.PickleBuffer(flat), dtype, arr.shape, order)


# ---------------------------------------------------------------------------------------------
# Restricted loading: the Rust unpickler under the policy of joblib_rs._restricted


def _policy(allowed: Any) -> _restricted.Rules | None:
    return _restricted.rules_for(allowed)


# ---------------------------------------------------------------------------------------------
# dump


def _resolve_compress(compress: Any, filename: Any) -> tuple[str, int | None]:
    """Return (method, level) following joblib's rules; level 0 means no compression."""
    method: str | None = None
    explicit = False
    if compress is True:
        level: Any = None
    elif compress is False:
        level = 0
    elif isinstance(compress, tuple):
        if len(compress) != 2:
            raise ValueError(
                "Compress argument tuple should contain exactly 2 elements: "
                f"(compress method, compress level), you passed {compress}"
            )
        method, level = compress
        explicit = True
    elif isinstance(compress, str):
        method, level = compress, None
        explicit = True
    else:
        level = compress

    if level is not None and level is not False:
        max_level = _core.CODEC_LEVELS[method][1][1] if method in _core.CODEC_LEVELS else 9
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= max_level:
            raise ValueError(
                f'Non valid compress level given: "{level}". Possible values are '
                f"{list(range(max_level + 1))}."
            )
    if level is False:
        level = 0
    if method is not None and method not in _COMPRESSORS:
        raise ValueError(
            f'Non valid compression method given: "{method}". Possible values are '
            f"{sorted(_COMPRESSORS)}."
        )
    if isinstance(filename, str) and not explicit:
        for name, comp in _COMPRESSORS.items():
            if comp.extension and filename.endswith(comp.extension):
                method = name
        if method is not None and level == 0:
            level = None
    return method or DEFAULT_CODEC, level


class WritableFile(Protocol):
    """What :func:`dump` needs of a file object: ``write`` (no ``seek``, no ``tell``)."""

    def write(self, data: bytes, /) -> Any: ...


class ReadableFile(Protocol):
    """What :func:`load` needs of a file object: ``read``."""

    def read(self, size: int = -1, /) -> bytes: ...


def dump(
    value: Any,
    filename: str | os.PathLike[str] | WritableFile,
    compress: bool | int | str | tuple[str, int] = 0,
    protocol: int | None = None,
    *,
    fsync: bool = False,
    format: str = "jrs",
) -> list[str] | None:
    """Persist an arbitrary Python object into one file.

    Parameters
    ----------
    value : any Python object
        The object to store to disk.
    filename : str, os.PathLike, or file object
        The path of the file, or a file object open for writing in binary mode (it need not
        be seekable; ``gzip.GzipFile`` and friends work). The extensions ``.z``, ``.gz``,
        ``.bz2``, ``.lzma``, ``.xz``, ``.lz4`` and ``.zst`` select their codec.
    compress : int from 0 to 9, bool, str or 2-tuple, default=0
        0 or False: no compression. True or an int level 1-9: the default codec,
        ``'zstd'`` (True means level 3). joblib's 1-9 scale maps onto zstd levels: 1-3 → 1-3,
        4 → 5, 5 → 7, 6 → 9, 7 → 12, 8 → 15, 9 → 19. A codec name (``'zlib'``, ``'gzip'``,
        ``'bz2'``, ``'lzma'``, ``'xz'``, ``'lz4'``, ``'zstd'`` or a registered name) uses its
        default level (zlib/gzip 3, bz2 9, lzma/xz 6, zstd 3); a ``(name, level)`` tuple sets
        both (zstd accepts its own levels 1-22 there).
    protocol : int, optional
        Pickle protocol; default (and anything >= 5) is 5, which sends numpy buffers out of
        band. Lower protocols store arrays inside the pickle.
    fsync : bool, default=False
        (joblib-rs addition.) ``True`` flushes the file to the disk before giving it its
        name (and the folder after), so it survives a power loss; the write then waits for
        the disk. By default, as joblib, numpy and the other array writers, the file is left
        to the page cache: the write is still atomic (a crash of the process never leaves a
        partial file under ``filename``), and after a power loss a joblib-rs file that did
        not reach the disk fails its checksums instead of loading wrong data.
    format : {'jrs', 'joblib'}, default='jrs'
        (joblib-rs addition.) ``'jrs'``: joblib-rs's checksummed container, read by
        :func:`load`. ``'joblib'``: joblib's own format, which ``joblib.load`` (joblib >= 1.0)
        reads where joblib-rs is not installed (also :func:`load`). With ``'joblib'``,
        ``compress`` means what it means to joblib: True and 1-9 are zlib levels, and the
        codecs are those joblib reads (no zstd; lz4 needs the ``lz4`` package to be read).

    Returns
    -------
    filenames : list of str or None
        ``[filename]`` when ``filename`` is a path; None for a file object, as joblib.

    Notes
    -----
    Writing to a path is atomic: the data goes to a temporary file in the same folder,
    which is renamed (after an fsync with ``fsync=True``), so ``filename`` never holds a
    partial file. Compression runs on all cores in 4 MiB chunks, without the GIL.
    """
    if not isinstance(fsync, bool):
        raise TypeError(f"fsync must be True or False, got {fsync!r}")
    if format == "joblib":
        from joblib_rs._joblib_format import dump_joblib

        if isinstance(filename, os.PathLike):
            filename = os.fspath(filename)
        if not isinstance(filename, str) and not hasattr(filename, "write"):
            raise ValueError(
                "Second argument should be a filename or a file-like object, "
                f"{filename!r} (type {type(filename)}) was given."
            )
        return dump_joblib(value, filename, compress, protocol, durable=fsync)
    if format != "jrs":
        raise ValueError(f"format must be 'jrs' or 'joblib', got {format!r}")
    return _dump(value, filename, compress, protocol, durable=fsync)


def _dump(
    value: Any, filename: Any, compress: Any, protocol: int | None, *, durable: bool
) -> list[str] | None:
    """:func:`dump`; ``durable=False`` skips the fsyncs (the write stays atomic for readers
    and against a crash of this process, not against a power loss). For caches whose entries
    can be recomputed: an fsync costs milliseconds per file."""
    if isinstance(filename, os.PathLike):
        filename = os.fspath(filename)
    is_filename = isinstance(filename, str)
    is_fileobj = hasattr(filename, "write")
    if not is_filename and not is_fileobj:
        raise ValueError(
            "Second argument should be a filename or a file-like object, "
            f"{filename!r} (type {type(filename)}) was given."
        )
    method, level = _resolve_compress(compress, filename)
    # ("zstd", n) and compress="zstd" speak zstd's own levels; True and 1-9 speak joblib's.
    explicit_zstd = isinstance(compress, tuple)
    compressor = _COMPRESSORS[method]
    native = isinstance(compressor, NativeCompressorWrapper)
    if level == 0:
        codec, codec_level = "none", 0
    elif native:
        codec = method
        if level is None and compress is True and method == "zstd":
            codec_level = _ZSTD_FROM_JOBLIB_LEVEL[3]
        elif level is None:
            codec_level = _default_level(method)
        elif method == "zstd" and not explicit_zstd:
            codec_level = _ZSTD_FROM_JOBLIB_LEVEL[level]
        else:
            codec_level = level
    else:
        codec, codec_level = "none", 0

    if protocol is None or protocol < 0:
        protocol = pickle.HIGHEST_PROTOCOL
    out = io.BytesIO()
    oob_min = 1 if codec == "none" else _OOB_MIN_COMPRESSED
    if protocol >= 5:
        pickler = _Pickler(out, protocol, oob_min)
        pickler.dump(value)
        buffers = pickler.buffers
    else:
        pickle.Pickler(out, protocol=protocol).dump(value)
        buffers = []
    data = out.getbuffer()
    try:
        if native or level == 0:
            if is_filename:
                _core.write_path(filename, buffers, data, codec, codec_level, durable)
            else:
                _core.write_fileobj(filename, buffers, data, codec, codec_level)
        else:
            _dump_through(compressor, level, filename, buffers, data, durable)
    finally:
        data.release()
        buffers.clear()
    return [filename] if is_filename else None


#: joblib's 1-9 scale ("3 is a good compromise") mapped onto zstd's 1-19: the low levels
#: are equal, higher ones spread over zstd's range. (Incompressible chunks are compressed at
#: zstd level 1 whatever the level: see codec/mod.rs.) The codec table lives in Rust.
_ZSTD_FROM_JOBLIB_LEVEL = dict(enumerate(_core.CODEC_LEVELS["zstd"][2]))


def _default_level(method: str) -> int:
    """The level of a codec named without one (``KeyError`` for a non-native codec)."""
    level: int = _core.CODEC_LEVELS[method][0]
    return level


def _dump_through(
    compressor: CompressorWrapper,
    level: int | None,
    filename: Any,
    buffers: list[memoryview],
    data: memoryview,
    durable: bool,
) -> None:
    """Write an uncompressed container through a registered (Python) compressor."""
    if not isinstance(filename, str):
        with compressor.compressor_file(filename, compresslevel=level) as f:
            _core.write_fileobj(f, buffers, data, "none", 0)
        return
    folder = os.path.dirname(os.path.abspath(filename))
    tmp = os.path.join(folder, f".{os.path.basename(filename)}.{os.getpid()}.{id(data)}.tmp")
    try:
        with open(tmp, "xb") as raw:
            with compressor.compressor_file(raw, compresslevel=level) as f:
                _core.write_fileobj(f, buffers, data, "none", 0)
            raw.flush()
            if durable:
                os.fsync(raw.fileno())
        os.replace(tmp, filename)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------------------
# load


def load(
    filename: str | os.PathLike[str] | ReadableFile,
    mmap_mode: str | None = None,
    ensure_native_byte_order: bool | str = "auto",
    *,
    allowed: str | Iterable[str] | None = None,
) -> Any:
    """Reconstruct a Python object from a file persisted with :func:`dump` (or joblib's).

    Parameters
    ----------
    filename : str, os.PathLike, or file object
        The path of the file, or a file object open for reading in binary mode.
    mmap_mode : {None, 'r+', 'r', 'w+', 'c'}, optional
        If not None, arrays of an uncompressed file are returned as :class:`numpy.memmap`
        mapped in place on the file (no copy; ``'w+'`` acts as ``'r+'``). For compressed
        files and file objects it is ignored with a warning, as in joblib.
    ensure_native_byte_order : bool or 'auto', default='auto'
        If True, arrays written on a machine of the other endianness come back in native
        byte order. Cannot be combined with ``mmap_mode``. 'auto' means True when
        ``mmap_mode`` is None.
    allowed : None, 'safe' or iterable of str, keyword-only
        None (default) loads anything, like :mod:`pickle` and joblib: never load untrusted
        files that way. ``'safe'`` is data only: containers, numbers, strings, numpy arrays
        (not object arrays) and dtypes, dates, decimals, fractions and collections, each
        built by a constructor that checks its arguments. A list may add exact globals
        (``'module.Name'``) and packages (``'pkg.*'``: the classes defined under ``pkg``).
        Anything else raises :class:`pickle.UnpicklingError` naming the global, before any
        of its code runs. See ``docs/security.md``.

    Returns
    -------
    result : any Python object
        The object stored in the file.

    Raises
    ------
    CorruptFileError
        The file is damaged (checksum mismatch, truncated, bad lengths) or is not a joblib-rs
        or joblib file. Subclass of both :class:`pickle.UnpicklingError` and
        :class:`ValueError`.

    Notes
    -----
    Payload checksums are verified for everything read into memory. Under ``mmap_mode`` the
    mapped array data is not read at load time, so only the headers and the pickle are
    verified.
    """
    if mmap_mode not in _MMAP_MODES:
        raise ValueError(f"mmap_mode should be one of {_MMAP_MODES}, got mmap_mode={mmap_mode!r}")
    if ensure_native_byte_order == "auto":
        ensure_native = mmap_mode is None
    elif isinstance(ensure_native_byte_order, bool):
        ensure_native = ensure_native_byte_order
    else:
        raise ValueError(
            "ensure_native_byte_order should be True, False or 'auto', got "
            f"{ensure_native_byte_order!r}"
        )
    if ensure_native and mmap_mode is not None:
        raise ValueError(
            "Native byte ordering can only be enforced if 'mmap_mode' parameter is set to "
            f"None, but got 'mmap_mode={mmap_mode}' instead."
        )
    policy = _policy(allowed)
    token = _ENSURE_NATIVE.set(ensure_native)
    try:
        if isinstance(filename, os.PathLike):
            filename = os.fspath(filename)
        if hasattr(filename, "read"):
            fobj = filename
            name = getattr(fobj, "name", "")
            if mmap_mode is not None:
                # As joblib: arrays of file objects are never mapped; it says so unless the
                # object is a plain file opened with open().
                if isinstance(fobj, io.BytesIO):
                    warnings.warn(
                        "In memory persistence is not compatible with "
                        f'mmap_mode "{mmap_mode}" flag passed. mmap_mode option will be ignored.',
                        stacklevel=2,
                    )
                elif not isinstance(getattr(fobj, "raw", fobj), io.FileIO):
                    warnings.warn(
                        f'"{fobj!r}" is not a raw file, mmap_mode "{mmap_mode}" flag will be '
                        "ignored.",
                        stacklevel=2,
                    )
            prefix = fobj.read(len(_CONTAINER_MAGIC))
            if not prefix and not hasattr(fobj, "peek") and _seekable(fobj):
                # As joblib, which rewinds such objects: dump to a BytesIO, then load it.
                fobj.seek(0)
                prefix = fobj.read(len(_CONTAINER_MAGIC))
            if prefix == _CONTAINER_MAGIC:
                # Streamed into the final buffers; the object is left just after the file.
                return _load_fileobj(fobj, prefix, policy)
            data = prefix + fobj.read()
            return _load_bytes(data, str(name), policy, ensure_native)
        if not isinstance(filename, str):
            raise ValueError(
                "filename should be a str, os.PathLike or file object, "
                f"{filename!r} (type {type(filename)}) was given."
            )
        return _load_path(filename, mmap_mode, policy, ensure_native)
    finally:
        _ENSURE_NATIVE.reset(token)


# joblib's pickler classes and format helpers (importpaths: _joblib_pickle.py and friends).
from joblib_rs._joblib_compressors import *  # noqa: E402, F403
from joblib_rs._joblib_pickle import *  # noqa: E402, F403
from joblib_rs.backports import make_memmap  # noqa: E402, F401
from joblib_rs.numpy_pickle_compat import (  # noqa: E402, F401
    NDArrayWrapper,
    ZNDArrayWrapper,
    load_compatibility,
)
from joblib_rs.numpy_pickle_utils import BUFFER_SIZE, _read_bytes  # noqa: E402, F401


def load_temporary_memmap(filename: str, mmap_mode: str, unlink_on_gc_collect: bool) -> Any:
    """See :func:`joblib_rs._memmapping_reducer.load_temporary_memmap`."""
    from joblib_rs._memmapping_reducer import load_temporary_memmap as load_memmap

    return load_memmap(filename, mmap_mode, unlink_on_gc_collect)
