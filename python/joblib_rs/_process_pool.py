"""Python side of the Rust process pool: futures, pickling, and the pool's lifetime.

::

    submit(fn) ─ pickle ─► _core.ProcessPool ══ frames ══► worker processes
        │                              ║ (Rust threads, no GIL)
    Future ◄─ set_result ◄─ result thread ◄─ next_event() ◄─────┘

Tasks are pickled by ``_task_pickle``: the C pickler when everything in them can travel
by reference, cloudpickle otherwise. One result thread per pool blocks in Rust (without the
GIL) on the pool's event queue and resolves futures, so callers wait on events, never on a
polling sleep. Reuse between ``Parallel`` calls, the idle timeout and shutdown at exit are
the ``'loky'`` backend's business (``_parallel_backends.LokyBackend``).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import types
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import cloudpickle

from joblib_rs import _core, _task_pickle
from joblib_rs.exceptions import RemoteTraceback, TerminatedWorkerError

__all__ = ["ProcessPool", "worker_environment"]

#: Environment variables limiting native thread pools (BLAS, OpenMP...) in workers.
THREAD_LIMIT_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _usable_cpus() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_environment(n_workers: int) -> dict[str, str]:
    """Variables added to the workers' environment: native thread limits, unless set by the
    user, so ``n_workers`` processes do not each start one thread per core."""
    per_worker = str(max(_usable_cpus() // max(n_workers, 1), 1))
    return {var: per_worker for var in THREAD_LIMIT_VARS if var not in os.environ}


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


class _TaskPickler(cloudpickle.Pickler):
    """cloudpickle, with numpy arrays offered to a reducer first (shared-memory transport)."""

    def __init__(self, file: io.BytesIO, reduce_array: Callable[[Any], Any]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._reduce_array = reduce_array
        self._ndarray = sys.modules["numpy"].ndarray

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, self._ndarray):
            reduced = self._reduce_array(obj)
            if reduced is not NotImplemented:
                return reduced
        return super().reducer_override(obj)


class _StdlibTaskPickler(pickle.Pickler):
    """The standard pickler, refusing what a worker could not import by name: functions and
    classes of ``__main__`` (workers do not run the parent's main script)."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type | types.FunctionType) and obj.__module__ == "__main__":
            raise pickle.PicklingError(
                f"Can't pickle {obj!r}: it is defined in __main__, which the workers cannot "
                "import (LOKY_PICKLER=pickle; wrap it with wrap_non_picklable_objects)"
            )
        return NotImplemented


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
    """

    def __init__(
        self,
        n_workers: int,
        env: dict[str, str] | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple = (),
    ) -> None:
        settings: dict[str, Any] = {
            "sys_path": list(sys.path),
            # Managers and other multiprocessing connections check it.
            "authkey": bytes(multiprocessing.current_process().authkey),
        }
        if initializer is not None:
            settings["initializer"] = cloudpickle.dumps((initializer, tuple(initargs)))
        init = pickle.dumps(settings)
        self.n_workers = n_workers
        self._pool = _core.ProcessPool(
            n_workers,
            sys.executable,
            ["-m", "joblib_rs._worker"],
            sorted((env or {}).items()),
            os.getcwd(),
            init,
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
        and returns a pickle reduction for it (e.g. a reference to shared memory) or
        ``NotImplemented``.

        Raises
        ------
        pickle.PicklingError
            If ``fn`` (with its arguments) cannot be pickled; nothing is sent then.
        TerminatedWorkerError
            If a worker of this pool died.
        """
        if self.broken is not None:
            raise self.broken
        try:
            if os.environ.get("LOKY_PICKLER") == "pickle":
                # loky's switch to the standard pickler: faster on big plain data, but
                # functions from __main__ and lambdas cannot travel (unless wrapped with
                # wrap_non_picklable_objects).
                buffer = io.BytesIO()
                _StdlibTaskPickler(buffer).dump(fn)
                payload = buffer.getvalue()
            elif reduce_array is None or "numpy" not in sys.modules:
                payload = _task_pickle.dumps(fn)
            else:
                payload = _task_pickle.dumps(
                    fn, reduce_array, lambda buffer: _TaskPickler(buffer, reduce_array)
                )
        except Exception as exc:
            raise pickle.PicklingError(
                f"Could not pickle the task to send it to the workers: {exc}"
            ) from exc
        future: Future = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a pool that is shut down")
            task_id = self._pool.submit(payload)
            self._futures[task_id] = future
        return future

    def _collect(self) -> None:
        while True:
            kind, ident, data = self._pool.next_event(None)
            if kind == "closed":
                break
            if kind == "ready":
                continue
            if kind == "died":
                how, value, _lost = data
                self._break(
                    TerminatedWorkerError(
                        f"A worker process (pid {ident}) of the joblib-rs pool was unexpectedly "
                        f"terminated: it {_describe_exit(how, value)}. This can be caused by a "
                        "segmentation fault in the function or by excessive memory use making the "
                        "operating system kill the worker."
                    )
                )
                break
            with self._lock:
                future = self._futures.pop(ident, None)
            if future is None:
                continue
            try:
                if kind == "done":
                    future.set_result(pickle.loads(data))
                else:
                    exc, text = pickle.loads(data)
                    exc.__cause__ = RemoteTraceback(text)
                    future.set_exception(exc)
            except BaseException as exc:  # unpickling the outcome failed
                if not future.done():
                    future.set_exception(exc)

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

    def shutdown(self, grace: float = 5.0) -> None:
        """Lets the workers finish and exit (killing them after ``grace`` seconds)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(grace)
        self._fail_pending(RuntimeError("the process pool was shut down"))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=grace + 5)

    def terminate(self) -> None:
        """Kills every worker now; pending futures fail."""
        with self._lock:
            self._closed = True
        self._pool.terminate()
        self._fail_pending(RuntimeError("the process pool was terminated"))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
