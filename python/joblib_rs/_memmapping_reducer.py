"""joblib's ``joblib._memmapping_reducer``: large numpy arrays to and from pool workers as
memory maps, for the pools built on custom reducers (``joblib.executor``, ``joblib.pool``).

::

    parent: ArrayMemmapForwardReducer(a)
        a backed by a memmap file ──► (_strided_from_memmap, file/offset/strides)  no copy
        a larger than max_nbytes ──► written once to <temp folder>/<pid>-<n>-<uuid>.dat
                                      ──► (_load_dumped_array, ...): np.memmap in the worker
        anything else ──────────────► pickled bytes
    worker: reduce_array_memmap_backward(result)
        view of a user's memmap file ─► sent back as a memmap of the same file
        anything else (a map of a temporary file included) ─► pickled bytes, a plain array
    TemporaryResourcesManager: one temporary folder per context (a ``Parallel`` call or an
        executor), deleted when the context ends or the executor terminates

joblib-rs's own ``Parallel`` backends share arrays through ``joblib_rs._memmapping``; this module
is the reducer-based equivalent joblib's pool API exposes. Files are raw array bytes rather than
joblib pickles, and are deleted with their folder (not counted across processes by loky's
resource tracker, see ``docs/differences.md``).
"""

from __future__ import annotations

import mmap
import os
import pickle
import shutil
import stat
import sys
import threading
import time
import uuid
import weakref
from pickle import HIGHEST_PROTOCOL
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
    "ArrayMemmapForwardReducer",
    "TemporaryResourcesManager",
    "add_maybe_unlink_finalizer",
    "get_memmapping_reducers",
    "has_shareable_memory",
    "load_temporary_memmap",
    "reduce_array_memmap_backward",
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


# ------------------------------------------------------------------ reducers for pool workers
def _byte_bounds(a: Any) -> tuple[int, int]:
    """``(first, past-the-end)`` addresses of the memory ``a`` spans."""
    start = a.__array_interface__["data"][0]
    low = high = start
    for n, s in zip(a.shape, a.strides, strict=True):
        if n == 0:
            return start, start
        if s < 0:
            low += (n - 1) * s
        else:
            high += (n - 1) * s
    return low, high + a.itemsize


def _pickled_copy(a: Any) -> tuple[Any, tuple[bytes]]:
    """Reduction of ``a`` as a plain in-memory array (no file behind it)."""
    import numpy as np

    return pickle.loads, (pickle.dumps(np.asarray(a), protocol=HIGHEST_PROTOCOL),)


def _reduce_memmap_backed(a: Any, m: Any) -> tuple[Any, tuple]:
    """Reduction of ``a``, a view of the ``np.memmap`` ``m`` (``m.base`` is the mmap): the
    file, the view's offset in it, its shape and strides; nothing is copied."""
    a_start, a_end = _byte_bounds(a)
    if any(s < 0 for s in a.strides) and a.size > 1:
        return _pickled_copy(a)  # a reversed view: not expressible as offset + strides
    offset = a_start - _byte_bounds(m)[0] + m.offset
    if a.flags.c_contiguous:
        order, strides, total = "C", None, None
    elif a.flags.f_contiguous:
        order, strides, total = "F", None, None
    else:
        order, strides, total = "C", a.strides, (a_end - a_start) // a.itemsize
    args = (m.filename, a.dtype, m.mode, offset, order, a.shape, strides, total, False)
    return _strided_from_memmap, args


def reduce_array_memmap_backward(a: Any) -> tuple[Any, tuple]:
    """Reduction of an array a worker returns: a view of a user's memmap file comes back as a
    memmap of that file; anything else (the temporary maps of arguments included) as a copy."""
    import numpy as np

    m = _get_backing_memmap(a)
    if isinstance(m, np.memmap) and m.filename not in JOBLIB_MMAPS:
        return _reduce_memmap_backed(a, m)
    return _pickled_copy(a)


def _read_through(filename: str) -> None:
    """Read the whole file once (it then sits in the page cache for the workers)."""
    with open(filename, "rb", buffering=0) as f:
        while f.read(1 << 20):
            continue


def _load_dumped_array(filename: str, dtype: Any, shape: tuple, order: str, mode: str) -> Any:
    """Rebuilds, in a worker, an array :class:`ArrayMemmapForwardReducer` wrote to a file."""
    JOBLIB_MMAPS.add(filename)
    return make_memmap(filename, dtype=dtype, mode=mode, shape=shape, order=order)


