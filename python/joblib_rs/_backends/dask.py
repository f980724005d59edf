"""The ``'dask'`` backend: ``Parallel`` batches run as tasks of a ``dask.distributed`` cluster.

::

    caller (Parallel)                          dask scheduler            dask workers
    ─────────────────                          ──────────────            ────────────
    batch ── big args: client.scatter ───────────────────────────────►  held in worker memory
          ── client.submit(_DaskBatch, tasks) ──► queue ────────────►  run the batch (nested
                                                                         Parallel -> 'dask')
    callback thread ◄── future done ◄─────────────────────────────────  results / exception
       fetch the result, hand it to Parallel (which dispatches the next batch)

``with parallel_config('dask'):`` (or ``parallel_backend('dask', scatter=[...])``) picks the
:class:`dask.distributed.Client` in scope (``get_client()``), or connects to
``scheduler_host``, or uses the ``client`` given. A batch becomes one dask task; the tasks'
arguments listed in ``scatter`` are sent to every worker once, when the backend is built, and
other arguments of at least ``max_nbytes`` bytes (``Parallel``/``parallel_config`` setting,
1 MB by default) are scattered once per call, so a big array shared by many tasks crosses the
network once. Results come back through each dask future's done-callback, in dask's callback
thread; an error cancels the call's remaining tasks on the cluster.

Inside a task, ``Parallel`` uses this backend again (with the worker's client): the nested tasks
go to the same scheduler, and the waiting task leaves its worker thread (``secede``) so the
cluster never runs more tasks at once than it has threads, nor deadlocks.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from typing import Any
from uuid import uuid4

from dask.sizeof import sizeof
from distributed import Client, get_client, rejoin, secede
from distributed.utils import thread_state

from joblib_rs._backends.base import AutoBatchingMixin, ParallelBackendBase
from joblib_rs._backends.config import parallel_config
from joblib_rs._task_pickle import RemoteFailure

__all__ = ["DaskDistributedBackend"]

_NO_CLIENT_MESSAGE = (
    "To use Joblib with Dask first create a Dask Client\n\n"
    "    from dask.distributed import Client\n"
    "    client = Client()\n"
    "or\n"
    "    client = Client('scheduler-address:8786')"
)


def _in_dask_task() -> bool:
    """Whether this thread is running a dask task (where ``secede`` is allowed)."""
    return hasattr(thread_state, "execution_state")


def _probe_task() -> None:
    """Does nothing: run to wait until the cluster has a worker."""


def _batch_name(tasks: Sequence[tuple[Callable[..., Any], tuple, dict]]) -> str:
    """``batch_of_<func>_<n>_calls`` (``mixed_`` prefix for several functions): the task's
    name on the dask dashboard."""
    funcs = {id(func) for func, _, _ in tasks}
    func = tasks[0][0]
    name = getattr(func, "__name__", None) or type(func).__name__
    prefix = "mixed_" if len(funcs) > 1 else ""
    return f"{prefix}batch_of_{name}_{len(tasks)}_calls"


class _DaskBatch:
    """The dask task of one batch: runs its calls, nested ``Parallel`` on ``'dask'``.

    A failing call is returned, not raised: the exception travels with the worker's formatted
    traceback, and the caller re-raises it with its own type and that traceback as
    ``__cause__`` (an exception that cannot be pickled comes back as a ``RuntimeError`` naming
    its type, where dask would fail to send it).
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, tasks: list[tuple[Callable[..., Any], list, dict]]) -> Any:
        try:
            with parallel_config(backend=DaskDistributedBackend(_lazy_client=True), n_jobs=-1):
                return [func(*args, **kwargs) for func, args, kwargs in tasks]
        except BaseException as exc:
            return RemoteFailure(exc)

    def __repr__(self) -> str:
        return self.name


