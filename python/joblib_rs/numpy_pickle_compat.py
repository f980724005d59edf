"""Reading files of joblib < 0.10 (``joblib.numpy_pickle_compat``).

Those versions stored each numpy array in a file of its own next to the pickle (``.npy``, or
a zlib "Z-file" when compressed), the pickle holding an :class:`NDArrayWrapper` /
:class:`ZNDArrayWrapper` naming it; a compressed pickle was itself a Z-file.
:func:`load_compatibility` reads such a set of files; :func:`read_zfile` and
:func:`write_zfile` read and write the Z-file container.
"""

from __future__ import annotations

import io
import os
import pickle
import zlib
from typing import IO, Any

from joblib_rs._joblib_compressors import _ZFILE_PREFIX
from joblib_rs.numpy_pickle_utils import Unpickler, _ensure_native_byte_order, _reconstruct

__all__ = [
    "NDArrayWrapper",
    "ZNDArrayWrapper",
    "ZipNumpyUnpickler",
    "asbytes",
    "hex_str",
    "load_compatibility",
    "read_zfile",
    "write_zfile",
]


def hex_str(an_int: int) -> str:
    """``an_int`` in hexadecimal with its ``0x`` prefix."""
    return f"{an_int:#x}"


def asbytes(s: str | bytes) -> bytes:
    """``s`` as bytes (a ``str`` encoded in latin-1)."""
    return s if isinstance(s, bytes) else s.encode("latin1")


#: Width of the length field of a Z-file header (the hex length of 2**64, space padded).
_MAX_LEN = len(hex_str(2**64))
_CHUNK_SIZE = 64 * 1024


def read_zfile(file_handle: IO[bytes]) -> bytes:
    """The data of a Z-file: ``b'ZF'``, the data length in hexadecimal padded to
    :data:`_MAX_LEN` characters, then the zlib-compressed data. Read from the file's start.

    Raises
    ------
    ValueError
        If the decompressed data does not have the length of the header.
    """
    file_handle.seek(0)
    header_length = len(_ZFILE_PREFIX) + _MAX_LEN
    header = file_handle.read(header_length)
    length = int(header[len(_ZFILE_PREFIX) :], 16)
    # Files of joblib <= 0.8.4 under Python 2 have a header one space wider; zlib data
    # never starts with a space.
    if file_handle.read(1) != b" ":
        file_handle.seek(header_length)
    data = zlib.decompress(file_handle.read(), 15, length)
    if len(data) != length:
        raise ValueError(
            f"Incorrect data length while decompressing {file_handle}. "
            "The file could be corrupted."
        )
    return data


def write_zfile(file_handle: IO[bytes], data: str | bytes, compress: int = 1) -> None:
    """Write ``data`` to ``file_handle`` as a Z-file (see :func:`read_zfile`)."""
    raw = asbytes(data)
    file_handle.write(_ZFILE_PREFIX)
    file_handle.write(asbytes(hex_str(len(raw)).ljust(_MAX_LEN)))
    file_handle.write(zlib.compress(raw, compress))


def _prepare(array: Any, subclass: Any, np: Any) -> Any:
    """``array`` as an instance of ``subclass`` when that is an ndarray subclass."""
    if subclass in (np.ndarray, np.memmap) or not isinstance(subclass, type):
        return array
    if issubclass(subclass, np.ndarray):
        return array.view(subclass)
    return array


class NDArrayWrapper:
    """Stands, in a joblib < 0.10 pickle, for an array saved as a ``.npy`` file next to it.

    Parameters
    ----------
    filename : str
        Name of the ``.npy`` file, relative to the pickle's folder.
    subclass : type
        The array's class.
    allow_mmap : bool, default=True
        Whether the file may be memory-mapped.
    """

    def __init__(self, filename: str, subclass: type, allow_mmap: bool = True) -> None:
        self.filename = filename
        self.subclass = subclass
        self.allow_mmap = allow_mmap

    def read(self, unpickler: Any) -> Any:
        """Load the array from its file (memory-mapped if the unpickler asks and it may)."""
        import numpy as np

        path = os.path.join(unpickler._dirname, self.filename)
        mmap_mode = unpickler.mmap_mode if getattr(self, "allow_mmap", True) else None
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=True)
        return _prepare(_ensure_native_byte_order(array), self.subclass, np)


