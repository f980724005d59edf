"""Backends for embarrassingly parallel code.

A backend runs the batches of tasks that :class:`joblib_rs.Parallel` hands it. The contract is
joblib's, so third-party backends written for joblib work unchanged:

``configure(n_jobs, parallel, **kwargs)``
    Called at the start of a call (or of a ``with Parallel(...)`` block); builds or reuses the
    workers and returns the number of workers. Raising :class:`FallbackToBackend` hands the call
    over to another backend (e.g. sequential when only one worker is useful).
``submit(func, callback)``
    Schedules ``func()`` (a batch of tasks) and returns a future-like object. When the batch is
    done, the backend calls ``callback(out)``; ``retrieve_result_callback(out)`` turns ``out``
    into the batch's results or raises the batch's exception.
``start_call`` / ``stop_call`` / ``terminate`` / ``abort_everything``
    Lifecycle hooks around a call, at its end and after an error or ``Ctrl-C``.
``compute_batch_size`` / ``batch_completed``
    Batching policy; :class:`AutoBatchingMixin` adapts the size to a target batch duration.
``get_nested_backend`` / ``retrieval_context``
    What a ``Parallel`` call running inside a worker uses, and a hook around result retrieval.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import pickle
import threading
import time
import traceback
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

from joblib_rs._cpu import cpu_count
from joblib_rs._memmapping import MemmappingContext
from joblib_rs._threads import ThreadLease, lease_threads

__all__ = [
    "AutoBatchingMixin",
    "FallbackToBackend",
    "LokyBackend",
    "MultiprocessingBackend",
    "ParallelBackendBase",
    "SequentialBackend",
    "ThreadingBackend",
    "TimeoutError",
    "default_mp_context",
]


class TimeoutError(mp.TimeoutError, TimeoutError):
    """A task did not complete within ``Parallel(timeout=...)``.

    Subclass of both :class:`multiprocessing.TimeoutError` (what joblib raises) and the builtin
    :class:`TimeoutError`, so ``except`` clauses written for either catch it.
    """


class FallbackToBackend(Exception):
    """Raised by ``configure`` to hand the call over to ``backend``."""

    def __init__(self, backend: ParallelBackendBase) -> None:
        super().__init__(backend)
        self.backend = backend


class _RemoteTraceback(Exception):
    """Carries the formatted traceback of an exception raised in a worker process."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _rebuild_remote_exception(exc: BaseException, tb: str) -> BaseException:
    exc.__cause__ = _RemoteTraceback(tb)
    return exc


