"""joblib's pickler and unpickler classes (``joblib.numpy_pickle``), re-exported there.

- :class:`NumpyPickler` writes joblib's own file format: a pickle in which each numpy array is
  a :class:`NumpyArrayWrapper` whose raw data follows the wrapper in the file (16-byte aligned
  when the file can tell its position). ``joblib.load`` and ``joblib_rs.load`` both read it.
  ``joblib_rs.dump`` itself writes joblib-rs's format; issue 17 (``dump`` writing joblib's
  format) may build on or replace this class.
- :class:`NumpyUnpickler` reads joblib's files (through joblib-rs's reader of that format,
  ``joblib_rs._compat``), including those of joblib < 0.10 whose arrays are separate files.
  Subclasses may override ``find_class`` to restrict what a file can load.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import IO, Any

from joblib_rs._compat import _JoblibArrayWrapper, _JoblibUnpickler
from joblib_rs._joblib_compressors import BinaryZlibFile
from joblib_rs.numpy_pickle_compat import NDArrayWrapper, ZNDArrayWrapper
from joblib_rs.numpy_pickle_utils import Pickler, Unpickler, _ensure_native_byte_order

__all__ = [
    "NUMPY_ARRAY_ALIGNMENT_BYTES",
    "NumpyArrayWrapper",
    "NumpyPickler",
    "NumpyUnpickler",
]

#: Alignment of array data in joblib's files (since joblib 1.2).
NUMPY_ARRAY_ALIGNMENT_BYTES = 16

#: Module and name under which joblib's format refers to the array wrapper.
_WRAPPER_MODULE = "joblib.numpy_pickle"
_WRAPPER_NAME = "NumpyArrayWrapper"
#: Old (joblib < 0.10) wrappers, by the global name files refer to them with.
_OLD_WRAPPERS = {
    f"{module}.{cls.__name__}": cls
    for module in ("joblib.numpy_pickle", "joblib.numpy_pickle_compat")
    for cls in (NDArrayWrapper, ZNDArrayWrapper)
}

#: Bytes of array data written at a time.
_WRITE_CHUNK = 16 * 1024**2


class NumpyArrayWrapper(_JoblibArrayWrapper):
    """Stands for a numpy array in joblib's files; the array's data follows it in the file.

    Parameters
    ----------
    subclass : type
        The array's class (``np.ndarray``, ``np.matrix``...).
    shape : tuple of int
        The array's shape.
    order : {'C', 'F'}
        Order of the data in the file.
    dtype : numpy.dtype
        The array's dtype.
    allow_mmap : bool, default=False
        Whether ``load(..., mmap_mode=...)`` may map the data rather than read it.
    numpy_array_alignment_bytes : int or None, default=16
        Alignment of the data in the file (``None``: no padding, as before joblib 1.2).
    """

    def __init__(
        self,
        subclass: type,
        shape: tuple[int, ...],
        order: str,
        dtype: Any,
        allow_mmap: bool = False,
        numpy_array_alignment_bytes: int | None = NUMPY_ARRAY_ALIGNMENT_BYTES,
    ) -> None:
        self.subclass = subclass
        self.shape = shape
        self.order = order
        self.dtype = dtype
        self.allow_mmap = allow_mmap
        self.numpy_array_alignment_bytes = numpy_array_alignment_bytes

    def safe_get_numpy_array_alignment_bytes(self) -> int | None:
        """The alignment, or None for wrappers unpickled from files older than joblib 1.2."""
        return getattr(self, "numpy_array_alignment_bytes", None)

    def write_array(self, array: Any, pickler: NumpyPickler) -> None:
        """Write ``array``'s data to ``pickler``'s file, right after this wrapper."""
        fh = pickler.file_handle
        if array.dtype.hasobject:
            # Python objects: an ordinary pickle of the array follows (protocol 5, as joblib).
            pickle.dump(array, fh, protocol=5)
            return
        alignment = self.safe_get_numpy_array_alignment_bytes()
        if alignment is not None:
            # One byte giving the padding length, then the padding, then aligned data.
            padding = alignment - (fh.tell() + 1) % alignment
            fh.write(bytes([padding]) + b"\xff" * padding)
        np = pickler.np
        if array.size == 0:
            return
        if self.order == "F":
            array = array.T  # C-contiguous view of Fortran-ordered data, when it is one
        if array.flags.c_contiguous:
            flat = array.reshape(-1).view(np.uint8)
            for start in range(0, flat.size, _WRITE_CHUNK):
                fh.write(flat[start : start + _WRITE_CHUNK].data)
        else:
            rows = max(1, _WRITE_CHUNK // max(1, array.itemsize))
            flat = array.reshape(-1)  # a C-ordered copy of a strided array
            for start in range(0, flat.size, rows):
                fh.write(np.ascontiguousarray(flat[start : start + rows]).data)

    def read(self, unpickler: Any, ensure_native_byte_order: bool = False) -> Any:
        """Read the array this wrapper stands for from ``unpickler``'s file."""
        if isinstance(unpickler, _JoblibUnpickler):
            return unpickler._read_array(self)
        reader = NumpyUnpickler(
            getattr(unpickler, "filename", ""),
            unpickler.file_handle,
            ensure_native_byte_order,
            getattr(unpickler, "mmap_mode", None),
        )
        return reader._read_array(self)