class ZNDArrayWrapper(NDArrayWrapper):
    """Stands, in a joblib < 0.10 pickle, for an array whose data is a Z-file next to it.

    Parameters
    ----------
    filename : str
        Name of the Z-file, relative to the pickle's folder.
    init_args : tuple
        Arguments of numpy's ``_reconstruct`` creating the empty array.
    state : tuple
        The array's ``__setstate__`` state, without its data.
    """

    def __init__(self, filename: str, init_args: tuple[Any, ...], state: tuple[Any, ...]) -> None:
        self.filename = filename
        self.state = state
        self.init_args = init_args

    def read(self, unpickler: Any) -> Any:
        """Rebuild the array from its meta-data and the Z-file's data."""
        array = _reconstruct(*self.init_args)
        with open(os.path.join(unpickler._dirname, self.filename), "rb") as fh:
            data = read_zfile(fh)
        array.__setstate__((*self.state, data))
        return array


class ZipNumpyUnpickler(Unpickler):  # type: ignore[misc]
    """Unpickler of a joblib < 0.10 pickle (itself a Z-file) and its array files.

    Parameters
    ----------
    filename : str
        Path of the pickle.
    file_handle : file object
        The pickle, opened in binary mode.
    mmap_mode : str, optional
        Memory-map the ``.npy`` array files with this mode.
    """

    dispatch = Unpickler.dispatch.copy()

    def __init__(self, filename: str, file_handle: IO[bytes], mmap_mode: str | None = None):
        self._filename = os.path.basename(filename)
        self._dirname = os.path.dirname(filename)
        self.mmap_mode = mmap_mode
        self.file_handle = self._open_pickle(file_handle)
        Unpickler.__init__(self, self.file_handle)
        try:
            import numpy
        except ImportError:
            numpy = None
        self.np: Any = numpy

    def _open_pickle(self, file_handle: IO[bytes]) -> IO[bytes]:
        return io.BytesIO(read_zfile(file_handle))

    def find_class(self, module: str, name: str) -> Any:
        """The wrappers of this format are this module's classes."""
        if module in ("joblib.numpy_pickle", "joblib.numpy_pickle_compat") and name in (
            "NDArrayWrapper",
            "ZNDArrayWrapper",
        ):
            return NDArrayWrapper if name == "NDArrayWrapper" else ZNDArrayWrapper
        return super().find_class(module, name)

    def load_build(self) -> None:
        """Apply a BUILD opcode; a wrapper on the stack is replaced by its array."""
        Unpickler.load_build(self)
        if isinstance(self.stack[-1], NDArrayWrapper):
            if self.np is None:
                raise ImportError(
                    "Trying to unpickle an ndarray, but numpy didn't import correctly"
                )
            self.stack[-1] = self.stack[-1].read(self)

    dispatch[pickle.BUILD[0]] = load_build


def load_compatibility(filename: str) -> Any:
    """Load an object saved by ``joblib.dump`` of joblib < 0.10 (arrays in separate files).

    Parameters
    ----------
    filename : str
        The pickle file; the array files are looked for in its folder.

    Returns
    -------
    object
        The object stored.

    Raises
    ------
    ValueError
        If the file was written by Python 2 with text that cannot be decoded.
    """
    with open(filename, "rb") as fh:
        unpickler = ZipNumpyUnpickler(filename, file_handle=fh)
        try:
            return unpickler.load()
        except UnicodeDecodeError as exc:
            raise ValueError(
                "You may be trying to read with python 3 a joblib pickle generated with "
                "python 2. This feature is not supported by joblib."
            ) from exc
