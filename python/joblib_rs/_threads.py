"""Reusable worker threads for the threading backend, scheduling tasks one by one.

joblib builds a ``multiprocessing.pool.ThreadPool`` for every call and tears it down after: that
costs milliseconds per call. Here a call *leases* a set of ``n`` worker threads and gives them
back when it ends, so a warm call only pays for a lock and a condition. A lease is exclusive:
two concurrent calls (say, nested ``Parallel`` calls inside workers) never share threads, so one
can never wait on work queued behind its own waiting task.

::

    submit(batch, callback) ─► ThreadJob appended to the lease's open jobs (FIFO)
    worker thread: under the lease lock, claim the oldest unclaimed task of the oldest open job
                   (and wake an idle thread if more tasks are left) ─► run it, lock released
    last task of a job done ─► job outcome ─► callback((True, results) | (False, exc))

Batching amortises ``Parallel``'s per-batch work (dispatch, callbacks, bookkeeping), but the
threads claim the tasks of an auto-sized batch one at a time, in submission order, exactly as
joblib's unbatched thread pool starts them: tasks that wait on each other (a barrier, a
queue, an event) never wait behind a task of their own batch, because an idle thread takes
the next unclaimed task. A batch of a size the user chose (``batch_size=5``) stays one unit
on one thread, as in joblib. A lease that was aborted is not reused: its open jobs are
dropped and its threads exit after their current task.
"""

from __future__ import annotations

import atexit
import collections
import os
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
    """``n`` worker threads fed by one FIFO of jobs, owned by one caller at a time."""

    def __init__(self, n_threads: int) -> None:
        global _counter
        self.n_threads = n_threads
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        # Jobs with unclaimed tasks, oldest first.
        self._open: collections.deque[ThreadJob] = collections.deque()
        self._idle = 0
        self._closed = False
        self._threads = []
        with _registry_lock:
            _counter += 1
            pool_id = _counter
        for i in range(n_threads):
            t = threading.Thread(
                target=self._run, name=f"joblib_rs-threads-{pool_id}-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None) -> ThreadJob:
        """Queue ``func``; ``callback`` receives ``(True, value)`` or ``(False, exc)``.

        A ``func`` with ``splittable`` set (an auto-sized ``BatchedCalls``) has its tasks
        (``items``, run under ``nested_config()``) claimed one by one; anything else runs
        as one unit.
        """
        job = ThreadJob(func, callback)
        with self._lock:
            if self._closed:
                return job  # dropped, as queued work of a closed lease is
            self._open.append(job)
            if self._idle:
                self._work.notify()
        return job

    def _claim(self) -> tuple[ThreadJob, int] | None:
        """The next task to run (the oldest unclaimed), waiting for one; None to exit.

        Called with the lock held.
        """
        while not self._open:
            if self._closed:
                return None
            self._idle += 1
            try:
                self._work.wait()
            finally:
                self._idle -= 1
        job = self._open[0]
        index = job.next_index
        job.next_index += 1
        if job.next_index >= job.n_tasks:
            self._open.popleft()
        if self._open and self._idle:
            # Work is left: an idle thread takes it rather than letting it wait behind us.
            self._work.notify()
        return job, index

    def _run(self) -> None:
        job: ThreadJob | None = None
        context: Any = None
        while True:
            with self._lock:
                if context is not None and (not self._open or self._open[0] is not job):
                    # Leave the batch's nested configuration before going idle or switching.
                    context.__exit__(None, None, None)
                    context = None
                claimed = self._claim()
            if claimed is None:
                return
            job, index = claimed
            failure = None
            if job.items is not None and context is None:
                try:
                    context = job.enter_nested_config()
                except BaseException as exc:  # reported as the task's failure
                    failure = exc
            job.run_task(index, failure)
            del claimed, failure

    def close(self) -> None:
        """Drop open jobs and let the threads exit after their current task."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._open.clear()
            self._work.notify_all()
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
    """One submitted function (or splittable batch): its outcome, a callback, a blocking
    ``get``."""

    __slots__ = (
        "_callback",
        "_done",
        "_error",
        "_func",
        "_lock",
        "_results",
        "finished_tasks",
        "items",
        "n_tasks",
        "next_index",
        "out",
    )

    def __init__(self, func: Callable[[], Any], callback: Callable[[Any], None] | None) -> None:
        self._func: Any = func
        self._callback = callback
        self.out: tuple[bool, Any] | None = None
        items = func.items if getattr(func, "splittable", False) else None
        self.items: list | None = items
        self.n_tasks = len(items) if items is not None else 1
        self._results: list[Any] = [None] * self.n_tasks
        self._error: BaseException | None = None
        self.next_index = 0
        self.finished_tasks = 0
        self._lock = threading.Lock()
        # Held until the outcome is set: get() waits on it without polling.
        self._done = threading.Lock()
        self._done.acquire()

    def enter_nested_config(self) -> Any:
        """Enter the configuration the batch's tasks run under; returns the context."""
        context = self._func.nested_config()
        context.__enter__()
        return context

    def run_task(self, index: int, failure: BaseException | None = None) -> None:
        """Run task ``index`` (or record ``failure`` as its outcome); the thread finishing
        the job's last task reports the job's outcome."""
        if failure is not None:
            with self._lock:
                if self._error is None:
                    self._error = failure
        elif self._error is None:
            try:
                if self.items is None:
                    self._results[0] = self._func()
                else:
                    func, args, kwargs = self.items[index]
                    self._results[index] = func(*args, **kwargs)
            except BaseException as exc:
                with self._lock:
                    if self._error is None:
                        self._error = exc
        with self._lock:
            self.finished_tasks += 1
            if self.finished_tasks < self.n_tasks:
                return
        self._finish()

    def _finish(self) -> None:
        if self._error is not None:
            self.out = (False, self._error)
        elif self.items is None:
            self.out = (True, self._results[0])
        else:
            self.out = (True, self._results)
        self._func = self.items = None
        self._results = []
        self._error = None
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
        ok, value = self.out  # type: ignore[misc]
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
