"""The Rust process pool's Python side: futures, and the pool's whole lifetime.

::

    acquire_pool(settings) ─► the process's reusable pool (same settings, healthy, free)
        │                      or a new ProcessPool (a private one when the shared one is busy)
        ▼
    ProcessPool.submit(fn) ─ dumps_task ─► _core.ProcessPool ══ frames ══► worker processes
        │                                      ║ (Rust threads, no GIL)
    Future ◄─ loads_result ◄─ result thread ◄─ next_event() ◄────┘
        │
    release_pool(pool, idle_timeout) ─► idle; the reaper thread shuts it down after the timeout
    discard_pool(pool)               ─► killed (after an abort: workers may be busy)

Everything about a pool's life is here: the workers' environment (BLAS/OpenMP thread limits),
the array policy and results folder given to workers once at start-up, reuse between
``Parallel`` calls, the idle reaper, shutdown at exit and forgetting the pool in a forked
child. How tasks and results are pickled is ``_task_pickle``'s business; the ``'loky'``
backend (``_backends/loky.py``) only acquires, submits to and releases a pool.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import cloudpickle

from joblib_rs import _core
from joblib_rs._cpu import cpu_count
from joblib_rs._memmapping import MemmappingContext
from joblib_rs._task_pickle import ArrayPolicy, dumps_task, loads_failure, loads_result
from joblib_rs.exceptions import TerminatedWorkerError

__all__ = [
    "THREAD_LIMIT_VARS",
    "ProcessPool",
    "acquire_pool",
    "discard_pool",
    "release_pool",
    "shutdown_reusable_pool",
    "worker_environment",
]

#: Environment variables limiting native thread pools (BLAS, OpenMP...) in workers.
THREAD_LIMIT_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
#: Lets TBB thread pools of several workers coordinate.
TBB_ENABLE_IPC_VAR = "ENABLE_IPC"

# How a worker starts: ``python -c`` this rather than ``-m joblib_rs._worker``, which would run
# the package's ``__init__`` (the whole public API: Memory, stores, asyncio... 3-4x the
# worker's own imports) before the first task. The worker imports what it needs and the
# package finishes initialising on first use (``_worker.boot``). When something imported the
# package at start-up already (the ``joblib_rs_install.pth`` hook of ``install()``), it is kept.
_WORKER_BOOT = (
    "import importlib, importlib.util, sys; "
    "spec = importlib.util.find_spec('joblib_rs'); "
    "package = sys.modules.setdefault('joblib_rs', importlib.util.module_from_spec(spec)); "
    "importlib.import_module('joblib_rs._worker').boot(package, spec)"
)


def worker_environment(n_workers: int, inner_max_num_threads: int | None = None) -> dict[str, str]:
    """Variables added to the workers' environment so ``n_workers`` processes do not each
    start one native thread per core.

    Parameters
    ----------
    n_workers : int
        Number of worker processes sharing the machine.
    inner_max_num_threads : int or None
        Explicit limit per worker; else ``cpu_count() // n_workers``, unless the user set
        the variable (their value is passed on).
    """
    default = max(cpu_count() // max(n_workers, 1), 1)
    env = {}
    for var in THREAD_LIMIT_VARS:
        if inner_max_num_threads is None:
            env[var] = str(os.environ.get(var, default))
        else:
            env[var] = str(inner_max_num_threads)
    if TBB_ENABLE_IPC_VAR not in os.environ:
        env[TBB_ENABLE_IPC_VAR] = "1"
    return env


def _describe_exit(how: str, value: int) -> str:
    if how == "signal":
        try:
            name = signal.Signals(value).name
        except ValueError:
            name = f"signal {value}"
        return f"killed by {name} (exit code {-value})"
    if how == "code":
        return f"exited with code {value}"
    return "ended for an unknown reason"


def _mp_log_level() -> int | None:
    """The level of :mod:`multiprocessing`'s logger if the program enabled it, else None."""
    util = sys.modules.get("multiprocessing.util")
    logger = getattr(util, "_logger", None)
    return None if logger is None else logger.getEffectiveLevel()


