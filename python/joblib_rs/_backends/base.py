"""What every backend is: the base class, its mixins and the errors of the backend contract.

A backend runs the batches of tasks that :class:`joblib_rs.Parallel` hands it. The contract is
joblib's, so third-party backends written for joblib work unchanged::

    Parallel ── configure(n_jobs, parallel, prefer, require, **kw) ──► backend -> n workers
       │        (raise FallbackToBackend(other) to hand the call over)
       ├──────── submit(batch, callback) ─────────────────────────────► future-like
       │                                          ... batch done ──► callback(out)
       ├──────── retrieve_result_callback(out) ──► results, or the batch's exception
       └──────── start_call / stop_call / terminate / abort_everything (lifecycle)

``compute_batch_size`` / ``batch_completed`` are the batching policy (:class:`AutoBatchingMixin`
adapts the size to a target batch duration); ``get_nested_backend`` says what a ``Parallel``
call inside a worker uses. This module is the bottom layer of ``_backends``: it imports no
other backend module (the builtin nested defaults register themselves in
:data:`NESTED_DEFAULTS`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import threading
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

from joblib_rs._cpu import cpu_count
from joblib_rs._multiprocessing_helpers import mp
from joblib_rs._process_pool import TBB_ENABLE_IPC_VAR, THREAD_LIMIT_VARS, worker_environment

__all__ = [
    "MULTIPROCESSING_ENABLED",
    "AutoBatchingMixin",
    "FallbackToBackend",
    "MeasuredBatchingMixin",
    "ParallelBackendBase",
    "PoolManagerMixin",
    "TimeoutError",
    "check_n_jobs",
    "inside_dask_worker",
    "resolve_n_jobs",
]

#: False when ``JOBLIB_MULTIPROCESSING=0`` is set or the platform lacks working semaphores
#: (``_multiprocessing_helpers.mp`` is None): every parallel backend then runs sequentially,
#: as in joblib (decided once, at import).
MULTIPROCESSING_ENABLED = mp is not None

#: The builtin backends of nested calls, keyed ``'threads'`` (first nesting level) and
#: ``'sequential'`` (below); their modules fill it in when ``_backends`` is imported.
NESTED_DEFAULTS: dict[str, Callable[..., ParallelBackendBase]] = {}


#: Why a process backend runs sequentially inside a daemonic dask worker, and the way out.
DASK_DAEMON_REFUSAL = (
    "Inside a Dask worker with daemon=True, setting n_jobs=1.\nPossible work-arounds:\n"
    "- dask.config.set({'distributed.worker.daemon': False})\n"
    "- set the environment variable DASK_DISTRIBUTED__WORKER__DAEMON=False\n"
    "before creating your Dask cluster."
)


def inside_dask_worker() -> bool:
    """Whether this code runs in a task of a ``dask.distributed`` worker (only checked when
    ``distributed`` is already imported: a worker has imported it)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except (ValueError, AttributeError):
        return False
    return True


class TimeoutError(multiprocessing.TimeoutError, TimeoutError):
    """A task did not complete within ``Parallel(timeout=...)``.

    Subclass of both :class:`multiprocessing.TimeoutError` (what joblib raises) and the builtin
    :class:`TimeoutError`, so ``except`` clauses written for either catch it.
    """


class FallbackToBackend(Exception):
    """Raised by ``configure`` to hand the call over to ``backend``."""

    def __init__(self, backend: ParallelBackendBase) -> None:
        super().__init__(backend)
        self.backend = backend


def check_n_jobs(n_jobs: int | None) -> None:
    """Reject ``n_jobs=0``, as joblib does."""
    if n_jobs == 0:
        raise ValueError("n_jobs == 0 in Parallel has no meaning")


def resolve_n_jobs(n_jobs: int) -> int:
    """Negative ``n_jobs`` counted back from :func:`cpu_count` (-1: all CPUs)."""
    if n_jobs < 0:
        return max(cpu_count() + 1 + n_jobs, 1)
    return n_jobs


