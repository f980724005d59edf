"""Reading pickles written by joblib >= 0.10 (``joblib.numpy_pickle`` format).

joblib writes a pickle in which each numpy array is a ``NumpyArrayWrapper`` object whose raw
data follows the wrapper's BUILD opcode directly in the file (since joblib 1.2 after a
padding-length byte and padding, for 16-byte alignment). This module reads that layout with
its own unpickler, so joblib itself need not be installed; arrays of an uncompressed file can
be memory-mapped in place.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import struct
import warnings
from typing import IO, Any

from joblib_rs import _core, _restricted
from joblib_rs._joblib_compressors import _ZFILE_PREFIX

CorruptFileError: type[Exception] = _core.CorruptFileError

_WRAPPER_GLOBAL = "joblib.numpy_pickle.NumpyArrayWrapper"
_PIECE = 16 << 20


class _JoblibArrayWrapper:
    """Stands for ``joblib.numpy_pickle.NumpyArrayWrapper``: receives its pickled state."""

    subclass: Any
    shape: tuple[int, ...]
    order: str
    dtype: Any
    allow_mmap: bool


class _JoblibUnpickler(pickle._Unpickler):  # type: ignore[misc,name-defined]
    """Pure-Python unpickler (the C one cannot intercept BUILD) reading joblib's arrays."""

    dispatch = pickle._Unpickler.dispatch.copy()  # type: ignore[attr-defined]

    def __init__(
        self, fh: IO[bytes], filename: str, mmap_mode: str | None, ensure_native: bool, policy: Any
    ) -> None:
        super().__init__(fh)
        self._fh = fh
        self._filename = filename
        self._mmap_mode = "r+" if mmap_mode == "w+" else mmap_mode
        self._ensure_native = ensure_native
        self._policy = policy

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if self._policy is not None:
            self._policy.check(module, name)
        if full == _WRAPPER_GLOBAL:
            return _JoblibArrayWrapper
        if full == "joblib.numpy_pickle.NDArrayWrapper":
            raise CorruptFileError(
                f"{self._filename!r} was written by joblib < 0.10 (separate .npy files); "
                "this format is not supported"
            )
        return super().find_class(module, name)

    def _load_build(self) -> None:
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        top = self.stack[-1]
        if isinstance(top, _JoblibArrayWrapper):
            self.stack[-1] = self._read_array(top)

    dispatch[pickle.BUILD[0]] = _load_build

    def _read_exact(self, n: int) -> bytes:
        data = self._fh.read(n)
        if len(data) != n:
            raise CorruptFileError(
                f"file is truncated: array data of {n} bytes ends after {len(data)} bytes"
            )
        return data

    def _skip_padding(self, wrapper: _JoblibArrayWrapper) -> None:
        if getattr(wrapper, "numpy_array_alignment_bytes", None) is None:
            return
        pad = self._read_exact(1)[0]
        if pad > 64:
            raise CorruptFileError(f"file is damaged: array padding of {pad} bytes")
        if pad:
            self._read_exact(pad)

    def _read_array(self, wrapper: _JoblibArrayWrapper) -> Any:
        import numpy as np

        dtype = np.dtype(wrapper.dtype)
        shape = tuple(int(s) for s in wrapper.shape)
        order = "F" if wrapper.order == "F" else "C"
        if dtype.hasobject:
            inner = _JoblibUnpickler(self._fh, self._filename, None, False, self._policy)
            array = inner.load()
        else:
            self._skip_padding(wrapper)
            count = 1
            for s in shape:
                if s < 0:
                    raise CorruptFileError(f"file is damaged: negative array dimension {s}")
                count *= s
            nbytes = count * dtype.itemsize
            left = _bytes_left(self._fh)
            if left is not None and nbytes > left:
                raise CorruptFileError(
                    f"file is truncated or damaged: array of {nbytes} bytes with {left} bytes "
                    "left in the file"
                )
            if (
                self._mmap_mode is not None
                and getattr(wrapper, "allow_mmap", False)
                and (self._filename)
            ):
                offset = self._fh.tell()
                if nbytes == 0:
                    array = np.empty(shape, dtype=dtype, order=order)
                else:
                    array = np.memmap(
                        self._filename,
                        dtype=dtype,
                        mode=self._mmap_mode,
                        offset=offset,
                        shape=shape,
                        order=order,
                    )
                self._fh.seek(offset + nbytes)
            else:
                flat = np.empty(count, dtype=dtype)
                view = flat.view(np.uint8) if nbytes else memoryview(b"")
                filled = 0
                while filled < nbytes:
                    n = self._fh.readinto(view[filled : filled + _PIECE])
                    if not n:
                        raise CorruptFileError(
                            f"file is truncated: array data of {nbytes} bytes ends after "
                            f"{filled} bytes"
                        )
                    filled += n
                if order == "F":
                    array = flat.reshape(shape[::-1]).transpose()
                else:
                    array = flat.reshape(shape)
                if (
                    self._ensure_native
                    and not array.dtype.isnative
                    and (array.dtype.byteorder != "|")
                ):
                    array = array.byteswap().view(array.dtype.newbyteorder("="))
        subclass = getattr(wrapper, "subclass", None)
        if (
            isinstance(subclass, type)
            and subclass not in (np.ndarray, np.memmap)
            and (issubclass(subclass, np.ndarray))
        ):
            array = array.view(subclass)
        return array