class ProcessPool:
    """A pool of ``n_workers`` worker processes running pickled callables.

    Parameters
    ----------
    n_workers : int
        Number of worker processes, all started at once.
    env : dict, optional
        Environment variables added to the workers' environment.
    initializer : callable, optional
        Called as ``initializer(*initargs)`` in each worker at start-up.
    initargs : tuple, default=()
        Arguments of ``initializer``.
    max_nbytes : int or None, default=None
        Results holding numpy arrays of at least this size come back through files in the
        pool's own folder (under ``temp_folder``) instead of the pipe; None: never.
    temp_folder : str or None, default=None
        Base folder for those files (see ``_memmapping.resolve_temp_folder``).
    mmap_mode : str, default='r'
        Part of the workers' array policy (mode of argument arrays written by the parent).
    """

    def __init__(
        self,
        n_workers: int,
        env: dict[str, str] | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple = (),
        max_nbytes: int | None = None,
        temp_folder: str | None = None,
        mmap_mode: str | None = "r",
    ) -> None:
        self._results_folder: MemmappingContext | None = None
        policy = None
        if max_nbytes is not None:
            # Files of results not read (an aborted call) go with the pool.
            self._results_folder = MemmappingContext(temp_folder, max_nbytes, mmap_mode)
            policy = ArrayPolicy(max_nbytes, self._results_folder.folder, mmap_mode or "r")
        settings: dict[str, Any] = {
            "sys_path": list(sys.path),
            # Managers and other multiprocessing connections check it.
            "authkey": bytes(multiprocessing.current_process().authkey),
            "array_policy": policy,
            "mp_log_level": _mp_log_level(),
        }
        if initializer is not None:
            settings["initializer"] = cloudpickle.dumps((initializer, tuple(initargs)))
        self.n_workers = n_workers
        self._pool = _core.ProcessPool(
            n_workers,
            sys.executable,
            ["-c", _WORKER_BOOT],
            sorted((env or {}).items()),
            os.getcwd(),
            pickle.dumps(settings),
        )
        self._futures: dict[int, Future] = {}
        self._lock = threading.Lock()
        self.broken: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._collect, name="joblib-rs-results", daemon=True
        )
        self._thread.start()

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return list(self._pool.pids)

    def submit(
        self, fn: Callable[[], Any], reduce_array: Callable[[Any], Any] | None = None
    ) -> Future:
        """Runs ``fn()`` in a worker; returns a future of its result.

        ``reduce_array``, if given, is offered every numpy array met while pickling ``fn``
        (see ``_task_pickle.dumps_task``).

        Raises
        ------
        pickle.PicklingError
            If ``fn`` (with its arguments) cannot be pickled; nothing is sent then.
        TerminatedWorkerError
            If a worker of this pool died.
        """
        if self.broken is not None:
            raise self.broken
        payload = dumps_task(fn, reduce_array)
        future: Future = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a pool that is shut down")
            task_id = self._pool.submit(payload)
            self._futures[task_id] = future
        return future

    def _collect(self) -> None:
        event_type = _core.PoolEvent
        while True:
            event = self._pool.next_event(None)
            kind = event.kind
            if kind == event_type.CLOSED:
                break
            if kind == event_type.READY:
                continue
            if kind == event_type.DIED:
                self._break(
                    TerminatedWorkerError(
                        f"A worker process (pid {event.ident}) of the joblib-rs pool was "
                        f"unexpectedly terminated: it "
                        f"{_describe_exit(event.exit_how, event.exit_value)}. This can be "
                        "caused by a segmentation fault in the function or by excessive "
                        "memory use making the operating system kill the worker."
                    )
                )
                break
            with self._lock:
                future = self._futures.pop(event.ident, None)
            if future is None:
                continue
            try:
                if kind == event_type.DONE:
                    future.set_result(loads_result(event.payload))
                else:
                    future.set_exception(loads_failure(event.payload))
            except BaseException as exc:  # unpickling the outcome failed
                if not future.done():
                    future.set_exception(exc)
            # Let go of the result now: held until the next event, a big result would outlive
            # the caller's last reference (and its shared-memory file could not be recycled).
            del future, event

    def _fail_pending(self, exc: BaseException) -> None:
        with self._lock:
            pending = list(self._futures.values())
            self._futures.clear()
        for future in pending:
            if not future.done():
                future.set_exception(exc)

    def _break(self, exc: BaseException) -> None:
        self.broken = exc
        self._fail_pending(exc)
        self._pool.terminate()
        self._remove_results_folder()

    def _remove_results_folder(self) -> None:
        if self._results_folder is not None:
            self._results_folder.cleanup()

    def shutdown(self, grace: float = 5.0) -> None:
        """Lets the workers finish and exit (killing them after ``grace`` seconds)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(grace)
        self._fail_pending(RuntimeError("the process pool was shut down"))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=grace + 5)
        self._remove_results_folder()

    def terminate(self) -> None:
        """Kills every worker now; pending futures fail."""
        with self._lock:
            self._closed = True
        self._pool.terminate()
        self._fail_pending(RuntimeError("the process pool was terminated"))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        self._remove_results_folder()


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


def acquire_pool(
    n_workers: int,
    env: dict[str, str],
    initializer: Callable[..., Any] | None = None,
    initargs: tuple = (),
    max_nbytes: int | None = None,
    temp_folder: str | None = None,
    mmap_mode: str | None = "r",
) -> ProcessPool:
    """A pool with these settings for one call: the reusable one when it is free and
    matches, else a new one (started now; pass it back with :func:`release_pool`)."""
    key = (
        n_workers,
        tuple(sorted(env.items())),
        initializer,
        tuple(initargs),
        max_nbytes,
        temp_folder,
        mmap_mode,
    )
    return _reusable_pool.acquire(
        key,
        lambda: ProcessPool(
            n_workers,
            env=env,
            initializer=initializer,
            initargs=initargs,
            max_nbytes=max_nbytes,
            temp_folder=temp_folder,
            mmap_mode=mmap_mode,
        ),
    )


def release_pool(pool: ProcessPool, idle_timeout: float) -> None:
    """Hand a pool back after a call: kept for ``idle_timeout`` seconds unused (a private
    pool is terminated at once)."""
    _reusable_pool.release(pool, idle_timeout)


def discard_pool(pool: ProcessPool) -> None:
    """Kill a pool whose workers may be busy with cancelled tasks; the next call gets a
    fresh one."""
    _reusable_pool.discard(pool)


def shutdown_reusable_pool() -> None:
    """Terminate the reusable pool now (``get_reusable_executor().shutdown()``): the next
    call starts fresh workers (e.g. after the parent's environment changed)."""
    _reusable_pool.shutdown()