class ParallelBackendBase(metaclass=ABCMeta):
    """Base class of every backend; subclass it to write your own.

    Parameters
    ----------
    nesting_level : int or None, default=None
        How deep in nested ``Parallel`` calls this backend runs (0 at top level). None means
        "take it from the active configuration".
    inner_max_num_threads : int or None, default=None
        Limit of threads for BLAS/OpenMP thread pools in the workers, for backends that
        support it (``supports_inner_max_num_threads``).
    **backend_kwargs : dict
        Kept in ``self.backend_kwargs`` for the backend's own use.

    Notes
    -----
    Set ``supports_retrieve_callback = True`` and implement :meth:`retrieve_result_callback`
    so results are collected as soon as the callback fires; this also enables ``timeout`` and
    ``return_as='generator'``. Otherwise :meth:`retrieve_result` is called in the caller's
    thread with the object :meth:`submit` returned.
    """

    default_n_jobs = 1
    supports_inner_max_num_threads = False
    supports_retrieve_callback = False
    nesting_level: int | None = None

    MAX_NUM_THREADS_VARS = THREAD_LIMIT_VARS
    TBB_ENABLE_IPC_VAR = TBB_ENABLE_IPC_VAR

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **backend_kwargs: Any,
    ) -> None:
        super().__init__()
        self.nesting_level = nesting_level
        self.inner_max_num_threads = inner_max_num_threads
        self.backend_kwargs = backend_kwargs
        self.parallel = None

    @property
    def supports_return_generator(self) -> bool:
        """Whether ``return_as='generator'`` works: needs the retrieve callback."""
        return self.supports_retrieve_callback

    @property
    def supports_timeout(self) -> bool:
        """Whether ``Parallel(timeout=...)`` is honoured."""
        return self.supports_retrieve_callback

    @abstractmethod
    def effective_n_jobs(self, n_jobs: int) -> int:
        """Number of workers that can really run at once for a request of ``n_jobs``.

        ``-1`` means all CPUs, ``-2`` all but one, and so on; ``0`` is an error.
        """

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None):
        """Schedule ``func()`` and return a future-like object.

        ``callback`` must be called with the backend's outcome object once ``func`` is done,
        after success or failure alike.
        """
        warnings.warn(
            "`apply_async` is deprecated, implement and use `submit` instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.apply_async(func, callback)

    def apply_async(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None):
        """Deprecated spelling of :meth:`submit`."""
        raise NotImplementedError(f"{type(self).__name__} must implement `submit`.")

    def retrieve_result_callback(self, out: Any) -> Any:
        """Turn the object given to the callback into the results, or raise the error."""
        return out

    def retrieve_result(self, out: Any, timeout: float | None = None) -> Any:
        """Wait for and return the result of ``out`` (the object :meth:`submit` returned).

        Used only when ``supports_retrieve_callback`` is False.
        """
        if self.supports_timeout:
            return out.get(timeout=timeout)
        return out.get()

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Prepare the workers for a call and return how many there are.

        The signature is joblib 1.6's: subclasses may call ``super().configure(n_jobs,
        parallel, prefer, require, **kwargs)``; unknown keywords are accepted and ignored.
        """
        self.parallel = parallel
        return self.effective_n_jobs(n_jobs)

    def start_call(self) -> None:  # noqa: B027 - optional hook
        """Called at the beginning of each ``Parallel`` call."""

    def stop_call(self) -> None:  # noqa: B027 - optional hook
        """Called at the end of each ``Parallel`` call."""

    def terminate(self) -> None:  # noqa: B027 - optional hook
        """Release the workers (or hand them back for reuse)."""

    def compute_batch_size(self) -> int:
        """Number of tasks to put in the next batch."""
        return 1

    def batch_completed(self, batch_size: int, duration: float) -> None:  # noqa: B027 - optional hook
        """Told how long a batch of ``batch_size`` tasks took, dispatch to completion."""

    def abort_everything(self, ensure_ready: bool = True) -> None:  # noqa: B027 - optional hook
        """Drop pending and, when possible, running tasks after an error or interrupt.

        With ``ensure_ready`` the backend must stay usable for further calls (a ``with
        Parallel(...)`` block continues); without it, it may stay closed.
        """

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """Backend and ``n_jobs`` for ``Parallel`` calls made inside the workers.

        Threads at the first nesting level, sequential below, so nesting never multiplies
        the number of busy threads without bound.
        """
        nesting_level = (self.nesting_level or 0) + 1
        kind = "threads" if nesting_level == 1 else "sequential"
        return NESTED_DEFAULTS[kind](nesting_level=nesting_level), None

    @contextlib.contextmanager
    def retrieval_context(self) -> Iterator[None]:
        """Context entered while the caller waits for results (a hook for nested pools)."""
        yield

    def _prepare_worker_env(self, n_jobs: int) -> dict[str, str]:
        """Environment limiting BLAS/OpenMP threads in worker processes.

        ``inner_max_num_threads`` when set, else ``cpu_count() // n_jobs`` unless the
        variable is already set in the parent (see ``_process_pool.worker_environment``).
        """
        return worker_environment(n_jobs, self.inner_max_num_threads)

    @staticmethod
    def in_main_thread() -> bool:
        """Whether the caller runs in the main thread."""
        return threading.current_thread() is threading.main_thread()


class PoolManagerMixin:
    """joblib's helper for backends built on a ``multiprocessing.pool.Pool``-like object in
    ``self._pool``: sizing, ``submit`` through ``apply_async``, and termination.

    Results come back as they are (an exception given to the callback is raised).
    """

    _pool: Any = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """``n_jobs`` resolved against :func:`cpu_count`; 1 when multiprocessing is off."""
        check_n_jobs(n_jobs)
        if not MULTIPROCESSING_ENABLED or n_jobs is None:
            return 1
        return resolve_n_jobs(n_jobs)

    def terminate(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.close()
            self._pool.terminate()
            self._pool = None

    def _get_pool(self) -> Any:
        """The pool ``submit`` uses (override to create it lazily)."""
        return self._pool

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None):
        """Schedule ``func()`` on the pool; ``callback`` gets the result or the error."""
        return self._get_pool().apply_async(func, (), callback=callback, error_callback=callback)

    def retrieve_result_callback(self, result: Any) -> Any:
        """The result, or the exception the pool reported raised."""
        if isinstance(result, BaseException):
            raise result
        return result

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Shut the pool down and, if still in use, start a new one with the same settings."""
        self.terminate()
        parallel = getattr(self, "parallel", None)
        if ensure_ready and parallel is not None:
            self.configure(  # type: ignore[attr-defined]
                n_jobs=parallel.n_jobs, parallel=parallel, **parallel._backend_kwargs
            )


