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
        from joblib_rs._memmapping_reducer import (
            TemporaryResourcesManager,
            get_memmapping_reducers,
        )

        self._temp_folder_manager = TemporaryResourcesManager(temp_folder)
        # The folder's name is chosen now; it is made when a first array is written (never
        # with max_nbytes=None, which the 'multiprocessing' backend passes).
        self._temp_folder: str | None = (
            None if max_nbytes is None else self._temp_folder_manager.resolve_temp_folder_name()
        )
        forward, backward = get_memmapping_reducers(
            forward_reducers,
            backward_reducers,
            temp_folder_resolver=self._temp_folder_manager.resolve_temp_folder_name,
            max_nbytes=max_nbytes,
            mmap_mode=mmap_mode,
            verbose=verbose,
            prewarm=prewarm,
            unlink_on_gc_collect=False,
        )
        try:
            super().__init__(processes, forward, backward, **kwargs)
        except BaseException:
            self._remove_temp_folder()
            raise

    def _remove_temp_folder(self) -> None:
        self._temp_folder_manager._clean_temporary_resources(force=True)

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
