"""How :func:`joblib_rs.load` reads a file: format detection, whole-file streams, frames.

:mod:`joblib_rs.numpy_pickle` holds the public :func:`~joblib_rs.numpy_pickle.load`; this
module is its reading path, shared with the cache store's hits. Data flow::

    path ─► detect_format(first bytes) ─┬ container ─► _core.read_path ─► [_core.Frame]
                                        ├ joblib pickle ─► _compat (joblib's format)
                                        └ compressed stream ─► decompress_whole ─► load_bytes
    [_core.Frame] ─► load_frames: decoded buffers as they are; mapped buffers (``data`` None)
                     become numpy.memmap views of ONE map of the file ─► unpickle (buffers=)
    Memory hit (store_hit.rs): the store opens output.jrs once, reads its frames and calls
    load_opened(frames, path, fd, mmap_mode), which maps that same descriptor.

Frame kinds are the Rust constants ``_core.Frame.BUFFER`` / ``_core.Frame.PICKLE``.
"""

from __future__ import annotations

import contextvars
import gc
import io
import mmap
import os
import pickle
import stat
import sys
import warnings
from typing import Any

from joblib_rs import _core, _restricted
from joblib_rs.compressor import _COMPRESSORS, NativeCompressorWrapper

#: Raised when a file is damaged, truncated or not a joblib/joblib-rs file.
CorruptFileError: type[Exception] = _core.CorruptFileError

CONTAINER_MAGIC: bytes = _core.CONTAINER_MAGIC
#: Frame kinds of the container (defined in Rust: ``joblib_core::format::FrameKind``).
BUFFER_FRAME: int = _core.Frame.BUFFER
PICKLE_FRAME: int = _core.Frame.PICKLE
#: Pickles above this size are unpickled with the cyclic garbage collector paused.
GC_PAUSE_MIN = 1 << 20
#: A registered (Python) compressor's stream may decode to at most this many times its size:
#: the largest ratio of the built-in codecs (bzip2's, see ``docs/format.md``).
MAX_STREAM_RATIO = 1 << 21
#: Opcodes that can start a pickle: PROTO (protocol 2+), or the first opcodes of protocol 0/1.
PICKLE_STARTS = b"\x80()]}cNIJKLMFGSTUVX"

#: Whether arrays being rebuilt by the current ``load`` are converted to native byte order
#: (read by ``numpy_pickle._rebuild_array``).
ENSURE_NATIVE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "joblib_rs_ensure_native", default=False
)


def alloc(n: int) -> Any:
    """A writable buffer of ``n`` bytes for a frame read by the core (a numpy array)."""
    np: Any = sys.modules.get("numpy")
    if np is None:
        try:
            import numpy as np
        except ImportError:
            return bytearray(n)
    return np.empty(n, dtype=np.uint8)


def unpickle(data: Any, buffers: list[Any], policy: _restricted.Rules | None) -> Any:
    """``pickle.loads(data, buffers=buffers)``, or the restricted loader under ``policy``."""
    # Unpickling a big pickle allocates many containers and nothing cyclic becomes garbage
    # meanwhile: pausing the cyclic collector avoids repeated scans of the growing graph.
    # Small pickles (the common cache hit) leave the collector alone.
    paused = len(data) > GC_PAUSE_MIN and gc.isenabled()
    if paused:
        gc.disable()
    try:
        if policy is None:
            return pickle.loads(data, buffers=buffers)
        return _restricted.unpickle(data, _restricted.Loader(policy), buffers)[0]
    finally:
        if paused:
            gc.enable()


class _FileMap:
    """One memory map of a container file, shared by all the arrays mapped from it (one
    ``mmap`` instead of an ``open`` and a map per array). Each array is a
    :class:`numpy.memmap` of its payload, with the ``filename``, ``offset`` and ``mode`` a
    ``numpy.memmap(filename, offset=...)`` of that payload would have."""

    def __init__(self, filename: str, mmap_mode: str, fileno: int | None) -> None:
        import numpy as np

        self._np = np
        self.mode = "r+" if mmap_mode == "w+" else mmap_mode
        self.filename = os.path.abspath(filename)
        if self.mode == "r":
            access = mmap.ACCESS_READ
        elif self.mode == "c":
            access = mmap.ACCESS_COPY
        else:
            access = mmap.ACCESS_WRITE
        if fileno is None:
            with open(filename, "r+b" if access == mmap.ACCESS_WRITE else "rb") as f:
                self.map = mmap.mmap(f.fileno(), 0, access=access)
        else:
            # The map keeps its own duplicate of the descriptor: the caller may close it.
            self.map = mmap.mmap(fileno, 0, access=access)

    def array(self, offset: int, length: int) -> Any:
        """The ``length`` bytes at ``offset`` as a ``uint8`` :class:`numpy.memmap`."""
        np = self._np
        if length == 0:
            return np.empty(0, dtype=np.uint8)
        arr = np.ndarray.__new__(
            np.memmap, (length,), dtype=np.uint8, buffer=self.map, offset=offset
        )
        arr._mmap = self.map
        arr.offset = offset
        arr.mode = self.mode
        arr.filename = self.filename
        return arr