class AutoBatchingMixin:
    """Adapts the batch size so a batch lasts between the two ideal durations.

    The size starts at 1; while batches finish faster than ``MIN_IDEAL_BATCH_DURATION`` it at
    most doubles at each step, and when they last longer than ``MAX_IDEAL_BATCH_DURATION`` it
    shrinks at once, to avoid stragglers at the end of a call.
    """

    MIN_IDEAL_BATCH_DURATION = 0.2
    MAX_IDEAL_BATCH_DURATION = 2.0
    # Print size changes at verbose >= 10, as joblib's process backends do.
    _report_batch_size_changes = True

    _DEFAULT_EFFECTIVE_BATCH_SIZE = 1
    _DEFAULT_SMOOTHED_BATCH_DURATION = 0.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._effective_batch_size = self._DEFAULT_EFFECTIVE_BATCH_SIZE
        self._smoothed_batch_duration = self._DEFAULT_SMOOTHED_BATCH_DURATION

    def compute_batch_size(self) -> int:
        """Next batch size from the smoothed duration of recent batches."""
        old = self._effective_batch_size
        duration = self._smoothed_batch_duration
        if 0 < duration < self.MIN_IDEAL_BATCH_DURATION:
            # Aim at twice the minimum so the size does not oscillate around it.
            ideal = int(old * self.MIN_IDEAL_BATCH_DURATION / duration) * 2
            size = max(min(2 * old, ideal), 1)
            reason = "fast"
        elif duration > self.MAX_IDEAL_BATCH_DURATION and old >= 2:
            ideal = int(old * self.MIN_IDEAL_BATCH_DURATION / duration)
            size = max(2 * ideal, 1)
            reason = "slow"
        else:
            return old
        if size != old:
            self._effective_batch_size = size
            # The running mean belongs to the old size; start afresh.
            self._smoothed_batch_duration = self._DEFAULT_SMOOTHED_BATCH_DURATION
            parallel = getattr(self, "parallel", None)
            if self._report_batch_size_changes and parallel is not None and parallel.verbose >= 10:
                parallel._print(
                    f"Batch computation too {reason} ({duration}s.) Setting batch_size={size}."
                )
        return size

    def batch_completed(self, batch_size: int, duration: float) -> None:
        """Update the exponentially weighted mean duration of batches of the current size."""
        if batch_size != self._effective_batch_size:
            return
        old = self._smoothed_batch_duration
        if old == self._DEFAULT_SMOOTHED_BATCH_DURATION:
            self._smoothed_batch_duration = duration
        else:
            self._smoothed_batch_duration = 0.8 * old + 0.2 * duration

    def reset_batch_stats(self) -> None:
        """Forget the batch statistics, so the next call starts from a batch of 1."""
        self._effective_batch_size = self._DEFAULT_EFFECTIVE_BATCH_SIZE
        self._smoothed_batch_duration = self._DEFAULT_SMOOTHED_BATCH_DURATION