class _ScatterCache:
    """Futures of scattered arguments, keyed by the argument's identity.

    ``id()`` alone is unsafe (a collected object's id is reused), so each entry keeps a weak
    reference and is dropped when its object dies.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, Any]] = {}

    def get(self, obj: Any) -> Any:
        entry = self._entries.get(id(obj))
        if entry is None or entry[0]() is not obj:
            return None
        return entry[1]

    def put(self, obj: Any, future: Any) -> None:
        key = id(obj)
        entries = self._entries

        def forget(ref: weakref.ref) -> None:
            current = entries.get(key)
            if current is not None and current[0] is ref:
                entries.pop(key, None)

        entries[key] = (weakref.ref(obj, forget), future)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


class DaskDistributedBackend(AutoBatchingMixin, ParallelBackendBase):
    """Runs ``Parallel`` batches as tasks on a ``dask.distributed`` cluster.

    Select it with ``parallel_config(backend='dask', ...)`` or ``parallel_backend('dask',
    ...)``; the keyword arguments below are given there. ``n_jobs`` is ignored: every thread
    of every worker of the cluster is used, and the number is read again at each call (workers
    may come and go).

    Parameters
    ----------
    scheduler_host : str or None, default=None
        Address of a scheduler (``'tcp://host:8786'``) to connect a new client to. When None,
        ``client`` is used, else the client in scope (``dask.distributed.get_client()``).
    scatter : list or tuple or None, default=None
        Objects sent to every worker once, when the backend is built; a task argument that
        *is* one of them (same object) travels as a reference to the worker's copy.
    client : dask.distributed.Client or None, default=None
        The client to submit to.
    loop : event loop or None, default=None
        Passed to ``Client`` when connecting to ``scheduler_host``.
    wait_for_workers_timeout : float, default=10
        Seconds to wait for a first worker when the cluster has none (e.g. adaptive clusters
        still provisioning); then ``TimeoutError``. 0 does not wait.
    nesting_level : int or None, default=None
        See :class:`~joblib_rs.ParallelBackendBase`.
    **submit_kwargs : dict
        Passed to ``Client.submit`` for every batch (e.g. ``resources=``, ``retries=``,
        ``workers=``).

    Raises
    ------
    ValueError
        No client given and none in scope.
    TypeError
        ``scatter`` is not a list or tuple.

    Notes
    -----
    Arguments of at least ``max_nbytes`` bytes (as measured by ``dask.sizeof``; a
    ``Parallel``/``parallel_config`` setting, default ``'1M'``, None to disable) that can be
    weakly referenced are scattered automatically, once per call, to one worker; dask moves
    them to others as needed.
    """

    MIN_IDEAL_BATCH_DURATION = 0.2
    MAX_IDEAL_BATCH_DURATION = 1.0
    supports_retrieve_callback = True
    supports_sharedmem = False
    uses_threads = False
    default_n_jobs = -1

    def __init__(
        self,
        scheduler_host: str | None = None,
        scatter: Sequence[Any] | None = None,
        client: Client | None = None,
        loop: Any = None,
        wait_for_workers_timeout: float = 10,
        nesting_level: int | None = None,
        *,
        _lazy_client: bool = False,
        **submit_kwargs: Any,
    ) -> None:
        super().__init__(nesting_level=nesting_level)
        if scatter is not None and not isinstance(scatter, list | tuple):
            raise TypeError(f"scatter must be a list/tuple, got `{type(scatter).__name__}`")
        if client is None and scheduler_host:
            options = {} if loop is None else {"loop": loop}
            client = Client(scheduler_host, set_as_default=False, **options)
        self._client = client
        if client is None and not _lazy_client:
            # Fail here, at parallel_config(...), rather than at the first Parallel call.
            self._client = self._client_in_scope()
        self.wait_for_workers_timeout = wait_for_workers_timeout
        self.submit_kwargs = submit_kwargs
        # The objects stay referenced by the backend, so their ids are stable keys.
        self._scatter = list(scatter) if scatter else []
        self._scattered: dict[int, Any] = {}
        if self._scatter:
            futures = self.client.scatter(self._scatter, broadcast=True, hash=False)
            self._scattered = {id(obj): f for obj, f in zip(self._scatter, futures, strict=True)}
        self._call_futures = _ScatterCache()
        self._max_nbytes: int | None = 1024**2
        self._pending: set[Any] = set()
        self._pending_lock = threading.Lock()
        self._nested: DaskDistributedBackend | None = None

    @staticmethod
    def _client_in_scope() -> Client:
        try:
            return get_client()
        except ValueError as exc:
            raise ValueError(_NO_CLIENT_MESSAGE) from exc

    @property
    def client(self) -> Client:
        """The :class:`dask.distributed.Client` the batches are submitted to."""
        if self._client is None:
            self._client = self._client_in_scope()
        return self._client

    def __reduce__(self) -> tuple[Any, ...]:
        # A client does not travel: in a worker the backend finds the worker's own client.
        return _lazy_backend, ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client={self._client!r})"

    # ------------------------------------------------------------------ sizing

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """The number of threads of all the cluster's workers (``n_jobs`` is ignored).

        When the cluster has no worker yet, wait up to ``wait_for_workers_timeout`` seconds
        for one.
        """
        n_threads = sum(self.client.nthreads().values())
        if n_threads or not self.wait_for_workers_timeout:
            return n_threads
        try:
            self.client.submit(_probe_task, pure=False).result(
                timeout=self.wait_for_workers_timeout
            )
        except TimeoutError as exc:
            raise TimeoutError(
                f"DaskDistributedBackend has no worker after {self.wait_for_workers_timeout} "
                "seconds. Make sure that workers are started and can properly connect to the "
                "scheduler and increase the joblib/dask connection timeout with:\n\n"
                "parallel_config(backend='dask', wait_for_workers_timeout="
                f"{max(10, 2 * self.wait_for_workers_timeout)})"
            ) from exc
        return sum(self.client.nthreads().values())

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Read the cluster's size and the call's scatter threshold (``max_nbytes``)."""
        self.parallel = parallel
        self._max_nbytes = backend_kwargs.get("max_nbytes", 1024**2)
        return self.effective_n_jobs(n_jobs)

    # ------------------------------------------------------------------ calls

    def start_call(self) -> None:
        """Start with an empty per-call scatter cache."""
        self._call_futures.clear()

    def stop_call(self) -> None:
        """Release the call's scattered arguments and forget its futures."""
        self._call_futures.clear()
        with self._pending_lock:
            self._pending.clear()

    def terminate(self) -> None:
        """Forget the batch statistics (the cluster itself belongs to the user)."""
        self.reset_batch_stats()

    def _as_future(self, arg: Any) -> Any:
        """``arg``, or the future of its scattered copy."""
        future = self._scattered.get(id(arg))
        if future is not None:
            return future
        limit = self._max_nbytes
        if limit is None or not _weakrefable(arg):
            return arg
        future = self._call_futures.get(arg)
        if future is None:
            if sizeof(arg) < limit:
                return arg
            # hash=False: a content hash of a big object costs time, and nested scatters
            # with hashed keys are known to collide with cancellations in distributed.
            future = self.client.scatter(arg, hash=False)
            self._call_futures.put(arg, future)
        return future

    def submit(self, func: Any, callback: Callable[[Any], None] | None = None) -> Any:
        """Submit the batch ``func`` (a ``BatchedCalls``) as one dask task.

        ``callback`` receives ``(ok, value)`` in dask's callback thread once the task is
        finished: ``value`` is the list of results, or the exception.
        """
        tasks = [
            (
                f,
                [self._as_future(a) for a in args],
                {k: self._as_future(v) for k, v in kwargs.items()},
            )
            for f, args, kwargs in func.items
        ]
        name = _batch_name(tasks)
        future = self.client.submit(
            _DaskBatch(name), tasks, key=f"{name}-{uuid4().hex}", pure=False, **self.submit_kwargs
        )
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._done_callback(callback))
        return future

    def _done_callback(self, callback: Callable[[Any], None] | None) -> Callable[[Any], None]:
        def done(future: Any) -> None:
            with self._pending_lock:
                self._pending.discard(future)
            if future.cancelled():
                # Aborted call (or a cancel from elsewhere): no round trip to the loop.
                outcome = (False, CancelledError(f"dask task {future.key} was cancelled"))
            else:
                # Fetch here, in dask's callback thread, not under Parallel's lock.
                try:
                    outcome = (True, future.result())
                except BaseException as exc:
                    outcome = (False, exc)
            # The result is here: free it on the cluster now. Waiting for the future to be
            # collected could take long, as an error's traceback keeps this frame alive.
            future.release()
            if callback is not None:
                callback(outcome)

        return done

    def retrieve_result_callback(self, out: tuple[bool, Any]) -> Any:
        """The batch's results, or raise its exception (worker traceback as ``__cause__``)."""
        ok, value = out
        if isinstance(value, RemoteFailure):
            # In-process workers (``Client(processes=False)``) hand results over unpickled.
            value = value.rebuild()
        if not ok or isinstance(value, BaseException):
            raise value
        return value

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel the call's tasks still queued or running on the cluster."""
        with self._pending_lock:
            pending = list(self._pending)
            self._pending.clear()
        if pending:
            self.client.cancel(pending)
        self._call_futures.clear()

    # ------------------------------------------------------------------ nesting

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """``'dask'`` again, with all the cluster's workers, for calls made inside tasks."""
        if self._nested is None:
            self._nested = DaskDistributedBackend(
                client=self._client,
                nesting_level=(self.nesting_level or 0) + 1,
                _lazy_client=True,
            )
        return self._nested, -1

    @contextlib.contextmanager
    def retrieval_context(self) -> Iterator[None]:
        """In a dask task, give the worker thread back while waiting (``secede``).

        The worker then runs the nested tasks in the freed slot: no deadlock when every
        thread waits on nested work, and never more busy threads than the cluster has.
        """
        if not _in_dask_task():
            yield
            return
        secede()
        try:
            yield
        finally:
            rejoin()


def _lazy_backend() -> DaskDistributedBackend:
    return DaskDistributedBackend(_lazy_client=True)
