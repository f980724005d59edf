"""Reusable worker threads for the threading backend.

joblib builds a ``multiprocessing.pool.ThreadPool`` for every call and tears it down after: that
costs milliseconds per call. Here a call *leases* a set of ``n`` worker threads and gives them
back when it ends, so a warm call only pays for queue operations. A lease is exclusive: two
concurrent calls (say, nested ``Parallel`` calls inside workers) never share threads, so one can
never wait on work queued behind its own waiting task.

Data flow: ``submit(func, callback)`` puts a :class:`ThreadJob` on the lease's ``SimpleQueue``; a
worker runs ``func()``, stores the outcome and calls ``callback((True, value))`` or
``callback((False, exception))``; ``job.get()`` also waits for the outcome. A lease that
was aborted is not reused: its queue is drained and its threads exit after their current task.
"""

from __future__ import annotations

import atexit
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ThreadJob", "ThreadLease", "lease_threads"]

# Idle leases kept per size, and idle threads kept in all; more would only hold parked threads.
_MAX_IDLE_PER_SIZE = 2
_MAX_IDLE_THREADS = 256

_registry_lock = threading.Lock()
_idle: dict[int, list[ThreadLease]] = {}
_all: set[ThreadLease] = set()
_counter = 0


class ThreadLease:
    """``n`` worker threads fed by one queue, owned by one caller at a time."""

    def __init__(self, n_threads: int) -> None:
        global _counter
        self.n_threads = n_threads
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._threads = []
        with _registry_lock:
            _counter += 1
            pool_id = _counter
        for i in range(n_threads):
            t = threading.Thread(
                target=self._work, name=f"joblib_rs-threads-{pool_id}-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None) -> ThreadJob:
        """Queue ``func``; ``callback`` receives ``(True, value)`` or ``(False, exc)``."""
        job = ThreadJob(func, callback)
        self._queue.put(job)
        return job

    def _work(self) -> None:
        get = self._queue.get
        while True:
            job = get()
            if job is None:
                return
            job.run()
            del job

    def close(self) -> None:
        """Drop queued work and let the threads exit after their current task."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._queue.put(None)
        with _registry_lock:
            _all.discard(self)

    def release(self) -> None:
        """Give the threads back for the next call of the same size."""
        if self._closed:
            return
        with _registry_lock:
            idle = _idle.setdefault(self.n_threads, [])
            parked = sum(size * len(leases) for size, leases in _idle.items())
            if len(idle) < _MAX_IDLE_PER_SIZE and parked + self.n_threads <= _MAX_IDLE_THREADS:
                idle.append(self)
                return
        self.close()


class ThreadJob:
    """One submitted function: its outcome, a callback, and a blocking ``get``."""

    __slots__ = ("_callback", "_done", "_func", "out")

    def __init__(self, func: Callable[[], Any], callback: Callable[[Any], None] | None) -> None:
        self._func = func
        self._callback = callback
        self.out: tuple[bool, Any] | None = None
        # Held until the outcome is set: get() waits on it without polling.
        self._done = threading.Lock()
        self._done.acquire()

    def run(self) -> None:
        try:
            self.out = (True, self._func())
        except BaseException as exc:
            self.out = (False, exc)
        self._func = None
        self._done.release()
        callback, self._callback = self._callback, None
        if callback is not None:
            try:
                callback(self.out)
            except BaseException:
                # A worker must survive its callback; report like an uncaught exception.
                sys.excepthook(*sys.exc_info())

    def get(self, timeout: float | None = None) -> Any:
        """Wait for the outcome: return the value or raise the exception."""
        if not self._done.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"the job did not complete within {timeout} seconds")
        self._done.release()
        ok, value = self.out
        if ok:
            return value
        raise value


def lease_threads(n_threads: int) -> ThreadLease:
    """Return ``n_threads`` idle worker threads, reusing a previous lease when possible."""
    with _registry_lock:
        idle = _idle.get(n_threads)
        if idle:
            return idle.pop()
    lease = ThreadLease(n_threads)
    with _registry_lock:
        _all.add(lease)
    return lease


def _shutdown_all() -> None:
    with _registry_lock:
        leases = list(_all)
        _idle.clear()
    for lease in leases:
        lease.close()


def _forget_after_fork() -> None:
    # Threads do not survive fork(): a child must never lease the parent's dead threads.
    global _registry_lock
    _registry_lock = threading.Lock()
    _idle.clear()
    _all.clear()


atexit.register(_shutdown_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