class NumpyPickler(Pickler):  # type: ignore[misc]
    """A pickler writing joblib's file format (numpy arrays as raw data, see the module).

    Parameters
    ----------
    fp : file object
        Binary file to write to.
    protocol : int, optional
        Pickle protocol; ``pickle.DEFAULT_PROTOCOL`` by default.

    Examples
    --------
    >>> import io, numpy as np
    >>> buffer = io.BytesIO()
    >>> NumpyPickler(buffer).dump({"a": np.arange(3)})
    >>> _ = buffer.seek(0)
    >>> NumpyUnpickler("", buffer, ensure_native_byte_order=True).load()
    {'a': array([0, 1, 2])}
    """

    dispatch = Pickler.dispatch.copy()

    def __init__(self, fp: IO[bytes], protocol: int | None = None) -> None:
        self.file_handle = fp
        self.buffered = isinstance(fp, BinaryZlibFile)
        if protocol is None:
            protocol = pickle.DEFAULT_PROTOCOL
        Pickler.__init__(self, fp, protocol=protocol)
        try:
            import numpy
        except ImportError:
            numpy = None
        self.np: Any = numpy

    def _create_array_wrapper(self, array: Any) -> NumpyArrayWrapper:
        """The wrapper written in place of ``array``."""
        fortran = array.flags.f_contiguous and not array.flags.c_contiguous
        try:
            self.file_handle.tell()
            alignment: int | None = NUMPY_ARRAY_ALIGNMENT_BYTES
        except (io.UnsupportedOperation, AttributeError, OSError):
            alignment = None
        return NumpyArrayWrapper(
            type(array),
            array.shape,
            "F" if fortran else "C",
            array.dtype,
            allow_mmap=not self.buffered and not array.dtype.hasobject,
            numpy_array_alignment_bytes=alignment,
        )

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        """Write ``obj``; plain arrays, matrices and memmaps as wrapper plus raw data."""
        np = self.np
        if np is not None and type(obj) in (np.ndarray, np.matrix, np.memmap):
            if type(obj) is np.memmap:
                obj = np.asanyarray(obj)
            wrapper = self._create_array_wrapper(obj)
            Pickler.save(self, wrapper)
            if self.proto >= 4:
                # The data goes straight to the file: close the current pickle frame first.
                self.framer.commit_frame(force=True)
            wrapper.write_array(obj, self)
            return
        Pickler.save(self, obj, save_persistent_id)

    def save_global(self, obj: Any, name: str | None = None) -> None:
        """Write a class reference; the wrapper goes under joblib's name for it."""
        if obj is NumpyArrayWrapper and name is None:
            if self.proto >= 4:
                self.save(_WRAPPER_MODULE)
                self.save(_WRAPPER_NAME)
                self.write(pickle.STACK_GLOBAL)
            else:
                self.write(pickle.GLOBAL + f"{_WRAPPER_MODULE}\n{_WRAPPER_NAME}\n".encode())
            self.memoize(obj)
            return
        Pickler.save_global(self, obj, name=name)

    dispatch[type] = save_global


class NumpyUnpickler(_JoblibUnpickler):
    """An unpickler reading joblib's files (arrays included), as joblib's class does.

    Parameters
    ----------
    filename : str
        Path of the file (needed for ``mmap_mode`` and for joblib < 0.10 files, whose arrays
        are files next to it).
    file_handle : file object
        The open file, positioned at the start of the pickle.
    ensure_native_byte_order : bool
        Convert arrays stored in the other byte order to this machine's.
    mmap_mode : {None, 'r+', 'r', 'w+', 'c'}, optional
        Memory-map arrays of an uncompressed file instead of reading them.
    """

    dispatch = _JoblibUnpickler.dispatch.copy()

    def __init__(
        self,
        filename: str,
        file_handle: IO[bytes],
        ensure_native_byte_order: bool,
        mmap_mode: str | None = None,
    ) -> None:
        super().__init__(file_handle, filename, mmap_mode, ensure_native_byte_order, None)
        self.filename = filename
        self.file_handle = file_handle
        self.mmap_mode = mmap_mode
        self.ensure_native_byte_order = ensure_native_byte_order
        self._dirname = os.path.dirname(filename)
        self.compat_mode = False
        try:
            import numpy
        except ImportError:
            numpy = None
        self.np: Any = numpy

    def find_class(self, module: str, name: str) -> Any:
        """The class or function a global of the file refers to."""
        full = f"{module}.{name}"
        if full == f"{_WRAPPER_MODULE}.{_WRAPPER_NAME}":
            return NumpyArrayWrapper
        if full in _OLD_WRAPPERS:
            return _OLD_WRAPPERS[full]
        return super().find_class(module, name)

    def _read_array(self, wrapper: Any) -> Any:
        """The array of ``wrapper``; an object array's nested pickle goes through this
        unpickler's ``find_class`` too, so a restricting subclass also guards it."""
        import numpy as np

        if not np.dtype(wrapper.dtype).hasobject:
            return super()._read_array(wrapper)
        inner = Unpickler(self.file_handle)
        inner.find_class = self.find_class
        return inner.load()

    def load_build(self) -> None:
        """Apply a BUILD opcode; a wrapper on the stack is replaced by its array."""
        _JoblibUnpickler._load_build(self)
        top = self.stack[-1]
        if isinstance(top, NDArrayWrapper):
            self.compat_mode = True
            self.stack[-1] = top.read(self)
            if self.ensure_native_byte_order:
                self.stack[-1] = _ensure_native_byte_order(self.stack[-1])

    dispatch[pickle.BUILD[0]] = load_build