class _ExceptionWithTraceback:
    """An exception caught in a worker process, pickled with its traceback text."""

    def __init__(self, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.tb = f'\n"""\n{text}"""'
        try:
            pickle.dumps(exc)
            self.exc = exc
        except Exception:
            # The type cannot travel; keep its name and message.
            self.exc = RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_remote_exception, (self.exc, self.tb)


class _CloudpickledCall:
    """A batch serialised with cloudpickle, so lambdas and ``__main__`` functions travel.

    Runs in the worker process; a failure comes back as the exception itself, with the worker
    traceback as its ``__cause__``.
    """

    __slots__ = ("payload",)

    def __init__(
        self, func: Callable[[], Any], reduce_array: Callable[[Any], Any] | None = None
    ) -> None:
        import sys

        from joblib_rs import _task_pickle

        try:
            if reduce_array is None or "numpy" not in sys.modules:
                self.payload = _task_pickle.dumps(func)
            else:
                # Large arrays go to shared memory (see joblib_rs._memmapping).
                from joblib_rs._process_pool import _TaskPickler

                self.payload = _task_pickle.dumps(
                    func, reduce_array, lambda buffer: _TaskPickler(buffer, reduce_array)
                )
        except Exception as exc:
            raise pickle.PicklingError(
                f"Could not pickle the task to send it to the workers: {exc}"
            ) from exc

    def __call__(self) -> Any:
        from joblib_rs import _task_pickle

        try:
            # Results go back pickled here with protocol 5: the pool's own pickling uses
            # protocol 4, which loses e.g. the byte order of numpy arrays.
            return _PickledResult(_task_pickle.dumps(pickle.loads(self.payload)()))
        except BaseException as exc:
            return _ExceptionWithTraceback(exc)


class _PickledResult:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return pickle.loads, (self.data,)


def _raise_or_return(out: Any) -> Any:
    if isinstance(out, BaseException):
        raise out
    return out


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

    MAX_NUM_THREADS_VARS = (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "BLIS_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMBA_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    )
    TBB_ENABLE_IPC_VAR = "ENABLE_IPC"

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
        """Prepare the workers for a call and return how many there are."""
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
        if nesting_level > 1:
            return SequentialBackend(nesting_level=nesting_level), None
        return ThreadingBackend(nesting_level=nesting_level), None

    @contextlib.contextmanager
    def retrieval_context(self) -> Iterator[None]:
        """Context entered while the caller waits for results (a hook for nested pools)."""
        yield

    def _prepare_worker_env(self, n_jobs: int) -> dict[str, str]:
        """Environment limiting BLAS/OpenMP threads in worker processes.

        ``inner_max_num_threads`` when set, else ``cpu_count() // n_jobs`` unless the
        variable is already set in the parent.
        """
        explicit = self.inner_max_num_threads
        default = max(cpu_count() // max(n_jobs, 1), 1)
        env = {}
        for var in self.MAX_NUM_THREADS_VARS:
            value = os.environ.get(var, default) if explicit is None else explicit
            env[var] = str(value)
        if self.TBB_ENABLE_IPC_VAR not in os.environ:
            env[self.TBB_ENABLE_IPC_VAR] = "1"
        return env

    @staticmethod
    def in_main_thread() -> bool:
        """Whether the caller runs in the main thread."""
        return threading.current_thread() is threading.main_thread()


def _check_n_jobs(n_jobs: int | None) -> None:
    if n_jobs == 0:
        raise ValueError("n_jobs == 0 in Parallel has no meaning")


def _resolve_n_jobs(n_jobs: int) -> int:
    if n_jobs < 0:
        return max(cpu_count() + 1 + n_jobs, 1)
    return n_jobs


class SequentialBackend(ParallelBackendBase):
    """Runs every task in the caller's thread, one after another (``n_jobs=1``)."""

    uses_threads = True
    supports_timeout = False
    supports_retrieve_callback = False
    supports_sharedmem = True

    def effective_n_jobs(self, n_jobs: int) -> int:
        """Always 1."""
        _check_n_jobs(n_jobs)
        return 1

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None):
        """Never called: ``Parallel`` runs sequential calls inline."""
        raise RuntimeError("Should never be called for SequentialBackend.")

    def retrieve_result_callback(self, out: Any) -> Any:
        """Never called: ``Parallel`` runs sequential calls inline."""
        raise RuntimeError("Should never be called for SequentialBackend.")

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """Sequential code changes nothing: nested calls see the active configuration."""
        from joblib_rs.parallel import get_active_backend

        return get_active_backend()


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


class ThreadingBackend(AutoBatchingMixin, ParallelBackendBase):
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
        """``n_jobs`` with negative values counted back from :func:`cpu_count`."""
        _check_n_jobs(n_jobs)
        if n_jobs is None:
            return 1
        return _resolve_n_jobs(n_jobs)

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
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


def _worker_initializer(env: dict[str, str], initializer: Any, initargs: tuple) -> None:
    os.environ.update(env)
    if initializer is not None:
        initializer(*initargs)


def default_mp_context() -> Any:
    """The multiprocessing context: ``JOBLIB_START_METHOD`` if set, else the platform's."""
    method = os.environ.get("JOBLIB_START_METHOD", "").strip() or None
    return mp.get_context(method)


class MultiprocessingBackend(AutoBatchingMixin, ParallelBackendBase):
    """Runs batches in a :class:`multiprocessing.Pool` (joblib's legacy process backend).

    Batches travel with cloudpickle, so lambdas and functions defined in ``__main__`` work;
    arrays of at least ``max_nbytes`` travel through shared memory as ``'loky'``'s do (see
    ``joblib_rs._memmapping``), as joblib's memmapping pool does for this backend.
    The start method is the platform default unless ``JOBLIB_START_METHOD`` names another,
    or a multiprocessing context is passed as ``Parallel(backend=ctx)`` or ``context=ctx``.
    Pool options (``initializer``, ``initargs``, ``maxtasksperchild``) pass through
    ``Parallel(**backend_kwargs)`` or ``parallel_config(**backend_params)``.
    """

    supports_retrieve_callback = True
    supports_return_generator = False
    supports_sharedmem = False
    uses_threads = False

    _POOL_OPTIONS = ("initializer", "initargs", "maxtasksperchild", "context")
    # Parallel's own settings: memmapping options are read before these are dropped.
    _IGNORED_OPTIONS = ("temp_folder", "max_nbytes", "mmap_mode", "verbose", "prefer", "require")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: Any = None

    def _nested_refusal(self) -> str | None:
        if mp.current_process().daemon:
            return "Multiprocessing-backed parallel loops cannot be nested, setting n_jobs=1"
        if os.environ.get("JOBLIB_RS_WORKER") == "1":
            # Inside a worker of the Rust pool ('loky'), as joblib refuses below loky.
            return (
                "Multiprocessing-backed parallel loops cannot be nested, below loky, "
                "setting n_jobs=1"
            )
        if not (self.in_main_thread() or self.nesting_level == 0):
            return (
                "Multiprocessing-backed parallel loops cannot be nested below threads, "
                "setting n_jobs=1"
            )
        return None

    def effective_n_jobs(self, n_jobs: int) -> int:
        """``n_jobs`` resolved against :func:`cpu_count`; 1 inside a worker process."""
        _check_n_jobs(n_jobs)
        if n_jobs is None:
            return 1
        refusal = self._nested_refusal()
        if refusal is not None:
            if n_jobs != 1:
                warnings.warn(refusal, stacklevel=3)
            return 1
        return _resolve_n_jobs(n_jobs)

    def _pool_options(self, backend_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The pool's own options among the backend and call keyword arguments; Parallel's
        settings are dropped and anything else is a ``TypeError``."""
        options = {**self.backend_kwargs, **backend_kwargs}
        for name in self._IGNORED_OPTIONS:
            options.pop(name, None)
        unknown = sorted(set(options) - set(self._POOL_OPTIONS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword argument(s) {unknown}; "
                f"expected some of {list(self._POOL_OPTIONS)}"
            )
        return options

    def _memmapping_context(self, backend_kwargs: dict[str, Any]) -> MemmappingContext:
        """Shared-memory transport of large arrays, from Parallel's memmapping settings."""
        options = {**self.backend_kwargs, **backend_kwargs}
        return MemmappingContext(
            options.get("temp_folder"),
            options.get("max_nbytes", 1024**2),
            options.get("mmap_mode", "r"),
        )

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
        """Start a pool of ``n_jobs`` processes (or fall back to sequential for one)."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        options = self._pool_options(backend_kwargs)
        self._memmapping = self._memmapping_context(backend_kwargs)
        context = options.pop("context", None) or default_mp_context()
        initargs = (
            self._prepare_worker_env(n_jobs),
            options.pop("initializer", None),
            tuple(options.pop("initargs", ())),
        )
        self.parallel = parallel
        self._pool = self._make_pool(context, n_jobs, initargs, options)
        return n_jobs

    def _make_pool(self, context: Any, n_jobs: int, initargs: tuple, options: dict) -> Any:
        return context.Pool(n_jobs, _worker_initializer, initargs, **options)

    def _drop_memmapping(self) -> None:
        memmapping = getattr(self, "_memmapping", None)
        if memmapping is not None:
            memmapping.cleanup()
            self._memmapping = None

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None):
        """Send the cloudpickled batch to the pool; large arrays through shared memory."""
        memmapping = self._memmapping
        task = _CloudpickledCall(memmapping.wrap(func), memmapping.reduce_array)
        return self._pool.apply_async(task, (), callback=callback, error_callback=callback)

    def retrieve_result_callback(self, out: Any) -> Any:
        """Return the batch's results or raise its exception (worker traceback as cause)."""
        return _raise_or_return(out)

    def terminate(self) -> None:
        """Stop the pool's processes and remove the call's shared-memory files."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
        self._drop_memmapping()
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Kill the workers; start a fresh pool if the backend is still in use."""
        self.terminate()
        if ensure_ready and self.parallel is not None:
            self.configure(
                n_jobs=self.parallel.n_jobs,
                parallel=self.parallel,
                **self.parallel._backend_kwargs,
            )


class LokyBackend(MultiprocessingBackend):
    """The default process backend, ``'loky'``: joblib-rs's Rust process pool.

    Workers are fresh ``python -m joblib_rs._worker`` interpreters (never forks of the
    caller) started and driven by Rust threads (see ``docs/pool.md``); batches travel with
    cloudpickle, so lambdas, closures and functions defined in ``__main__`` work. The pool is
    kept between calls with the same settings and shuts down after ``idle_worker_timeout``
    seconds unused (default 300). A worker that dies fails the call with
    :class:`~joblib_rs.exceptions.TerminatedWorkerError` and the next call gets a fresh pool.
    ``inner_max_num_threads`` limits BLAS threads in the workers; ``initializer`` and
    ``initargs`` run in each worker at start-up.
    """

    supports_inner_max_num_threads = True
    supports_return_generator = True

    _POOL_OPTIONS = ("initializer", "initargs", "idle_worker_timeout")
    # Parallel passes the multiprocessing context to every backend, as joblib does; the Rust
    # pool starts fresh interpreters itself and has no use for it.
    _IGNORED_OPTIONS = (*MultiprocessingBackend._IGNORED_OPTIONS, "context")

    def _nested_refusal(self) -> str | None:
        # A worker of our own pool may start a pool of its own, as loky workers can (an
        # explicit backend='loky' inside a task); daemonic stdlib workers cannot.
        if mp.current_process().daemon:
            return (
                "Loky-backed parallel loops cannot be called in a multiprocessing, "
                "setting n_jobs=1"
            )
        if not (self.in_main_thread() or self.nesting_level == 0):
            return "Loky-backed parallel loops cannot be nested below threads, setting n_jobs=1"
        return None

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
        """Get the worker processes ready (or fall back to sequential for one)."""
        from joblib_rs._process_pool import ProcessPool

        if "timeout" in backend_kwargs:
            raise ValueError(
                "The 'timeout' parameter is not supported by the LokyBackend. "
                "Please use the `idle_worker_timeout` parameter instead."
            )
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        options = self._pool_options(backend_kwargs)
        settings = {**self.backend_kwargs, **backend_kwargs}
        self._memmapping = MemmappingContext(
            settings.get("temp_folder"),
            settings.get("max_nbytes", 1024**2),
            settings.get("mmap_mode", "r"),
        )
        self._idle_timeout = options.get("idle_worker_timeout", 300)
        env = self._prepare_worker_env(n_jobs)
        initializer = options.get("initializer")
        initargs = tuple(options.get("initargs", ()))
        key = ("joblib-rs", n_jobs, tuple(sorted(env.items())), initializer, initargs)
        self.parallel = parallel
        self._pool = _reusable_pool.acquire(
            key, lambda: ProcessPool(n_jobs, env=env, initializer=initializer, initargs=initargs)
        )
        return n_jobs

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None):
        """Send the batch to a worker; ``callback`` gets the future when it is done.

        Arrays of at least ``max_nbytes`` (arguments and results) travel through shared
        memory (see ``joblib_rs._memmapping``).
        """
        memmapping = self._memmapping
        future = self._pool.submit(memmapping.wrap(func), reduce_array=memmapping.reduce_array)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: Any) -> Any:
        """The batch's results, or its exception raised (worker traceback as cause)."""
        return out.result()

    def _drop_memmapping(self) -> None:
        memmapping = getattr(self, "_memmapping", None)
        if memmapping is not None:
            memmapping.cleanup()
            self._memmapping = None

    def terminate(self) -> None:
        """Keep the worker processes for the next call (shut down after the idle timeout);
        remove the call's shared-memory files."""
        if self._pool is not None:
            _reusable_pool.release(self._pool, getattr(self, "_idle_timeout", 300))
            self._pool = None
        self._drop_memmapping()
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Kill the workers (they may be busy with cancelled tasks); restart if still in use."""
        if self._pool is not None:
            _reusable_pool.discard(self._pool)
            self._pool = None
        self._drop_memmapping()
        self.reset_batch_stats()
        if ensure_ready and self.parallel is not None:
            self.configure(
                n_jobs=self.parallel.n_jobs,
                parallel=self.parallel,
                **self.parallel._backend_kwargs,
            )


class _ReusablePool:
    """One process pool kept alive between ``'loky'`` calls, as loky's reusable executor is.

    Handed to one call at a time (a concurrent call gets a private pool, terminated after
    it), replaced when a call needs other settings or is broken, and shut down after
    ``idle_timeout`` seconds without use or at interpreter exit. One daemon reaper thread per
    process sleeps on a condition until the idle deadline (no polling, and no thread started
    per call: starting one costs about a millisecond).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._pool: Any = None
        self._key: Any = None
        self._busy = False
        self._deadline: float | None = None
        self._reaper: threading.Thread | None = None
        # When the reaper will next look at the deadline on its own (None: only when woken).
        # A release only wakes it when the new deadline comes sooner, so the common case
        # (reuse within the timeout) costs no thread switch.
        self._reaper_wakes_at: float | None = None

    def acquire(self, key: Any, make: Callable[[], Any]) -> Any:
        stale = None
        with self._lock:
            if self._pool is not None and not self._busy:
                self._deadline = None
                # A worker may have died while the pool sat idle: never hand out a broken pool.
                if self._key == key and getattr(self._pool, "broken", None) is None:
                    self._busy = True
                    return self._pool
                stale, self._pool = self._pool, None
            elif self._busy:
                return make()
            self._busy = True
        if stale is not None:
            stale.terminate()
        try:
            pool = make()
        except BaseException:
            with self._lock:
                self._busy = False
            raise
        with self._lock:
            self._pool, self._key = pool, key
        return pool

    def release(self, pool: Any, idle_timeout: float) -> None:
        with self._lock:
            if pool is self._pool:
                self._busy = False
                self._deadline = time.monotonic() + idle_timeout
                if self._reaper is None:
                    self._reaper = threading.Thread(
                        target=self._reap, name="joblib-rs-pool-reaper", daemon=True
                    )
                    self._reaper.start()
                elif self._reaper_wakes_at is None or self._deadline < self._reaper_wakes_at:
                    self._wakeup.notify()
                return
        pool.terminate()

    def discard(self, pool: Any) -> None:
        with self._lock:
            if pool is self._pool:
                self._pool, self._key, self._busy = None, None, False
                self._deadline = None
        pool.terminate()

    def _reap(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._deadline is None:
                        self._reaper_wakes_at = None
                        self._wakeup.wait()
                        continue
                    remaining = self._deadline - time.monotonic()
                    if remaining > 0:
                        self._reaper_wakes_at = self._deadline
                        self._wakeup.wait(remaining)
                        continue
                    break
                self._deadline = None
                expired = None if self._busy else self._pool
                if expired is not None:
                    self._pool, self._key = None, None
            if expired is not None:
                expired.terminate()

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool, self._key, self._busy = self._pool, None, None, False
            self._deadline = None
        if pool is not None:
            pool.terminate()

    def forget(self) -> None:
        # In a forked child the parent's pool and reaper thread are not ours.
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._pool, self._key, self._busy = None, None, False
        self._deadline, self._reaper, self._reaper_wakes_at = None, None, None


_reusable_pool = _ReusablePool()
atexit.register(_reusable_pool.shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reusable_pool.forget)
