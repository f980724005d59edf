"""``joblib.pool``: multiprocessing pools with custom pickling and shared-memory arrays.

::

    PicklingPool.apply_async(f, args) ─► _ReducingQueue.put: pickled with forward_reducers
                                         ─► worker: get() ─► f(*args) ─► put(): pickled with
                                            backward_reducers ─► parent
    MemmappingPool: forward reducer for numpy arrays ≥ max_nbytes: written once per array to
                    the pool's temp folder, rebuilt in the worker as np.memmap(mmap_mode)

The ``'multiprocessing'`` backend builds its pool as a ``MemmappingPool``, as joblib's does, so
third-party backends build on these (ray's joblib backend swaps ``PicklingPool``'s base for
its own ``Pool`` and lets ``MultiprocessingBackend`` instantiate ``MemmappingPool``).
joblib-rs's own ``'loky'`` backend does not use them: its Rust pool has its own transport.
"""

from __future__ import annotations

import copyreg
import io
import multiprocessing as mp
import os
import shutil
import tempfile
import threading
from multiprocessing.pool import Pool
from multiprocessing.queues import SimpleQueue
from multiprocessing.reduction import ForkingPickler
from typing import Any

__all__ = ["MemmappingPool", "PicklingPool"]


def _dumps(obj: Any, reducers: dict[type, Any]) -> bytes:
    buf = io.BytesIO()
    pickler = ForkingPickler(buf, -1)
    if reducers:
        table = copyreg.dispatch_table.copy()
        table.update(ForkingPickler._extra_reducers)  # type: ignore[attr-defined]
        table.update(reducers)
        pickler.dispatch_table = table
    pickler.dump(obj)
    return buf.getvalue()


class _ReducingQueue(SimpleQueue):  # type: ignore[type-arg]
    """A pool queue whose items are pickled with given reducers (in both processes)."""

    def __init__(self, context: Any, reducers: dict[type, Any] | None) -> None:
        super().__init__(ctx=context)
        self._reducers = dict(reducers or {})

    def __getstate__(self) -> tuple[Any, ...]:
        return (*super().__getstate__(), self._reducers)  # type: ignore[misc]

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        *base, self._reducers = state
        super().__setstate__(tuple(base))  # type: ignore[misc]

    def _send(self, obj: Any) -> None:
        self._writer.send_bytes(_dumps(obj, self._reducers))  # type: ignore[attr-defined]

    def _recv(self) -> Any:
        return ForkingPickler.loads(self._reader.recv_bytes())  # type: ignore[attr-defined]

    def put(self, obj: Any) -> None:
        data = _dumps(obj, self._reducers)
        if self._wlock is None:  # type: ignore[attr-defined]
            self._writer.send_bytes(data)  # type: ignore[attr-defined]
        else:
            with self._wlock:  # type: ignore[attr-defined]
                self._writer.send_bytes(data)  # type: ignore[attr-defined]

    def get(self) -> Any:
        with self._rlock:  # type: ignore[attr-defined]
            data = self._reader.recv_bytes()  # type: ignore[attr-defined]
        return ForkingPickler.loads(data)