def load_frames(
    frames: list[_core.Frame],
    filename: str | None,
    mmap_mode: str | None,
    policy: _restricted.Rules | None,
    fileno: int | None = None,
) -> Any:
    """The object of a container from its frames: decoded payloads are used as they are;
    payloads left in the file (``data`` None) are mapped from ``filename`` with
    ``mmap_mode``, through ``fileno`` when the file is already open."""
    buffers: list[Any] = []
    pickle_data = None
    file_map: _FileMap | None = None
    for frame in frames:
        if frame.kind == PICKLE_FRAME:
            pickle_data = frame.data
        elif frame.data is not None:
            buffers.append(frame.data)
        else:
            if file_map is None:
                if filename is None or mmap_mode is None:
                    raise CorruptFileError("file is damaged: a buffer frame was not read")
                file_map = _FileMap(filename, mmap_mode, fileno)
            buffers.append(file_map.array(frame.offset, frame.raw_len))
    if pickle_data is None:
        raise CorruptFileError("file is damaged: no pickle frame")
    return unpickle(pickle_data, buffers, policy)


def load_opened(
    frames: list[_core.Frame], filename: str, fileno: int, mmap_mode: str | None
) -> Any:
    """A cache hit read in place by the Rust store (``EntryReader``'s ``load_frames``): the
    frames it read from the open output ``fileno``, whose mapped buffers are mapped from
    that descriptor. Byte order and warnings as :func:`joblib_rs.load` of the path."""
    if mmap_mode is not None and any(f.kind == BUFFER_FRAME and f.codec != "none" for f in frames):
        warn_compressed_mmap(mmap_mode, filename, stacklevel=3)
    token = ENSURE_NATIVE.set(mmap_mode is None)
    try:
        return load_frames(frames, filename, mmap_mode, None, fileno)
    finally:
        ENSURE_NATIVE.reset(token)


def detect_format(prefix: bytes | bytearray) -> str:
    """'container', a compressor name, or 'pickle', from a file's first bytes."""
    if prefix.startswith(CONTAINER_MAGIC):
        return "container"
    for name, comp in _COMPRESSORS.items():
        if comp.prefix and prefix.startswith(comp.prefix):
            return name
    return "pickle"


def warn_compressed_mmap(mmap_mode: str | None, filename: str, stacklevel: int = 4) -> None:
    """joblib's warning that the arrays of a compressed file are not memory-mapped."""
    if mmap_mode is not None:
        warnings.warn(
            f'mmap_mode "{mmap_mode}" is not compatible with compressed file {filename}. '
            f'"{mmap_mode}" flag will be ignored.',
            stacklevel=stacklevel,
        )


def decompress_whole(name: str, data: Any) -> bytes | bytearray:
    """Decode a whole-file compressed stream. Its first bytes must start a container or a
    pickle, checked before the rest is decoded, and its output is capped by what the codec
    can produce from ``len(data)`` bytes: anything else is a :class:`CorruptFileError`."""
    comp = _COMPRESSORS[name]
    if isinstance(comp, NativeCompressorWrapper):
        return _core.decompress_stream(name, data)
    cap = len(data) * MAX_STREAM_RATIO
    with comp.decompressor_file(io.BytesIO(data)) as f:
        head = f.read(len(CONTAINER_MAGIC))
        if not head.startswith(CONTAINER_MAGIC) and (not head or head[:1] not in PICKLE_STARTS):
            raise CorruptFileError(
                f"not a joblib-rs or joblib file: the {name} stream decodes to {head!r}..."
            )
        pieces = [head]
        size = len(head)
        while piece := f.read(1 << 20):
            size += len(piece)
            if size > cap:
                raise CorruptFileError(
                    f"file is damaged: the {name} stream of {len(data)} bytes decodes to more "
                    f"than {cap} bytes"
                )
            pieces.append(piece)
    return b"".join(pieces)


