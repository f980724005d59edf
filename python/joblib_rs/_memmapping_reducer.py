"""Helpers of joblib's ``joblib._memmapping_reducer`` that do not depend on a process pool.

- :func:`has_shareable_memory`: whether an array is backed by a memory-mapped file (and can
  thus reach other processes as a file reference rather than a copy);
- :func:`_get_backing_memmap`, :func:`_get_temp_dir`, :func:`_strided_from_memmap`,
  :class:`_WeakArrayKeyMap`, :func:`unlink_file`: the building blocks joblib's own tests use.

``dump`` and ``load`` are joblib-rs's. The reducers that plug these into a pool
(``ArrayMemmapForwardReducer``, ``get_memmapping_reducers``, ``TemporaryResourcesManager``)
belong to joblib's loky pool and are not provided: joblib-rs's process pool shares arrays
through ``joblib_rs._memmapping``.
"""

from __future__ import annotations

import mmap
import os
import pickle
import stat
import time
import weakref
from pickle import HIGHEST_PROTOCOL  # noqa: F401  (joblib's module has it)
from typing import Any

from joblib_rs.backports import make_memmap
from joblib_rs.disk import delete_folder  # noqa: F401  (joblib's module has it)
from joblib_rs.numpy_pickle import dump, load  # noqa: F401  (dump: joblib's module has it)

__all__ = [
    "FILE_PERMISSIONS",
    "FOLDER_PERMISSIONS",
    "JOBLIB_MMAPS",
    "SYSTEM_SHARED_MEM_FS",
    "SYSTEM_SHARED_MEM_FS_MIN_SIZE",
    "add_maybe_unlink_finalizer",
    "has_shareable_memory",
    "load_temporary_memmap",
    "unlink_file",
]

#: RAM-backed file system used for temporary memory maps when it has room.
SYSTEM_SHARED_MEM_FS = "/dev/shm"
#: Free bytes :data:`SYSTEM_SHARED_MEM_FS` must have to be used.
SYSTEM_SHARED_MEM_FS_MIN_SIZE = int(2e9)
#: Permissions of the temporary folders and files (owner only).
FOLDER_PERMISSIONS = stat.S_IRUSR | stat.S_IWUSR | stat.S_IXUSR
FILE_PERMISSIONS = stat.S_IRUSR | stat.S_IWUSR
#: Files of the memory maps created by this process (kept for joblib's API).
JOBLIB_MMAPS: set[str] = set()


def _get_backing_memmap(a: Any) -> Any:
    """The ``np.memmap`` whose file ``a``'s memory comes from (following ``.base``), or None."""
    while True:
        base = getattr(a, "base", None)
        if base is None:
            return None
        if isinstance(base, mmap.mmap):
            return a
        a = base


def has_shareable_memory(a: Any) -> bool:
    """True when ``a`` (an array or view) is backed by a memory-mapped file.

    Examples
    --------
    >>> import numpy as np
    >>> has_shareable_memory(np.zeros(3))
    False
    """
    return _get_backing_memmap(a) is not None


def unlink_file(filename: str) -> None:
    """Delete ``filename``; retried for two seconds while the system reports it in use (a map
    not closed yet, on Windows); a file already gone is fine."""
    for attempt in range(10):
        try:
            os.unlink(filename)
            return
        except FileNotFoundError:
            return
        except PermissionError:
            if attempt == 9:
                raise
            time.sleep(0.2)


def add_maybe_unlink_finalizer(memmap: Any) -> None:
    """Delete ``memmap``'s file once the array and all its views are garbage collected.

    joblib asks loky's resource tracker, which counts the maps of every process; here the
    current process's map is followed (see ``docs/differences.md``).
    """
    owner = getattr(memmap, "_mmap", None)
    weakref.finalize(memmap if owner is None else owner, unlink_file, memmap.filename)


def load_temporary_memmap(filename: str, mmap_mode: str, unlink_on_gc_collect: bool) -> Any:
    """Load the array dumped to ``filename`` memory-mapped with ``mmap_mode``; with
    ``unlink_on_gc_collect``, the file is deleted once the array is garbage collected.

    The file may be a joblib or a joblib-rs file (``joblib_rs.load`` reads both).
    """
    obj = load(filename, mmap_mode)
    JOBLIB_MMAPS.add(getattr(obj, "filename", None) or filename)
    if unlink_on_gc_collect:
        add_maybe_unlink_finalizer(obj)
    return obj