class PicklingPool(Pool):
    """A :class:`multiprocessing.pool.Pool` whose tasks and results use custom reducers.

    Parameters
    ----------
    processes : int, optional
        Number of worker processes (default: ``os.cpu_count()``).
    forward_reducers : dict, optional
        ``{type: reducer}`` used to pickle what goes to the workers; a reducer returns
        ``(callable, args)`` as ``__reduce__`` does.
    backward_reducers : dict, optional
        The same for what comes back from the workers.
    **kwargs
        Passed to :class:`multiprocessing.pool.Pool` (``initializer``, ``initargs``,
        ``maxtasksperchild``, ``context``).
    """

    def __init__(
        self,
        processes: int | None = None,
        forward_reducers: dict[type, Any] | None = None,
        backward_reducers: dict[type, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._forward_reducers = dict(forward_reducers or {})
        self._backward_reducers = dict(backward_reducers or {})
        super().__init__(processes=processes, **kwargs)

    def _setup_queues(self) -> None:
        context = getattr(self, "_ctx", mp)
        self._inqueue = _ReducingQueue(context, self._forward_reducers)
        self._outqueue = _ReducingQueue(context, self._backward_reducers)
        self._quick_put = self._inqueue._send
        self._quick_get = self._outqueue._recv


def _rebuild_memmap(path: str, dtype: Any, shape: tuple[int, ...], order: str, mode: str) -> Any:
    import numpy as np

    if not shape or 0 in shape:
        return np.empty(shape, dtype=dtype, order=order)  # type: ignore[call-overload]
    return np.memmap(path, dtype=dtype, mode=mode, shape=shape, order=order)


class _ArrayToMemmap:
    """Forward reducer of numpy arrays: large ones travel as a memory map of a file."""

    def __init__(self, folder: str, max_nbytes: int | None, mmap_mode: str) -> None:
        self.folder = folder
        self.max_nbytes = max_nbytes
        self.mmap_mode = mmap_mode
        self._written: dict[int, tuple[Any, str]] = {}
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ArrayToMemmap, (self.folder, self.max_nbytes, self.mmap_mode))

    def __call__(self, array: Any) -> tuple[Any, ...]:
        import numpy as np

        if self.max_nbytes is None or array.nbytes < self.max_nbytes or array.dtype.hasobject:
            return array.__reduce_ex__(5)  # type: ignore[no-any-return]
        order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        filename = getattr(array, "filename", None)
        if isinstance(array, np.memmap) and filename and array.offset == 0:
            if array.flags.c_contiguous or array.flags.f_contiguous:
                return _rebuild_memmap, (filename, array.dtype, array.shape, order, self.mmap_mode)
        with self._lock:
            known = self._written.get(id(array))
            if known is None or known[0] is not array:
                path = os.path.join(self.folder, f"array-{os.getpid()}-{len(self._written)}.dat")
                np.asarray(array).ravel(order="K" if order == "C" else "F").tofile(path)
                known = self._written[id(array)] = (array, path)
        return _rebuild_memmap, (known[1], array.dtype, array.shape, order, self.mmap_mode)


class MemmappingPool(PicklingPool):
    """A :class:`PicklingPool` that sends large numpy arrays to workers as memory maps.

    Arrays of at least ``max_nbytes`` bytes are written once to a folder under
    ``temp_folder`` (joblib's rules: ``$JOBLIB_TEMP_FOLDER``, ``/dev/shm``, the system's
    temporary folder) and reach the workers as ``numpy.memmap`` opened with ``mmap_mode``;
    arrays that already are memory maps of a whole file travel by reference. The folder is
    removed by :meth:`terminate` (and :meth:`close` + :meth:`join`).

    Parameters
    ----------
    processes : int, optional
        Number of worker processes.
    temp_folder : str, optional
        Where the folder of memory-mapped arrays is made.
    max_nbytes : int or None, default=1e6
        Arrays of at least this many bytes are memory-mapped; None disables it (and no
        folder is made).
    mmap_mode : {'r+', 'r', 'w+', 'c'}, default='r'
        How workers open the arrays.
    forward_reducers, backward_reducers : dict, optional
        Extra reducers, as for :class:`PicklingPool`.
    verbose : int, default=0
        Unused (kept for joblib's signature).
    prewarm : bool, default=False
        Unused: the arrays are written, not prefetched (kept for joblib's signature).
    **kwargs
        Passed to :class:`multiprocessing.pool.Pool`.
    """

    def __init__(
        self,
        processes: int | None = None,
        temp_folder: str | None = None,
        max_nbytes: float | None = 1e6,
        mmap_mode: str = "r",
        forward_reducers: dict[type, Any] | None = None,
        backward_reducers: dict[type, Any] | None = None,
        verbose: int = 0,
        prewarm: bool = False,
        **kwargs: Any,
    ) -> None:
        forward = dict(forward_reducers or {})
        self._temp_folder: str | None = None
        np = None
        if max_nbytes is not None:
            try:
                import numpy as np
            except ImportError:
                np = None
        if np is not None and max_nbytes is not None:
            from joblib_rs._memmapping import resolve_temp_folder

            base = resolve_temp_folder(temp_folder)
            os.makedirs(base, exist_ok=True)
            self._temp_folder = tempfile.mkdtemp(prefix=f"joblib_rs_pool_{os.getpid()}_", dir=base)
            reducer = _ArrayToMemmap(self._temp_folder, int(max_nbytes), mmap_mode)
            forward.setdefault(np.ndarray, reducer)
            forward.setdefault(np.memmap, reducer)
        try:
            super().__init__(processes, forward, backward_reducers, **kwargs)
        except BaseException:
            self._remove_temp_folder()
            raise

    def _remove_temp_folder(self) -> None:
        if self._temp_folder is not None:
            shutil.rmtree(self._temp_folder, ignore_errors=True)

    def terminate(self) -> None:
        """Stop the workers now and remove the folder of memory-mapped arrays."""
        try:
            super().terminate()
        finally:
            self._remove_temp_folder()

    def join(self) -> None:
        """Wait for the workers, then remove the folder of memory-mapped arrays."""
        super().join()
        self._remove_temp_folder()
