"""Large numpy arrays to and from the process pool through shared memory.

::

    parent                                   temp folder (/dev/shm/...)           worker
    ──────                                   ──────────────────────────           ──────
    argument >= max_nbytes ── tofile ──────► arg-<id>.dat (once per call) ──► np.memmap(mmap_mode)
    np.memmap argument ─────────── reference only (file, offset, strides) ──► np.memmap
    result array ◄── mmap (copy on write) ◄─ res-<pid>-<n>.dat ◄── write ── result >= max_nbytes
      array freed ── rename ──────────────► recycled/ ── claimed, rewritten ──► next result

Arguments above ``max_nbytes`` are written once per call into a temporary folder (on
``/dev/shm`` when it has room) and reach the workers as ``np.memmap`` opened with ``mmap_mode``;
arrays already backed by a memory-mapped file travel as a reference. Results above the
threshold are written by the worker into the same folder and mapped by the parent (copy on
write: the caller gets a writable array whose changes never reach the file), so a big result
never crosses the pipe. When the caller lets go of that array, its file is moved to
``recycled/`` (up to :data:`RECYCLE_MAX_BYTES`) and a worker writes its next large result into
it: filling memory the kernel already gave to ``/dev/shm`` costs half of allocating it again.
The folder is removed when the call ends, whatever the outcome.
"""

from __future__ import annotations

import atexit
import itertools
import mmap
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import weakref
from typing import Any

__all__ = ["MemmappingContext", "resolve_temp_folder"]

#: /dev/shm is used only when it has at least this much room, as joblib does.
SHM_MIN_FREE = 2_000_000_000
#: Bytes of freed result files kept per folder for the next results (also at most an eighth of
#: the file system); the rest are deleted at once. The folder goes with its pool.
RECYCLE_MAX_BYTES = 2 << 30
RECYCLED = "recycled"
SHM_PATH = "/dev/shm"

_live_contexts: set[MemmappingContext] = set()
# Folder names: pid, a random token (pids are reused across reboots and containers) and a
# counter; cheaper than a uuid per call.
_TOKEN = uuid.uuid4().hex[:12]
_context_counter = itertools.count()
_live_lock = threading.Lock()


def resolve_temp_folder(temp_folder: str | None) -> str:
    """The base folder for memory-mapped data, by joblib's rules.

    ``temp_folder`` if given, else ``$JOBLIB_TEMP_FOLDER``, else ``/dev/shm`` when it exists,
    is writable and has room, else the system's temporary folder.
    """
    if temp_folder:
        return os.path.abspath(os.path.expanduser(temp_folder))
    env = os.environ.get("JOBLIB_TEMP_FOLDER")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    # Three system calls per Parallel call add up on small calls: the choice is kept for a
    # second (/dev/shm's free space does not swing by gigabytes faster than that).
    now = time.monotonic()
    chosen, until = _default_choice
    if chosen is not None and now < until:
        return chosen
    chosen = _choose_default_folder()
    _default_choice[:] = [chosen, now + 1.0]
    return chosen


_default_choice: list[Any] = [None, 0.0]


def _choose_default_folder() -> str:
    if os.path.isdir(SHM_PATH) and os.access(SHM_PATH, os.W_OK):
        try:
            stats = os.statvfs(SHM_PATH)
            if stats.f_bavail * stats.f_frsize >= SHM_MIN_FREE:
                return SHM_PATH
        except OSError:
            pass
    return tempfile.gettempdir()


def _numpy() -> Any:
    return sys.modules.get("numpy")


def _backing_memmap(array: Any) -> Any:
    """The ``np.memmap`` whose file holds ``array``'s memory, or None."""
    np = _numpy()
    current = array
    while current is not None:
        if isinstance(current, np.memmap) and getattr(current, "_mmap", None) is not None:
            return current
        current = getattr(current, "base", None)
    return None


def _dtype_spec(dtype: Any) -> Any:
    # Structured dtypes need their full description; others their short string.
    return dtype.descr if dtype.fields else dtype.str


def _address(array: Any) -> int:
    return array.__array_interface__["data"][0]


def _write_array(array: Any, path: Any) -> str:
    """Writes the array's bytes to ``path`` (or an open file, from its start); returns the
    order they are in ('C' or 'F').

    A Fortran-ordered array is written as is (no transposing copy); anything else in C order
    (``tofile`` gathers strided arrays)."""
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        array.T.tofile(path)
        return "F"
    array.tofile(path)
    return "C"