def _get_temp_dir(pool_folder_name: str, temp_folder: str | None = None) -> tuple[str, bool]:
    """``(folder, on shared memory)``: where a pool named ``pool_folder_name`` maps arrays.

    Parameters
    ----------
    pool_folder_name : str
        Name of the pool's sub-folder.
    temp_folder : str, optional
        Parent folder. By default ``$JOBLIB_TEMP_FOLDER``, else :data:`SYSTEM_SHARED_MEM_FS`
        when it exists, is writable and has more than :data:`SYSTEM_SHARED_MEM_FS_MIN_SIZE`
        bytes free (the sub-folder is then created), else the system's temporary folder.
    """
    import tempfile

    if temp_folder is None:
        temp_folder = os.environ.get("JOBLIB_TEMP_FOLDER")
    if temp_folder is None and hasattr(os, "statvfs") and os.path.exists(SYSTEM_SHARED_MEM_FS):
        try:
            st = os.statvfs(SYSTEM_SHARED_MEM_FS)
            if st.f_bsize * st.f_bavail > SYSTEM_SHARED_MEM_FS_MIN_SIZE:
                folder = os.path.join(SYSTEM_SHARED_MEM_FS, pool_folder_name)
                os.makedirs(folder, exist_ok=True)
                return folder, True
        except OSError:
            pass  # no right to write there: use the ordinary temporary folder
    if temp_folder is None:
        temp_folder = tempfile.gettempdir()
    temp_folder = os.path.abspath(os.path.expanduser(temp_folder))
    return os.path.join(temp_folder, pool_folder_name), False


def _strided_from_memmap(
    filename: str,
    dtype: Any,
    mode: str,
    offset: int,
    order: str,
    shape: Any,
    strides: Any,
    total_buffer_len: int,
    unlink_on_gc_collect: bool,
) -> Any:
    """A view of ``shape`` and ``strides`` over a memory-mapped file (mode ``'w+'`` is opened
    as ``'r+'``: the data is never zeroed); contiguous when ``strides`` is None."""
    if mode == "w+":
        mode = "r+"
    if strides is None:
        return make_memmap(
            filename,
            dtype=dtype,
            shape=shape,
            mode=mode,
            offset=offset,
            order=order,
            unlink_on_gc_collect=unlink_on_gc_collect,
        )
    from numpy.lib.stride_tricks import as_strided

    whole = make_memmap(
        filename,
        dtype=dtype,
        shape=total_buffer_len,
        mode=mode,
        offset=offset,
        order=order,
        unlink_on_gc_collect=unlink_on_gc_collect,
    )
    return as_strided(whole, shape=shape, strides=strides)


class _WeakArrayKeyMap:
    """A mapping keyed by object identity that forgets an entry when its key is collected:
    a ``WeakKeyDictionary`` for numpy arrays, which are unhashable.

    It has :meth:`get` and :meth:`set` but no ``[]`` syntax, which numpy indexing would
    confuse.
    """

    def __init__(self) -> None:
        self._data: dict[int, tuple[weakref.ref[Any], Any]] = {}

    def get(self, obj: Any) -> Any:
        """The value stored for ``obj``; ``KeyError`` if none."""
        ref, value = self._data[id(obj)]
        if ref() is not obj:
            raise KeyError(obj)
        return value

    def set(self, obj: Any, value: Any) -> None:
        """Store ``value`` for ``obj`` until ``obj`` is garbage collected."""
        key = id(obj)
        entry = self._data.get(key)
        if entry is not None and entry[0]() is obj:
            ref = entry[0]
        else:

            def forget(_: Any, key: int = key) -> None:
                self._data.pop(key, None)

            ref = weakref.ref(obj, forget)
        self._data[key] = (ref, value)

    def __getstate__(self) -> Any:
        raise pickle.PicklingError("_WeakArrayKeyMap is not pickleable")
