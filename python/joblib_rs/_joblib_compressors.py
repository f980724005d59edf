"""joblib's Python compressor classes, re-exported by ``joblib_rs.compressor``.

joblib-rs compresses and decompresses its own files in the Rust core; these classes are the
file objects and :class:`~joblib_rs.compressor.CompressorWrapper` subclasses of joblib's
``joblib.compressor`` module, for code that builds on them (custom codecs, tools reading or
writing joblib's compressed pickles): :class:`BinaryZlibFile`, :class:`BinaryGzipFile` and a
wrapper per codec, plus the magic prefixes joblib recognises files by.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import zlib
from typing import IO, Any

from joblib_rs.backports import LooseVersion
from joblib_rs.compressor import CompressorWrapper

__all__ = [
    "LZ4_NOT_INSTALLED_ERROR",
    "BZ2CompressorWrapper",
    "BinaryGzipFile",
    "BinaryZlibFile",
    "GzipCompressorWrapper",
    "LZ4CompressorWrapper",
    "LZMACompressorWrapper",
    "XZCompressorWrapper",
    "ZlibCompressorWrapper",
]

#: Message of the error raised when lz4 is asked for without the ``lz4`` package.
LZ4_NOT_INSTALLED_ERROR = (
    "LZ4 is not installed. Install it with pip: https://python-lz4.readthedocs.io/"
)

# Magic bytes joblib recognises its compressed files by.
_ZFILE_PREFIX = b"ZF"  # joblib < 0.9.3 ("Z-files", see numpy_pickle_compat)
_ZLIB_PREFIX = b"\x78"
_GZIP_PREFIX = b"\x1f\x8b"
_BZ2_PREFIX = b"BZ"
_XZ_PREFIX = b"\xfd\x37\x7a\x58\x5a"
_LZMA_PREFIX = b"\x5d\x00"
_LZ4_PREFIX = b"\x04\x22\x4d\x18"


#: Compressed bytes read from the underlying file at a time.
_READ_CHUNK = 64 * 1024


class BinaryZlibFile(io.BufferedIOBase):
    """A binary file object that zlib-compresses what is written and decompresses what is read.

    Parameters
    ----------
    filename : str or file object
        Path of the file to open, or an open binary file object to wrap (left open by
        :meth:`close`).
    mode : {'rb', 'wb'}, default='rb'
        Read (decompress) or write (compress).
    compresslevel : int, default=3
        Compression level, 1 (fastest) to 9 (smallest), used when writing.

    Notes
    -----
    Reading accepts several compressed streams one after the other, and seeking (emulated:
    a backward seek decompresses again from the start). Writing is sequential.
    """

    #: ``wbits`` of the zlib (de)compressor: a zlib header and checksum.
    wbits = zlib.MAX_WBITS

    def __init__(self, filename: Any, mode: str = "rb", compresslevel: int = 3) -> None:
        self._fp: Any = None
        self._closefp = False
        self.compresslevel = compresslevel
        if not isinstance(compresslevel, int) or not 1 <= compresslevel <= 9:
            raise ValueError(
                "'compresslevel' must be an integer between 1 and 9. "
                f"You provided 'compresslevel={compresslevel}'"
            )
        if mode not in ("rb", "wb"):
            raise ValueError(f"Invalid mode: {mode!r}")
        if isinstance(filename, str | bytes | os.PathLike):
            self._fp = open(filename, mode)  # closed by close()
            self._closefp = True
        elif hasattr(filename, "read") or hasattr(filename, "write"):
            self._fp = filename
        else:
            raise TypeError("filename must be a str or bytes object, or a file")
        self._mode = mode
        self._pos = 0  # uncompressed position
        if mode == "rb":
            self._start = self._fp.tell() if _seekable(self._fp) else None
            self._restart()
        else:
            self._compressor: Any = zlib.compressobj(
                compresslevel, zlib.DEFLATED, self.wbits, zlib.DEF_MEM_LEVEL, 0
            )

    # -- reading --------------------------------------------------------------------------
    def _restart(self) -> None:
        self._decompressor = zlib.decompressobj(self.wbits)
        self._pending = bytearray()  # decompressed, not yet returned
        self._pos = 0

    def _decompress_more(self) -> bool:
        """Append more decompressed bytes to ``_pending``; False at the end of the data."""
        while True:
            d = self._decompressor
            if d.eof:
                rest = d.unused_data or self._fp.read(_READ_CHUNK)
                if not rest:
                    return False
                # Another stream follows the one just finished.
                self._decompressor = zlib.decompressobj(self.wbits)
                out = self._decompressor.decompress(rest, _READ_CHUNK)
            elif d.unconsumed_tail:
                out = d.decompress(d.unconsumed_tail, _READ_CHUNK)
            else:
                raw = self._fp.read(_READ_CHUNK)
                if not raw:
                    raise EOFError(
                        "Compressed file ended before the end-of-stream marker was reached"
                    )
                out = d.decompress(raw, _READ_CHUNK)
            if out:
                self._pending += out
                return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` decompressed bytes (all that is left by default)."""
        self._check_can_read()
        if size is None or size < 0:
            while self._decompress_more():
                pass
            size = len(self._pending)
        else:
            while len(self._pending) < size and self._decompress_more():
                pass
        data = bytes(self._pending[:size])
        del self._pending[:size]
        self._pos += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        """Up to ``size`` decompressed bytes, decompressing at most once more."""
        self._check_can_read()
        if not self._pending:
            self._decompress_more()
        return self.read(len(self._pending) if size < 0 else min(size, len(self._pending)))

    def readinto(self, b: Any) -> int:
        """Decompress into the writable buffer ``b``; the number of bytes read."""
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def peek(self, size: int = -1) -> bytes:
        """Decompressed bytes ahead, without moving the position."""
        self._check_can_read()
        if not self._pending:
            self._decompress_more()
        return bytes(self._pending)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to an uncompressed position (reading only; emulated by decompressing)."""
        self._check_can_seek()
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            self.read()
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise ValueError(f"Invalid value for whence: {whence}")
        if offset < self._pos:
            self._fp.seek(self._start)
            self._restart()
        while self._pos < offset and self.read(min(offset - self._pos, 1 << 20)):
            pass
        return self._pos

    # -- writing --------------------------------------------------------------------------
    def write(self, data: Any) -> int:
        """Compress and write ``data``; the number of uncompressed bytes."""
        self._check_can_write()
        view = memoryview(data).cast("B")
        self._fp.write(self._compressor.compress(view))
        self._pos += view.nbytes
        return view.nbytes

    # -- both -----------------------------------------------------------------------------
    def close(self) -> None:
        """Flush what is left to compress and close; closing twice is fine."""
        if self._fp is None:
            return
        try:
            if self._mode == "wb":
                self._fp.write(self._compressor.flush())
                self._compressor = None
        finally:
            try:
                if self._closefp:
                    self._fp.close()
            finally:
                self._fp = None
                self._closefp = False
                self._pending = bytearray()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._fp is None

    def fileno(self) -> int:
        """File descriptor of the underlying file."""
        self._check_not_closed()
        return int(self._fp.fileno())

    def seekable(self) -> bool:
        """Seeking is possible when reading from a seekable file."""
        return self.readable() and self._start is not None

    def readable(self) -> bool:
        """True in mode ``'rb'``."""
        self._check_not_closed()
        return self._mode == "rb"

    def writable(self) -> bool:
        """True in mode ``'wb'``."""
        self._check_not_closed()
        return self._mode == "wb"

    def tell(self) -> int:
        """The current uncompressed position."""
        self._check_not_closed()
        return self._pos

    def _check_not_closed(self) -> None:
        if self.closed:
            fname = getattr(self._fp, "name", None)
            raise ValueError(f"I/O operation on closed file {fname or ''}".rstrip())

    def _check_can_read(self) -> None:
        if not self.readable():
            raise io.UnsupportedOperation("File not open for reading")

    def _check_can_write(self) -> None:
        if not self.writable():
            raise io.UnsupportedOperation("File not open for writing")

    def _check_can_seek(self) -> None:
        if not self.readable():
            raise io.UnsupportedOperation("Seeking is only supported on files open for reading")
        if not self.seekable():
            raise io.UnsupportedOperation("The underlying file object does not support seeking")


def _seekable(fp: Any) -> bool:
    try:
        return bool(fp.seekable())
    except (AttributeError, ValueError):
        return False


class BinaryGzipFile(BinaryZlibFile):
    """:class:`BinaryZlibFile` writing and reading the gzip format (header and CRC)."""

    wbits = 31


class ZlibCompressorWrapper(CompressorWrapper):
    """joblib's zlib compressor: :class:`BinaryZlibFile`, extension ``.z``."""

    def __init__(self) -> None:
        super().__init__(BinaryZlibFile, prefix=_ZLIB_PREFIX, extension=".z")