def _bytes_left(fh: IO[bytes]) -> int | None:
    """Bytes between the position and the end of a seekable file, else None."""
    try:
        if not fh.seekable():
            return None
        pos = fh.tell()
        end = fh.seek(0, 2)
        fh.seek(pos)
        return end - pos
    except (OSError, AttributeError, ValueError):
        return None


def load_joblib_pickle(
    fh: IO[bytes], filename: str, mmap_mode: str | None, ensure_native: bool, policy: Any
) -> Any:
    """Load a joblib pickle from ``fh`` (positioned at its start)."""
    head = fh.read(2)
    fh.seek(0)
    if head == _ZFILE_PREFIX:
        if policy is not None:
            # Read by pickle's own unpickler (arrays in separate files): no policy applies.
            raise pickle.UnpicklingError(
                f"{filename or 'the data'}: a file of joblib < 0.10 is forbidden by load(..., "
                "allowed=...): it can only be read unrestricted; load it with allowed=None if "
                "it is trusted"
            )
        return _load_old(filename, fh, mmap_mode, ensure_native)
    head = head[:1]
    # Protocol 2+ pickles start with PROTO; 0/1 with a handful of opcodes.
    if not head or head not in b"\x80(]}cNIFSVX":
        raise CorruptFileError(
            f"{filename or 'the data'} is not a joblib-rs or joblib file (first byte {head!r})"
        )
    if policy is None:
        loader: _restricted.Loader = _restricted.TrustedLoader(filename, mmap_mode, ensure_native)
    else:
        loader = _restricted.Loader(policy, filename or None, mmap_mode, ensure_native)
    try:
        return _load_with(fh, loader)
    except _restricted.OldJoblibFormat:
        return _load_old(filename, fh, mmap_mode, ensure_native)


def load_joblib_buffer(data: bytearray, filename: str, ensure_native: bool, policy: Any) -> Any:
    """Load a joblib pickle decoded into ``data`` (a whole-file compressed file's stream,
    owned by this load alone): its arrays are views of ``data`` rather than copies."""
    if bytes(data[:2]) == _ZFILE_PREFIX:
        return load_joblib_pickle(io.BytesIO(data), filename, None, ensure_native, policy)
    if policy is None:
        loader: _restricted.Loader = _restricted.TrustedLoader(filename, None, ensure_native)
    else:
        loader = _restricted.Loader(policy, filename or None, None, ensure_native)
    loader.viewable = data
    try:
        return _restricted.unpickle(data, loader, None, 0, None)[0]
    except _restricted.OldJoblibFormat:
        return _load_old(filename, io.BytesIO(data), None, ensure_native)


def _load_old(filename: str, fh: IO[bytes], mmap_mode: str | None, ensure_native: bool) -> Any:
    """A file of joblib < 0.10 (arrays in files of their own), with joblib's warning."""
    if not filename or not os.path.isfile(filename):
        raise CorruptFileError(
            "a file of joblib < 0.10 keeps its arrays in separate files: load it by path"
        )
    fh.seek(0)
    if fh.read(2) == _ZFILE_PREFIX:
        from joblib_rs.numpy_pickle_compat import load_compatibility

        obj = load_compatibility(filename)
    else:
        from joblib_rs._joblib_pickle import NumpyUnpickler

        fh.seek(0)
        try:
            obj = NumpyUnpickler(filename, fh, ensure_native, mmap_mode).load()
        except UnicodeDecodeError as exc:
            raise CorruptFileError(
                "You may be trying to read with python 3 a joblib pickle generated with "
                "python 2. This feature is not supported by joblib."
            ) from exc
    warnings.warn(
        f"The file '{filename}' has been generated with a joblib version less than 0.10. "
        "Please regenerate this pickle file.",
        DeprecationWarning,
        stacklevel=4,
    )
    return obj


def load_joblib_pickle_python(
    fh: IO[bytes], filename: str, mmap_mode: str | None, ensure_native: bool, policy: Any
) -> Any:
    """:func:`load_joblib_pickle` with the pure-Python unpickler (kept as the reference)."""
    try:
        return _JoblibUnpickler(fh, filename, mmap_mode, ensure_native, policy).load()
    except (EOFError, struct.error, IndexError, KeyError) as exc:
        raise CorruptFileError(
            f"file is damaged or truncated: {type(exc).__name__}: {exc}"
        ) from exc
    except pickle.UnpicklingError as exc:
        if isinstance(exc, CorruptFileError) or "is forbidden by load" in str(exc):
            raise
        raise CorruptFileError(f"file is damaged: {exc}") from exc


def _load_with(fh: IO[bytes], loader: _restricted.Loader) -> Any:
    """A joblib pickle through the Rust unpickler under ``loader`` (joblib_rs._restricted).

    A real file is memory-mapped (its arrays are copied out of the map, or mapped again in
    place under ``mmap_mode``); anything else is read whole.
    """
    fileno = None
    if isinstance(getattr(fh, "raw", fh), io.FileIO):
        try:
            fileno = fh.fileno()
        except (OSError, ValueError):
            fileno = None
    if fileno is not None and os.fstat(fileno).st_size > 0:
        mapped = mmap.mmap(fileno, 0, access=mmap.ACCESS_READ)
        try:
            return _restricted.unpickle(mapped, loader, None, 0, 0)[0]
        finally:
            try:
                mapped.close()
            except BufferError:
                pass  # a view held by an exception's traceback: unmapped when collected
    data = fh.read()
    return _restricted.unpickle(data, loader, None, 0, None)[0]
