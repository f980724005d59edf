"""``loky.get_reusable_executor`` on joblib-rs's Rust process pool.

::

    get_reusable_executor(max_workers) ─► the process's _Executor (made again after a
                                          shutdown, or when max_workers changes)
    _Executor.submit(fn, *args) ─► acquire_pool(...) ─► ProcessPool.submit ─► Future
                                   (the same pool 'loky' Parallel calls reuse)
    last pending future done ─► release_pool(pool, timeout): idle workers exit after
                                ``timeout`` seconds, as loky's do

A worker that dies fails its futures with ``TerminatedWorkerError`` and the next submit
gets a fresh pool.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Any

from joblib_rs import _process_pool
from joblib_rs._cpu import cpu_count
from joblib_rs.externals.loky._reducers import ReducedCall
from joblib_rs.externals.loky.process_executor import ShutdownExecutorError

__all__ = ["ProcessPoolExecutor", "get_reusable_executor"]


class ProcessPoolExecutor(concurrent.futures.Executor):
    """A :class:`concurrent.futures.Executor` whose workers are joblib-rs worker processes.

    Parameters
    ----------
    max_workers : int, optional
        Number of worker processes (default: :func:`joblib_rs.cpu_count`).
    context : object, optional
        Accepted for loky's signature; workers are always fresh interpreters.
    initializer : callable, optional
        Called as ``initializer(*initargs)`` in each worker at start-up.
    initargs : tuple, default=()
        Arguments of ``initializer``.
    env : dict, optional
        Environment variables set in the workers.
    timeout : float, default=10
        Seconds the workers stay alive without work before they exit.
    job_reducers, result_reducers : dict, optional
        ``{type: reducer}`` tables used to pickle the tasks' arguments and their results
        (a reducer returns ``(callable, args)`` as ``__reduce__`` does), as loky's.
    """

    _shared = False

    def __init__(
        self,
        max_workers: int | None = None,
        context: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple = (),
        env: dict[str, str] | None = None,
        timeout: float | None = 10,
        job_reducers: Any = None,
        result_reducers: Any = None,
    ) -> None:
        self._job_reducers = dict(job_reducers or {})
        self._result_reducers = dict(result_reducers or {})
        if max_workers is None:
            max_workers = cpu_count()
        if not isinstance(max_workers, int) or max_workers <= 0:
            raise ValueError(f"max_workers must be greater than 0, got {max_workers!r}")
        self._max_workers = max_workers
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._env = {
            **_process_pool.worker_environment(max_workers),
            **{str(k): str(v) for k, v in (env or {}).items()},
        }
        self._timeout = 10.0 if timeout is None else float(timeout)
        self._lock = threading.Lock()
        self._pool: _process_pool.ProcessPool | None = None
        self._pending = 0
        self._shutdown = False

    def _acquire(self) -> _process_pool.ProcessPool:
        if self._shared:
            return _process_pool.acquire_pool(
                self._max_workers, self._env, self._initializer, self._initargs
            )
        return _process_pool.ProcessPool(
            self._max_workers,
            env=self._env,
            initializer=self._initializer,
            initargs=self._initargs,
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Schedule ``fn(*args, **kwargs)`` on a worker; returns a Future."""
        with self._lock:
            if self._shutdown:
                raise ShutdownExecutorError("cannot schedule new futures after shutdown")
            if self._pool is None or self._pool.broken is not None:
                if self._pool is not None:
                    self._give_back(self._pool)
                self._pool = self._acquire()
            pool = self._pool
            self._pending += 1
        if self._job_reducers or self._result_reducers:
            call: Any = ReducedCall(fn, args, kwargs, self._job_reducers, self._result_reducers)
        else:
            call = functools.partial(fn, *args, **kwargs) if args or kwargs else fn
        try:
            future = pool.submit(call)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Any) -> None:
        with self._lock:
            self._pending -= 1
            if self._pending or self._pool is None or not self._shared:
                return
            pool, self._pool = self._pool, None
        self._give_back(pool)

    def _give_back(self, pool: _process_pool.ProcessPool) -> None:
        if self._shared:
            _process_pool.release_pool(pool, self._timeout)
        else:
            pool.shutdown()

    def shutdown(
        self, wait: bool = True, *, kill_workers: bool = False, cancel_futures: bool = False
    ) -> None:
        """Stop accepting work; with ``kill_workers`` the workers are killed at once."""
        with self._lock:
            self._shutdown = True
            pool, self._pool = self._pool, None
        if pool is None:
            if self._shared:
                _process_pool.shutdown_reusable_pool()
            return
        if kill_workers or cancel_futures:
            pool.terminate()
        elif wait:
            pool.shutdown()
        else:
            threading.Thread(target=pool.shutdown, daemon=True).start()
        if self._shared:
            _process_pool.shutdown_reusable_pool()


class _ReusableExecutor(ProcessPoolExecutor):
    """The process's reusable executor: its pool is the one ``'loky'`` Parallel calls use."""

    _shared = True


_executor: _ReusableExecutor | None = None
_executor_lock = threading.Lock()


def get_reusable_executor(
    max_workers: int | None = None,
    context: Any = None,
    timeout: float = 10,
    kill_workers: bool = False,
    reuse: bool | str = "auto",
    job_reducers: Any = None,
    result_reducers: Any = None,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple = (),
    env: dict[str, str] | None = None,
) -> ProcessPoolExecutor:
    """The process's reusable executor, as loky's: made once and reused between calls.

    A new executor replaces it after a shutdown, when a worker died, or when
    ``max_workers``, ``initializer``, ``initargs`` or ``env`` change (unless
    ``reuse=True``, which keeps the current one whatever the arguments). ``kill_workers``
    kills the replaced executor's workers instead of letting them finish.
    """
    global _executor
    if max_workers is None:
        max_workers = cpu_count()
    with _executor_lock:
        current = _executor
        if current is not None and not current._shutdown:
            same = (
                current._max_workers == max_workers
                and current._initializer is initializer
                and current._initargs == tuple(initargs)
                and current._job_reducers == dict(job_reducers or {})
                and current._result_reducers == dict(result_reducers or {})
                and current._env.items()
                >= {str(k): str(v) for k, v in (env or {}).items()}.items()
            )
            if reuse is True or (reuse == "auto" and same):
                current._timeout = float(timeout)
                return current
            current.shutdown(wait=not kill_workers, kill_workers=kill_workers)
        _executor = _ReusableExecutor(
            max_workers,
            context,
            initializer,
            initargs,
            env,
            timeout,
            job_reducers,
            result_reducers,
        )
        return _executor