class GzipCompressorWrapper(CompressorWrapper):
    """joblib's gzip compressor: :class:`BinaryGzipFile`, extension ``.gz``."""

    def __init__(self) -> None:
        super().__init__(BinaryGzipFile, prefix=_GZIP_PREFIX, extension=".gz")


class BZ2CompressorWrapper(CompressorWrapper):
    """joblib's bz2 compressor: :class:`bz2.BZ2File`, extension ``.bz2``."""

    prefix = _BZ2_PREFIX
    extension = ".bz2"

    def __init__(self) -> None:
        self.fileobj_factory = bz2.BZ2File

    def compressor_file(self, fileobj: IO[bytes], compresslevel: int | None = None) -> IO[bytes]:
        """A bz2 file object writing into ``fileobj``."""
        if compresslevel is None:
            return bz2.BZ2File(fileobj, "wb")
        return bz2.BZ2File(fileobj, "wb", compresslevel=compresslevel)

    def decompressor_file(self, fileobj: IO[bytes]) -> IO[bytes]:
        """A bz2 file object reading from ``fileobj``."""
        return bz2.BZ2File(fileobj, "rb")


class LZMACompressorWrapper(CompressorWrapper):
    """joblib's lzma compressor: :class:`lzma.LZMAFile` in the legacy ``.lzma`` format."""

    prefix = _LZMA_PREFIX
    extension = ".lzma"
    _lzma_format_name = "FORMAT_ALONE"

    def __init__(self) -> None:
        self.fileobj_factory = lzma.LZMAFile
        self._lzma_format = getattr(lzma, self._lzma_format_name)

    def compressor_file(self, fileobj: IO[bytes], compresslevel: int | None = None) -> IO[bytes]:
        """An lzma file object writing into ``fileobj``."""
        return lzma.LZMAFile(fileobj, "wb", format=self._lzma_format, preset=compresslevel)

    def decompressor_file(self, fileobj: IO[bytes]) -> IO[bytes]:
        """An lzma file object reading from ``fileobj`` (any lzma format)."""
        return lzma.LZMAFile(fileobj, "rb")