def load_bytes(
    data: bytes | bytearray,
    name: str,
    policy: _restricted.Rules | None,
    ensure_native: bool,
    depth: int = 0,
) -> Any:
    """The object stored in a whole file held in memory (any format ``load`` reads)."""
    kind = detect_format(data[:16])
    if kind == "container":
        frames = _core.read_bytes(data, alloc)
        return load_frames(frames, None, None, policy)
    if kind == "pickle":
        from joblib_rs import _compat

        if isinstance(data, bytearray):  # decoded by decompress_whole: ours alone
            return _compat.load_joblib_buffer(data, name, ensure_native, policy)
        return _compat.load_joblib_pickle(io.BytesIO(data), name, None, ensure_native, policy)
    if depth > 0:
        raise CorruptFileError(f"file {name!r} is compressed twice; refusing to decompress")
    inner = decompress_whole(kind, data)
    return load_bytes(inner, name, policy, ensure_native, depth + 1)


def load_fileobj(fobj: Any, prefix: bytes, policy: _restricted.Rules | None) -> Any:
    """A container streamed from a file object whose first bytes (``prefix``) were read:
    frames are read into their final buffers; the object is left just after the file."""
    frames = _core.read_fileobj(fobj, prefix, alloc, size_from(fobj, prefix))
    return load_frames(frames, None, None, policy)


def load_mapped_verified(filename: str, mmap_mode: str) -> Any:
    """``load(filename, mmap_mode=mmap_mode)`` that also reads every mapped payload once to
    check its checksum (``CorruptFileError`` on a mismatch): a memory-mapped cache hit never
    returns bytes other than those stored."""
    token = ENSURE_NATIVE.set(False)
    try:
        return load_path(filename, mmap_mode, None, False, verify_mapped=True)
    finally:
        ENSURE_NATIVE.reset(token)


def size_from(fobj: Any, prefix: bytes) -> int | None:
    """Bytes a plain file object over a regular file holds from ``prefix`` on (lengths read
    from it are checked against that before allocating); None for other objects."""
    if not isinstance(getattr(fobj, "raw", fobj), io.FileIO):
        return None
    try:
        st = os.fstat(fobj.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(0, st.st_size - (fobj.tell() - len(prefix)))
    except (OSError, ValueError, AttributeError):
        return None


def seekable(fobj: Any) -> bool:
    """Whether a file object says it can seek (False when it cannot say)."""
    try:
        return bool(fobj.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def load_path(
    filename: str,
    mmap_mode: str | None,
    policy: _restricted.Rules | None,
    ensure_native: bool,
    verify_mapped: bool = False,
) -> Any:
    """The object stored at ``filename`` (any format), arrays mapped with ``mmap_mode``."""
    with open(filename, "rb") as f:
        prefix = f.read(16)
        kind = detect_format(prefix)
        if kind == "pickle":
            from joblib_rs import _compat

            f.seek(0)
            return _compat.load_joblib_pickle(f, filename, mmap_mode, ensure_native, policy)
        if kind != "container":
            warn_compressed_mmap(mmap_mode, filename)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                inner = decompress_whole(kind, mapped)
            return load_bytes(inner, filename, policy, ensure_native, depth=1)
        frames = _core.read_path(
            filename, alloc, skip_buffers=mmap_mode is not None, verify_skipped=verify_mapped
        )
        if mmap_mode is not None and any(
            fr.kind == BUFFER_FRAME and fr.codec != "none" for fr in frames
        ):
            warn_compressed_mmap(mmap_mode, filename)
        if mmap_mode in ("r+", "w+"):
            # Writes through the map would invalidate the payload checksums: flag those
            # frames so later loads skip them (docs/format.md, "mutable frames").
            mutable = [(fr.offset, fr.raw_len) for fr in frames if fr.mapped]
            if mutable:
                _core.mark_mutable(filename, mutable)
            return load_frames(frames, filename, mmap_mode, policy)
        # Read-only and copy-on-write maps reuse this descriptor (opened for reading).
        return load_frames(frames, filename, mmap_mode, policy, f.fileno())