class ArrayMemmapForwardReducer:
    """Reducer of numpy arrays sent to pool workers: as memory maps rather than copies.

    An array backed by a memory-mapped file travels as a reference to that file. Other arrays
    of more than ``max_nbytes`` bytes are written once (per array object) to a file in the
    temporary folder and open in the workers as ``np.memmap`` with ``mmap_mode``; the rest
    are pickled.

    Parameters
    ----------
    max_nbytes : int or None
        Size above which arrays are written to a file; None: never.
    temp_folder_resolver : callable or str or None
        Returns the folder to write to (or is that folder).
    mmap_mode : {'r', 'r+', 'c', 'w+'}
        Mode of the workers' maps ('w+' opens as 'r+': the data is not zeroed).
    unlink_on_gc_collect : bool
        joblib deletes each file once no process maps it (loky's resource tracker); here the
        files belong to the temporary folder, deleted as a whole with its context (kept for
        joblib's signature and pickled with the reducer).
    verbose : int, default=0
        Above 0, each file written is reported on stderr.
    prewarm : bool, default=True
        Read each new map once in the parent so the page cache holds it.
    """

    def __init__(
        self,
        max_nbytes: int | None,
        temp_folder_resolver: Any,
        mmap_mode: str,
        unlink_on_gc_collect: bool,
        verbose: int = 0,
        prewarm: bool | str = True,
    ) -> None:
        self._max_nbytes = max_nbytes
        self._temp_folder_resolver = temp_folder_resolver
        self._mmap_mode = "r+" if mmap_mode == "w+" else mmap_mode
        self._unlink_on_gc_collect = unlink_on_gc_collect
        self.verbose = int(verbose)
        if prewarm == "auto":
            prewarm = not str(self._temp_folder).startswith(SYSTEM_SHARED_MEM_FS)
        self._prewarm = bool(prewarm)
        self._memmaped_arrays = _WeakArrayKeyMap()
        self._temporary_memmaped_filenames: set[str] = set()
        self._lock = threading.Lock()

    @property
    def _temp_folder(self) -> str:
        if callable(self._temp_folder_resolver):
            return str(self._temp_folder_resolver())
        return str(self._temp_folder_resolver)

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self._max_nbytes, None, self._mmap_mode, self._unlink_on_gc_collect)
        return _rebuild_forward_reducer, (args, self.verbose, self._prewarm)

    def __call__(self, a: Any) -> tuple[Any, tuple]:
        import numpy as np

        m = _get_backing_memmap(a)
        if isinstance(m, np.memmap):
            return _reduce_memmap_backed(a, m)
        if a.dtype.hasobject or self._max_nbytes is None or a.nbytes <= self._max_nbytes:
            return _pickled_copy(a)
        folder = self._temp_folder
        os.makedirs(folder, mode=FOLDER_PERMISSIONS, exist_ok=True)
        with self._lock:
            try:
                basename = self._memmaped_arrays.get(a)
            except KeyError:
                basename = f"{os.getpid()}-{id(threading.current_thread())}-{uuid.uuid4().hex}.dat"
                self._memmaped_arrays.set(a, basename)
            filename = os.path.join(folder, basename)
            new = filename not in self._temporary_memmaped_filenames or not os.path.exists(
                filename
            )
            if new:
                from joblib_rs._memmapping import _write_array

                order = _write_array(a, filename)
                os.chmod(filename, FILE_PERMISSIONS)
                self._temporary_memmaped_filenames.add(filename)
                if self.verbose > 0:
                    print(
                        f"[joblib-rs] memmapping {a.shape} {a.dtype} to {filename}",
                        file=sys.stderr,
                    )
                if self._prewarm:
                    _read_through(filename)
        order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
        return _load_dumped_array, (filename, a.dtype, a.shape, order, self._mmap_mode)


def _rebuild_forward_reducer(
    args: tuple, verbose: int, prewarm: bool
) -> ArrayMemmapForwardReducer:
    return ArrayMemmapForwardReducer(*args, verbose=verbose, prewarm=prewarm)