class MeasuredBatchingMixin(AutoBatchingMixin):
    """Auto-batching that jumps to the size the last measurement asks for.

    joblib's policy (:class:`AutoBatchingMixin`) at most doubles the size per step, so
    100k tiny tasks need a dozen round trips before batches are big enough. Here a batch of
    ``old`` tasks that took ``duration`` (dispatch to completion, transport included) sets
    the next size to ``old * 2 * MIN_IDEAL_BATCH_DURATION / duration`` at once. That is safe:
    the measured duration includes the fixed cost of a round trip, so it overestimates the
    cost of a task and the new batch lasts at most ``2 * MIN_IDEAL_BATCH_DURATION``. Slow
    batches shrink as in joblib. The call may also start from a size learned by an earlier
    call of the same function (:meth:`seed_batch_size`).
    """

    def compute_batch_size(self) -> int:
        """Next batch size from the smoothed duration of recent batches."""
        old = self._effective_batch_size
        duration = self._smoothed_batch_duration
        if not 0 < duration < self.MIN_IDEAL_BATCH_DURATION:
            return super().compute_batch_size()
        size = max(int(old * self.MIN_IDEAL_BATCH_DURATION / duration) * 2, old, 1)
        if size != old:
            self._effective_batch_size = size
            self._smoothed_batch_duration = self._DEFAULT_SMOOTHED_BATCH_DURATION
            parallel = getattr(self, "parallel", None)
            if self._report_batch_size_changes and parallel is not None and parallel.verbose >= 10:
                parallel._print(
                    f"Batch computation too fast ({duration}s.) Setting batch_size={size}."
                )
        return size

    @property
    def effective_batch_size(self) -> int:
        """The size the policy currently uses."""
        return self._effective_batch_size

    def seed_batch_size(self, size: int) -> None:
        """Start from ``size`` (learned by an earlier call) instead of 1."""
        self._effective_batch_size = max(int(size), 1)
        self._smoothed_batch_duration = self._DEFAULT_SMOOTHED_BATCH_DURATION