def _memmap_reference(array: Any, backing: Any) -> tuple:
    """Reduction of an array living in ``backing``'s file: the file, offset and layout only."""
    np = _numpy()
    mode = {"w+": "r+", "r+": "r+", "readwrite": "r+", "write": "r+"}.get(
        backing.mode, backing.mode
    )
    # File offset of the array's first byte: where numpy's mapping starts in the file
    # (the requested offset rounded down to the allocation granularity), plus the
    # distance from the mapping's start to the data.
    map_start = backing.offset - backing.offset % mmap.ALLOCATIONGRANULARITY
    map_address = _address(np.frombuffer(backing._mmap, dtype=np.uint8))
    offset = map_start + (_address(array) - map_address)
    spec = _dtype_spec(array.dtype)
    if array.flags.c_contiguous:
        return open_memmap, (backing.filename, spec, mode, offset, array.shape, None, "C")
    if array.flags.f_contiguous:
        return open_memmap, (backing.filename, spec, mode, offset, array.shape, None, "F")
    return open_memmap, (backing.filename, spec, mode, offset, array.shape, array.strides, "C")


def open_memmap(
    filename: str,
    dtype: Any,
    mode: str,
    offset: int,
    shape: tuple,
    strides: tuple | None,
    order: str,
) -> Any:
    """Rebuilds an array argument as an ``np.memmap`` in the worker."""
    np = __import__("numpy")
    if strides is None:
        return np.memmap(filename, dtype=dtype, mode=mode, offset=offset, shape=shape, order=order)
    # A strided view: map the bytes it spans, then lay the view over them.
    dtype = np.dtype(dtype)
    low = sum((n - 1) * s for n, s in zip(shape, strides, strict=True) if s < 0)
    high = sum((n - 1) * s for n, s in zip(shape, strides, strict=True) if s > 0)
    span = high - low + dtype.itemsize
    raw = np.memmap(filename, dtype=np.uint8, mode=mode, offset=offset + low, shape=(span,))
    view = np.ndarray(shape, dtype=dtype, buffer=raw, offset=-low, strides=strides)
    return view.view(np.memmap)


def attach_result(filename: str, dtype: Any, shape: tuple, order: str) -> Any:
    """Maps a result array written by a worker (copy on write); the file is recycled when the
    array is freed (:func:`_recycle_result_file`)."""
    np = __import__("numpy")
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    try:
        with open(filename, "rb") as f:
            buffer = mmap.mmap(f.fileno(), nbytes, access=mmap.ACCESS_COPY) if nbytes else None
    except BaseException:
        _unlink(filename)
        raise
    if buffer is None:
        _unlink(filename)
        return np.empty(shape, dtype=dtype, order=order)
    # The file's pages stay alive with the mapping; after it, they serve the next result.
    finalizer = weakref.finalize(buffer, _recycle_result_file, filename, _forks[0])
    finalizer.atexit = False  # the folder's own cleanup removes it at exit
    return np.ndarray(shape, dtype=dtype, buffer=buffer, order=order)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# Forks of this process so far: a child made after a result was mapped maps it too, and may
# still read it after the parent let go, so such a file is deleted, never rewritten.
_forks = [0]


def _count_fork() -> None:
    _forks[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_count_fork)