def get_memmapping_reducers(
    forward_reducers: dict[type, Any] | None = None,
    backward_reducers: dict[type, Any] | None = None,
    temp_folder_resolver: Any = None,
    max_nbytes: float | None = 1e6,
    mmap_mode: str = "r",
    verbose: int = 0,
    prewarm: bool | str = False,
    unlink_on_gc_collect: bool = True,
    **kwargs: Any,
) -> tuple[dict[type, Any], dict[type, Any]]:
    """``(forward, backward)`` reducer tables for a pool that shares large arrays.

    The given tables are copied and completed with :class:`ArrayMemmapForwardReducer` (for
    ``np.ndarray`` and ``np.memmap``, arguments) and :func:`reduce_array_memmap_backward`
    (results). Without numpy they are returned unchanged. Extra keywords are ignored, as
    joblib does (they are the backend's other arguments).
    """
    forward = dict(forward_reducers or {})
    backward = dict(backward_reducers or {})
    try:
        import numpy as np
    except ImportError:
        return forward, backward
    if max_nbytes is not None:
        max_nbytes = int(max_nbytes)
    reducer = ArrayMemmapForwardReducer(
        max_nbytes, temp_folder_resolver, mmap_mode, unlink_on_gc_collect, verbose, prewarm
    )
    forward.update({np.ndarray: reducer, np.memmap: reducer})
    backward.update(
        {np.ndarray: reduce_array_memmap_backward, np.memmap: reduce_array_memmap_backward}
    )
    return forward, backward


class TemporaryResourcesManager:
    """The temporary folders of a pool: one per context (e.g. a ``Parallel`` call).

    Parameters
    ----------
    temp_folder_root : str, optional
        Where folders are made (see :func:`_get_temp_dir`).
    context_id : str, optional
        The first context (a random one by default).
    """

    def __init__(self, temp_folder_root: str | None = None, context_id: str | None = None) -> None:
        self._temp_folder_root = temp_folder_root
        self._id = uuid.uuid4().hex
        self._cached_temp_folders: dict[str, str] = {}
        self._finalizers: dict[str, weakref.finalize] = {}
        self._current_context_id = ""
        self.set_current_context(uuid.uuid4().hex if context_id is None else context_id)

    def set_current_context(self, context_id: str) -> None:
        """Make ``context_id`` the context whose folder :meth:`resolve_temp_folder_name` gives."""
        self._current_context_id = context_id
        self.register_new_context(context_id)

    def register_new_context(self, context_id: str) -> None:
        """Choose the folder of ``context_id`` (made at once on /dev/shm, else when needed)."""
        if context_id in self._cached_temp_folders:
            return
        name = f"joblib_memmapping_folder_{os.getpid()}_{self._id}_{context_id}"
        folder, _ = _get_temp_dir(name, self._temp_folder_root)
        self.register_folder_finalizer(folder, context_id)
        self._cached_temp_folders[context_id] = folder

    def resolve_temp_folder_name(self) -> str:
        """The folder of the current context."""
        return self._cached_temp_folders[self._current_context_id]

    def register_folder_finalizer(self, pool_subfolder: str, context_id: str) -> None:
        """Delete ``pool_subfolder`` at the latest when the process exits."""
        self._finalizers[context_id] = weakref.finalize(self, shutil.rmtree, pool_subfolder, True)

    def _clean_temporary_resources(
        self, context_id: str | None = None, force: bool = False, allow_non_empty: bool = False
    ) -> None:
        """Delete the folder of ``context_id`` (of every context if None).

        A folder still holding files is kept unless ``force`` or ``allow_non_empty``.
        """
        ids = list(self._cached_temp_folders) if context_id is None else [context_id]
        for cid in ids:
            folder = self._cached_temp_folders.get(cid)
            if folder is None:
                continue
            try:
                empty = not os.listdir(folder)
            except FileNotFoundError:
                empty = True
            if force or allow_non_empty or empty:
                shutil.rmtree(folder, ignore_errors=True)
                finalizer = self._finalizers.pop(cid, None)
                if finalizer is not None:
                    finalizer.detach()
                if cid != self._current_context_id:
                    del self._cached_temp_folders[cid]

    def _unregister_context(self, context_id: str | None = None) -> None:
        """Forget ``context_id`` (the current one if None), deleting its folder."""
        cid = self._current_context_id if context_id is None else context_id
        self._clean_temporary_resources(cid, force=True)
        self._cached_temp_folders.pop(cid, None)
