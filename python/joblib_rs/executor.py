"""``joblib.executor``: the process executor whose tasks share large numpy arrays as memory maps.

::

    get_memmapping_executor(n_jobs, max_nbytes=..., mmap_mode=..., temp_folder=...)
        ─► MemmappingExecutor: a loky-style executor (``externals.loky``) on the Rust pool,
           its job reducers = ArrayMemmapForwardReducer (arrays > max_nbytes written once to
           the executor's temporary folder, memmaps sent by reference), its result reducers
           = reduce_array_memmap_backward (``joblib._memmapping_reducer``)
    terminate() ─► workers stopped, the temporary folder deleted

Each call returns a new executor object (its own reducers and temporary folder); the worker
processes are the process's reusable ones, as with loky's ``get_reusable_executor``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from joblib_rs._memmapping_reducer import TemporaryResourcesManager, get_memmapping_reducers
from joblib_rs.externals.loky.reusable_executor import ProcessPoolExecutor

__all__ = ["MemmappingExecutor", "get_memmapping_executor"]


def get_memmapping_executor(n_jobs: int, **kwargs: Any) -> MemmappingExecutor:
    """A :class:`MemmappingExecutor` with ``n_jobs`` workers (see
    :meth:`MemmappingExecutor.get_memmapping_executor` for the keywords)."""
    return MemmappingExecutor.get_memmapping_executor(n_jobs, **kwargs)


class MemmappingExecutor(ProcessPoolExecutor):
    """An executor whose large numpy arguments reach the workers as memory maps.

    Made by :meth:`get_memmapping_executor`; a :class:`concurrent.futures.Executor`.
    """

    _shared = True
    _temp_folder_manager: TemporaryResourcesManager
    _cached_temp_folder: str | None = None

    @classmethod
    def get_memmapping_executor(
        cls,
        n_jobs: int,
        timeout: float = 300,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple = (),
        env: dict[str, str] | None = None,
        temp_folder: str | None = None,
        context_id: str | None = None,
        **backend_args: Any,
    ) -> MemmappingExecutor:
        """An executor sharing arrays through a temporary folder.

        Parameters
        ----------
        n_jobs : int
            Number of worker processes.
        timeout : float, default=300
            Seconds idle workers stay alive.
        initializer, initargs, env
            As for ``get_reusable_executor``.
        temp_folder : str, optional
            Where the temporary folder is made (joblib's rules by default: $JOBLIB_TEMP_FOLDER,
            /dev/shm when it has room, the system's temporary folder).
        context_id : str, optional
            Name of the first context of the temporary folder manager.
        **backend_args
            ``max_nbytes`` (default 1e6), ``mmap_mode`` (default 'r'), ``verbose``,
            ``prewarm`` and extra reducer tables, as joblib's.
        """
        manager = TemporaryResourcesManager(temp_folder, context_id)
        job_reducers, result_reducers = get_memmapping_reducers(
            unlink_on_gc_collect=True,
            temp_folder_resolver=manager.resolve_temp_folder_name,
            **backend_args,
        )
        executor = cls(
            n_jobs,
            initializer=initializer,
            initargs=initargs,
            env=env,
            timeout=timeout,
            job_reducers=job_reducers,
            result_reducers=result_reducers,
        )
        executor._temp_folder_manager = manager
        return executor

    def terminate(self, kill_workers: bool = False) -> None:
        """Shut the executor down (killing the workers with ``kill_workers``) and delete its
        temporary folder."""
        self.shutdown(kill_workers=kill_workers)
        self._temp_folder_manager._clean_temporary_resources(force=True)

    @property
    def _temp_folder(self) -> str:
        """The temporary folder of the current context (kept once read, as joblib's)."""
        if self._cached_temp_folder is None:
            self._cached_temp_folder = self._temp_folder_manager.resolve_temp_folder_name()
        return self._cached_temp_folder


class _TestingMemmappingExecutor(MemmappingExecutor):
    """A :class:`MemmappingExecutor` with the ``multiprocessing.Pool`` methods joblib's tests
    use (``apply_async`` returning a future with ``get``, ``map`` returning a list)."""

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any]) -> Future:
        """Schedule ``func(*args)``; the future's ``get`` is its ``result``."""
        future = self.submit(func, *args)
        future.get = future.result  # type: ignore[attr-defined]
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any) -> Any:  # type: ignore[override]
        """``list(Executor.map(...))``."""
        results: Iterator[Any] = super().map(fn, *iterables, **kwargs)
        return list(results)
