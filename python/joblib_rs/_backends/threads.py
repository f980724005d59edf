"""The ``'threading'`` backend: batches run on worker threads of this process.

::

    Parallel ── submit(batch, callback) ──► ThreadLease (``_threads``: n threads leased for the
                                            call, given back at its end)
       ▲                                        │ a worker thread runs the batch
       └──────── callback((ok, value)) ◄────────┘

Threads are leased lazily, at the first submit, and returned by ``terminate``; an aborted
lease is closed (its queued batches dropped, its threads retired after their current task).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from joblib_rs._backends.base import (
    MULTIPROCESSING_ENABLED,
    NESTED_DEFAULTS,
    FallbackToBackend,
    MeasuredBatchingMixin,
    ParallelBackendBase,
    check_n_jobs,
    resolve_n_jobs,
)
from joblib_rs._backends.sequential import SequentialBackend
from joblib_rs._threads import ThreadLease, lease_threads

__all__ = ["ThreadingBackend"]


class ThreadingBackend(MeasuredBatchingMixin, ParallelBackendBase):
    """Runs batches on worker threads of this process.

    Very low overhead, but pure-Python tasks are serialised by the GIL; best for code that
    releases it (NumPy, I/O, compiled extensions). Unlike joblib, tasks are batched
    automatically (``batch_size='auto'``), with a target batch duration of a few
    milliseconds: dispatching 100k tiny tasks costs a few thousand queue operations instead of
    100k. Worker threads are reused across calls of the same size.
    """

    supports_retrieve_callback = True
    uses_threads = True
    supports_sharedmem = True

    # Threads dispatch in microseconds: short batches keep the load balanced, and tasks of
    # a couple of milliseconds or more are dispatched one by one, as joblib does.
    MIN_IDEAL_BATCH_DURATION = 0.002
    MAX_IDEAL_BATCH_DURATION = 0.05
    # joblib's threading backend has no batching to report: keep its verbose output.
    _report_batch_size_changes = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lease: ThreadLease | None = None
        self._n_jobs = 1

    def effective_n_jobs(self, n_jobs: int) -> int:
        """``n_jobs`` with negative values counted back from :func:`cpu_count`; 1 when
        ``JOBLIB_MULTIPROCESSING=0`` (as joblib)."""
        check_n_jobs(n_jobs)
        if n_jobs is None or not MULTIPROCESSING_ENABLED:
            return 1
        return resolve_n_jobs(n_jobs)

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Lease ``n_jobs`` worker threads (or fall back to sequential for one)."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        if self._lease is not None and self._lease.n_threads != n_jobs:
            self._lease.release()
            self._lease = None
        self._n_jobs = n_jobs
        return n_jobs

    def _get_lease(self) -> ThreadLease:
        # Threads are leased lazily, at the first submit, as joblib's pool is.
        if self._lease is None:
            self._lease = lease_threads(self._n_jobs)
        return self._lease

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None):
        """Queue ``func`` on the leased threads."""
        return self._get_lease().submit(func, callback)

    def retrieve_result_callback(self, out: tuple[bool, Any]) -> Any:
        """Return the batch's results or raise its exception (with the worker traceback)."""
        ok, value = out
        if ok:
            return value
        raise value

    def retrieve_result(self, out: Any, timeout: float | None = None) -> Any:
        """Wait for the job :meth:`submit` returned (subclasses without the callback)."""
        return out.get(timeout=timeout if self.supports_timeout else None)

    def terminate(self) -> None:
        """Give the threads back for the next call."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Drop queued batches; running ones finish on threads that are then retired."""
        if self._lease is not None:
            self._lease.close()
            self._lease = None


NESTED_DEFAULTS["threads"] = ThreadingBackend
