"""The default ``'loky'`` backend: batches run on joblib-rs's Rust process pool.

::

    configure ─► _process_pool.acquire_pool(n, env, initializer, array policy)  (reused pool)
                 + a MemmappingContext for this call's large arguments
    submit(batch) ─► pool.submit(batch, reduce_array) ─► Future ─► callback(future)
    terminate ─► release_pool (idle reaper)        abort_everything ─► discard_pool (killed)

The pool's lifetime (reuse, idle shutdown, worker environment) is ``_process_pool``'s; this
module only maps joblib's backend contract onto it.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any

from joblib_rs._backends.base import DASK_DAEMON_REFUSAL, FallbackToBackend, inside_dask_worker
from joblib_rs._backends.multiprocessing_pool import MultiprocessingBackend
from joblib_rs._backends.sequential import SequentialBackend
from joblib_rs._process_pool import ProcessPool, acquire_pool, discard_pool, release_pool

__all__ = ["LokyBackend"]


class LokyBackend(MultiprocessingBackend):
    """The default process backend, ``'loky'``: joblib-rs's Rust process pool.

    Workers are fresh ``python -m joblib_rs._worker`` interpreters (never forks of the
    caller) started and driven by Rust threads (see ``docs/pool.md``); batches travel with
    cloudpickle when needed, so lambdas, closures and functions defined in ``__main__`` work.
    The pool is kept between calls with the same settings and shuts down after
    ``idle_worker_timeout`` seconds unused (default 300). A worker that dies fails the call
    with :class:`~joblib_rs.exceptions.TerminatedWorkerError` and the next call gets a fresh
    pool. ``inner_max_num_threads`` limits BLAS threads in the workers; ``initializer`` and
    ``initargs`` run in each worker at start-up.
    """

    supports_inner_max_num_threads = True
    supports_return_generator = True

    _POOL_OPTIONS = ("initializer", "initargs", "idle_worker_timeout")
    # Parallel passes the multiprocessing context to every backend, as joblib does; the Rust
    # pool starts fresh interpreters itself and has no use for it.
    _IGNORED_OPTIONS = (*MultiprocessingBackend._IGNORED_OPTIONS, "context")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: ProcessPool | None = None
        self._idle_timeout: float = 300

    def _nested_refusal(self) -> str | None:
        # A worker of our own pool may start a pool of its own, as loky workers can (an
        # explicit backend='loky' inside a task); daemonic stdlib workers cannot.
        if mp.current_process().daemon:
            if inside_dask_worker():
                return DASK_DAEMON_REFUSAL
            return (
                "Loky-backed parallel loops cannot be called in a multiprocessing, "
                "setting n_jobs=1"
            )
        if not (self.in_main_thread() or self.nesting_level == 0):
            return "Loky-backed parallel loops cannot be nested below threads, setting n_jobs=1"
        return None

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        idle_worker_timeout: float | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Get the worker processes ready (or fall back to sequential for one)."""
        if "timeout" in backend_kwargs:
            raise ValueError(
                "The 'timeout' parameter is not supported by the LokyBackend. "
                "Please use the `idle_worker_timeout` parameter instead."
            )
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        settings = self._settings(backend_kwargs)
        options = self._pool_options(settings)
        if idle_worker_timeout is None:
            idle_worker_timeout = options.get("idle_worker_timeout", 300)
        self._idle_timeout = idle_worker_timeout
        memmapping = self._memmapping = self._memmapping_context(settings)
        self.parallel = parallel
        self._pool = acquire_pool(
            n_jobs,
            self._prepare_worker_env(n_jobs),
            options.get("initializer"),
            tuple(options.get("initargs", ())),
            memmapping.max_nbytes,
            settings.get("temp_folder"),
            memmapping.mmap_mode,
        )
        return n_jobs

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None):
        """Send the batch to a worker; ``callback`` gets the future when it is done.

        Arrays of at least ``max_nbytes`` (arguments and results) travel through shared
        memory (see ``joblib_rs._memmapping``).
        """
        pool: Any = self._pool  # set by configure()
        memmapping: Any = self._memmapping
        future = pool.submit(func, reduce_array=memmapping.reduce_array)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: Any) -> Any:
        """The batch's results, or its exception raised (worker traceback as cause)."""
        return out.result()

    def terminate(self) -> None:
        """Keep the worker processes for the next call (shut down after the idle timeout);
        remove the call's shared-memory files."""
        if self._pool is not None:
            release_pool(self._pool, self._idle_timeout)
            self._pool = None
        self._drop_memmapping()
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Kill the workers (they may be busy with cancelled tasks); restart if still in use."""
        if self._pool is not None:
            discard_pool(self._pool)
            self._pool = None
        self._drop_memmapping()
        self.reset_batch_stats()
        if ensure_ready and self.parallel is not None:
            self.configure(
                n_jobs=self.parallel.n_jobs,
                parallel=self.parallel,
                **self.parallel._backend_kwargs,
            )
