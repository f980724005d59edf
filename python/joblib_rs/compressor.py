"""Compressors known to :func:`joblib_rs.dump` and :func:`joblib_rs.load`.

The built-in codecs (zlib, gzip, bz2, lzma, xz, lz4, zstd) run in the Rust core: a file is
compressed chunk by chunk on all cores without the GIL. :func:`register_compressor` adds a
Python file-object compressor, as in joblib; such a compressor wraps the whole file.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from typing import IO, Any

from joblib_rs import _core

__all__ = ["CompressorWrapper", "register_compressor"]

#: Codec used for ``compress=True`` and ``compress=<int>`` (joblib uses zlib; zstd is several
#: times faster at the same ratio, and files are only read by joblib-rs anyway).
DEFAULT_CODEC = "zstd"


class CompressorWrapper:
    """A compressor usable by :func:`joblib_rs.dump` and :func:`joblib_rs.load`.

    Parameters
    ----------
    obj : callable
        A file-object class (or factory) taking ``(fileobj, mode, compresslevel=...)``, such
        as :class:`gzip.GzipFile`.
    prefix : bytes, optional
        Magic bytes that start a file compressed by this compressor; :func:`load` uses them
        to recognise such files.
    extension : str, optional
        File-name extension that selects this compressor in :func:`dump`.
    """

    def __init__(self, obj: Any, prefix: bytes = b"", extension: str = "") -> None:
        self.fileobj_factory = obj
        self.prefix = prefix
        self.extension = extension

    def compressor_file(self, fileobj: IO[bytes], compresslevel: int | None = None) -> IO[bytes]:
        """Return a writable file object compressing into ``fileobj``."""
        if compresslevel is None:
            return self.fileobj_factory(fileobj, "wb")
        return self.fileobj_factory(fileobj, "wb", compresslevel=compresslevel)

    def decompressor_file(self, fileobj: IO[bytes]) -> IO[bytes]:
        """Return a readable file object decompressing ``fileobj``."""
        return self.fileobj_factory(fileobj, "rb")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(obj={self.fileobj_factory!r}, prefix={self.prefix!r}, "
            f"extension={self.extension!r})"
        )


class NativeCompressorWrapper(CompressorWrapper):
    """A codec implemented in the Rust core (chunked, parallel, without the GIL)."""

    native = True

    def __init__(self, name: str, obj: Any, prefix: bytes, extension: str) -> None:
        super().__init__(obj, prefix=prefix, extension=extension)
        self.name = name

    def compressor_file(self, fileobj: IO[bytes], compresslevel: int | None = None) -> IO[bytes]:
        """Return a writable file object compressing into ``fileobj`` (stdlib codecs only)."""
        if self.fileobj_factory is None:
            raise ValueError(f"{self.name!r} has no Python file-object implementation")
        return super().compressor_file(fileobj, compresslevel)

    def decompressor_file(self, fileobj: IO[bytes]) -> IO[bytes]:
        """Return a readable file object decompressing ``fileobj`` (stdlib codecs only)."""
        if self.fileobj_factory is None:
            raise ValueError(f"{self.name!r} has no Python file-object implementation")
        return super().decompressor_file(fileobj)


def _lzma_alone(fileobj: IO[bytes], mode: str, compresslevel: int | None = None) -> IO[bytes]:
    if "w" in mode:
        return lzma.LZMAFile(fileobj, mode, format=lzma.FORMAT_ALONE, preset=compresslevel)
    return lzma.LZMAFile(fileobj, mode, format=lzma.FORMAT_ALONE)


def _xz(fileobj: IO[bytes], mode: str, compresslevel: int | None = None) -> IO[bytes]:
    if "w" in mode:
        return lzma.LZMAFile(fileobj, mode, format=lzma.FORMAT_XZ, preset=compresslevel)
    return lzma.LZMAFile(fileobj, mode, format=lzma.FORMAT_XZ)


#: Python file objects of the native codecs that the standard library also has (tools that
#: want a file object; joblib-rs itself compresses in the core).
_STDLIB_FILES: dict[str, Any] = {
    "gzip": gzip.GzipFile,
    "bz2": bz2.BZ2File,
    "lzma": _lzma_alone,
    "xz": _xz,
}

#: Every compressor by name: the core's codecs first (their magic bytes and extensions are
#: defined once, in Rust: ``joblib_core::codec``), then those added by
#: :func:`register_compressor`.
_COMPRESSORS: dict[str, CompressorWrapper] = {
    name: NativeCompressorWrapper(
        name, _STDLIB_FILES.get(name), _core.CODEC_MAGIC[name], _core.CODEC_EXTENSIONS[name]
    )
    for name in _core.CODECS
}


def register_compressor(
    compressor_name: str, compressor: CompressorWrapper, force: bool = False
) -> None:
    """Register a new compressor.

    Parameters
    ----------
    compressor_name : str
        The name of the compressor, used as ``dump(..., compress=compressor_name)``.
    compressor : CompressorWrapper
        An instance of :class:`CompressorWrapper` (or any object with ``compressor_file``,
        ``decompressor_file``, ``prefix`` and ``extension``).
    force : bool, default=False
        Replace an already registered compressor of the same name.
    """
    if not isinstance(compressor_name, str):
        raise ValueError(f"Compressor name should be a string, '{compressor_name}' given.")
    if not isinstance(compressor, CompressorWrapper) and not all(
        hasattr(compressor, a)
        for a in ("compressor_file", "decompressor_file", "prefix", "extension")
    ):
        raise ValueError(
            f"Compressor should implement the CompressorWrapper interface, '{compressor}' given."
        )
    if compressor.fileobj_factory is not None and (
        not hasattr(compressor.fileobj_factory, "read")
        or not hasattr(compressor.fileobj_factory, "write")
        or not hasattr(compressor.fileobj_factory, "seek")
        or not hasattr(compressor.fileobj_factory, "tell")
    ):
        raise ValueError(
            "Compressor 'fileobj_factory' attribute should implement the file object "
            f"interface, '{compressor.fileobj_factory}' given."
        )
    if compressor_name in _COMPRESSORS and not force:
        raise ValueError(f"Compressor '{compressor_name}' already registered.")
    _COMPRESSORS[compressor_name] = compressor


# joblib's Python compressor classes and prefixes (importpaths: _joblib_compressors.py).
from joblib_rs._joblib_compressors import *  # noqa: E402, F403
from joblib_rs._joblib_compressors import (  # noqa: E402, F401
    _BZ2_PREFIX,
    _GZIP_PREFIX,
    _LZ4_PREFIX,
    _LZMA_PREFIX,
    _XZ_PREFIX,
    _ZFILE_PREFIX,
    _ZLIB_PREFIX,
    LooseVersion,
)