class XZCompressorWrapper(LZMACompressorWrapper):
    """joblib's xz compressor: :class:`lzma.LZMAFile` in the ``.xz`` format."""

    prefix = _XZ_PREFIX
    extension = ".xz"
    _lzma_format_name = "FORMAT_XZ"


class LZ4CompressorWrapper(CompressorWrapper):
    """joblib's lz4 compressor: ``lz4.frame.LZ4FrameFile`` (needs the ``lz4`` package)."""

    prefix = _LZ4_PREFIX
    extension = ".lz4"

    def __init__(self) -> None:
        try:
            from lz4.frame import LZ4FrameFile
        except ImportError:
            self.fileobj_factory = None
        else:
            self.fileobj_factory = LZ4FrameFile

    def _check_versions(self) -> None:
        try:
            import lz4
        except ImportError:
            raise ValueError(LZ4_NOT_INSTALLED_ERROR) from None
        if LooseVersion(lz4.__version__.lstrip("v")) < LooseVersion("0.19"):
            raise ValueError(LZ4_NOT_INSTALLED_ERROR)

    def compressor_file(self, fileobj: IO[bytes], compresslevel: int | None = None) -> IO[bytes]:
        """An lz4 frame file object writing into ``fileobj``."""
        self._check_versions()
        if compresslevel is None:
            return self.fileobj_factory(fileobj, "wb")
        return self.fileobj_factory(fileobj, "wb", compression_level=compresslevel)

    def decompressor_file(self, fileobj: IO[bytes]) -> IO[bytes]:
        """An lz4 frame file object reading from ``fileobj``."""
        self._check_versions()
        return self.fileobj_factory(fileobj, "rb")