def _recycle_result_file(path: str, forks_at_attach: int) -> None:
    """Moves a result file nobody maps any more to ``recycled/``, or deletes it when that
    holds enough already (or is gone with its pool, or a fork may still map it)."""
    recycled = os.path.join(os.path.dirname(path), RECYCLED)
    try:
        if forks_at_attach != _forks[0]:
            raise OSError("mapped before a fork")
        size = os.stat(path).st_size
        kept = sum(entry.stat().st_size for entry in os.scandir(recycled))
        stats = os.statvfs(recycled)
        limit = min(RECYCLE_MAX_BYTES, stats.f_blocks * stats.f_frsize // 8)
        if kept + size <= limit:
            os.rename(path, os.path.join(recycled, os.path.basename(path)))
            return
    except OSError:
        pass
    _unlink(path)


def _claim_recycled_file(folder: str, nbytes: int, path: str) -> bool:
    """Moves a recycled file of ``nbytes`` to twice that (the smallest) to ``path``; False if
    none (a much bigger file is kept for a result of its size).

    The rename is the claim: another worker taking the same file first makes it fail, and
    the next candidate is tried.
    """
    try:
        entries = [(e.stat().st_size, e.path) for e in os.scandir(os.path.join(folder, RECYCLED))]
    except OSError:
        return False
    for size, candidate in sorted(entries):
        if size < nbytes:
            continue
        if size > 2 * nbytes:
            break
        try:
            os.rename(candidate, path)
        except OSError:
            continue
        return True
    return False


class MemmappingContext:
    """Shared-memory transport of large arrays for one ``Parallel`` call.

    Parameters
    ----------
    temp_folder : str or None
        Base folder (see :func:`resolve_temp_folder`).
    max_nbytes : int or None
        Arrays of at least this many bytes go through shared memory; None disables it for
        arguments (arrays already backed by a file still travel as references).
    mmap_mode : {'r+', 'r', 'w+', 'c'}
        Mode in which workers open the arguments written by the parent.
    """

    def __init__(
        self, temp_folder: str | None, max_nbytes: int | None, mmap_mode: str | None
    ) -> None:
        self.max_nbytes = max_nbytes
        self.mmap_mode = mmap_mode or "r"
        self._temp_folder = temp_folder
        self._folder: str | None = None
        self._written: dict[int, tuple[Any, tuple]] = {}
        self._lock = threading.Lock()
        with _live_lock:
            _live_contexts.add(self)

    @property
    def folder(self) -> str:
        """This call's folder; chosen on first use, so a call that shares no array costs no
        file-system call at all."""
        if self._folder is None:
            base = resolve_temp_folder(self._temp_folder)
            self._folder = os.path.join(
                base, f"joblib_rs_memmapping_{os.getpid()}_{_TOKEN}_{next(_context_counter)}"
            )
        return self._folder

    # ----------------------------------------------------------------- parent: arguments
    def reduce_array(self, array: Any) -> Any:
        """A pickle reduction for ``array``, or NotImplemented to pickle it normally."""
        np = _numpy()
        if type(array) not in (np.ndarray, np.memmap) or array.dtype.hasobject:
            return NotImplemented
        backing = _backing_memmap(array)
        if backing is not None:
            return _memmap_reference(array, backing)
        if self.max_nbytes is None or array.nbytes < self.max_nbytes:
            return NotImplemented
        with self._lock:
            known = self._written.get(id(array))
            if known is None:
                known = (array, self._dump(array))
                self._written[id(array)] = known
        return open_memmap, known[1]

    def _dump(self, array: Any) -> tuple:
        if not os.path.isdir(self.folder):
            reap_stale_folders(os.path.dirname(self.folder))
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"arg-{len(self._written)}-{uuid.uuid4().hex}.dat")
        order = _write_array(array, path)
        # 'w+' would truncate the file in the worker: it means read-write access there.
        mode = "r+" if self.mmap_mode == "w+" else self.mmap_mode
        return (path, _dtype_spec(array.dtype), mode, 0, array.shape, None, order)

    def cleanup(self) -> None:
        """Removes every file of this call."""
        with self._lock:
            self._written.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        with _live_lock:
            _live_contexts.discard(self)


_result_counter = itertools.count()


def _share_result_array(array: Any, folder: str) -> tuple[Any, ...]:
    """Writes a result array into the call's folder (into a recycled file when there is one
    big enough); the reduction that maps it back."""
    path = os.path.join(folder, f"res-{os.getpid()}-{next(_result_counter)}.dat")
    if _claim_recycled_file(folder, array.nbytes, path):
        with open(path, "r+b", buffering=0) as f:
            # Overwrites pages that are already there; a larger file gives back its tail.
            order = _write_array(array, f)
            f.truncate(array.nbytes)
    else:
        os.makedirs(os.path.join(folder, RECYCLED), exist_ok=True)
        order = _write_array(array, path)
    return attach_result, (path, _dtype_spec(array.dtype), array.shape, order)


def reduce_result_array(array: Any, folder: str, max_nbytes: int) -> Any:
    """Reduction of a result array in a worker: a file in ``folder`` when at least
    ``max_nbytes``, a reference when backed by a file, else ``NotImplemented``."""
    np = _numpy()
    if type(array) is np.memmap:
        backing = _backing_memmap(array)
        if backing is not None:
            return _memmap_reference(array, backing)
    if type(array) is np.ndarray and array.nbytes >= max_nbytes and not array.dtype.hasobject:
        return _share_result_array(array, folder)
    return NotImplemented


_reaped_bases: set[str] = set()
_FOLDER_PREFIX = "joblib_rs_memmapping_"


def reap_stale_folders(base: str) -> int:
    """Remove the shared-memory folders that parents killed before their cleanup left in
    ``base`` (``joblib_rs_memmapping_<pid>_...`` of a process that no longer exists, or whose
    id now belongs to a process started after the folder was last written). Runs once per
    folder ``base`` per process; errors are ignored. Returns the number of folders removed.
    """
    if base in _reaped_bases:
        return 0
    _reaped_bases.add(base)
    from joblib_rs import _core

    removed = 0
    try:
        names = os.listdir(base)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(_FOLDER_PREFIX):
            continue
        pid_text = name[len(_FOLDER_PREFIX) :].split("_", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        path = os.path.join(base, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        if _core.writer_gone(int(pid_text), st.st_mtime):
            shutil.rmtree(path, ignore_errors=True)
            removed += not os.path.exists(path)
    return removed


def _cleanup_all() -> None:
    with _live_lock:
        contexts = list(_live_contexts)
    for context in contexts:
        context.cleanup()


atexit.register(_cleanup_all)
