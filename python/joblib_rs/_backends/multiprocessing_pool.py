"""The ``'multiprocessing'`` backend: batches run in a ``joblib.pool.MemmappingPool`` per call.

::

    configure ─► joblib_rs.pool.MemmappingPool(n, ...)   (``joblib.pool`` under install())
      its base is multiprocessing's Pool (always, unless a third party re-parented it):
        own transport: Pool initializer _init_worker(env, ArrayPolicy, initializer, initargs)
        submit(batch) ─► _PoolTask(dumps_task(batch, call's reduce_array)) ─► apply_async
                         worker: loads_task(payload)() ─► (True, dumps_result(value, policy))
                                                        or (False, dumps_failure(exc))
      any other base (ray's joblib backend sets ``PicklingPool.__bases__ = (ray's Pool,)``),
      or custom forward/backward reducers: joblib's contract, the pool pickles the batch
        submit(batch) ─► _PlainTask(batch) ─► apply_async ─► (True, value) or (False, failure)
    callback(out) ─► retrieve_result_callback: result, or the worker's exception raised

With its own transport, tasks and results travel with ``_task_pickle`` as on the ``'loky'``
pool (the stdlib pool only carries their bytes), so lambdas and ``__main__`` functions work and
a result is pickled once; large arrays go through the call's shared-memory folder
(``_memmapping``), in both directions. Otherwise the pool is built and used exactly as joblib
1.6 builds it: every pool option, known or not (``ray_remote_args``), reaches its constructor.
"""

from __future__ import annotations

import inspect
import multiprocessing as mp
import os
import warnings
from collections.abc import Callable
from typing import Any

from joblib_rs._backends.base import (
    DASK_DAEMON_REFUSAL,
    MULTIPROCESSING_ENABLED,
    FallbackToBackend,
    MeasuredBatchingMixin,
    ParallelBackendBase,
    PoolManagerMixin,
    check_n_jobs,
    inside_dask_worker,
    resolve_n_jobs,
)
from joblib_rs._backends.sequential import SequentialBackend
from joblib_rs._memmapping import MemmappingContext
from joblib_rs._task_pickle import (
    ArrayPolicy,
    dumps_failure,
    dumps_result,
    dumps_task,
    loads_failure,
    loads_result,
    loads_task,
)

__all__ = ["MultiprocessingBackend", "default_mp_context"]


def default_mp_context() -> Any:
    """The multiprocessing context: ``JOBLIB_START_METHOD`` if set, else the platform's."""
    method = os.environ.get("JOBLIB_START_METHOD", "").strip() or None
    return mp.get_context(method)


# The array policy of this worker process, set once by the pool's initializer.
_worker_policy: ArrayPolicy | None = None


def _init_worker(
    env: dict[str, str], policy: ArrayPolicy | None, initializer: Any, initargs: tuple
) -> None:
    global _worker_policy
    os.environ.update(env)
    _worker_policy = policy
    if initializer is not None:
        initializer(*initargs)


class _PoolTask:
    """A batch as the stdlib pool carries it: bytes in, ``(ok, bytes)`` out."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __call__(self) -> tuple[bool, bytes]:
        try:
            value = loads_task(self.payload)()
        except BaseException as exc:
            return False, dumps_failure(exc)
        try:
            return True, dumps_result(value, _worker_policy)
        except BaseException as exc:
            return False, dumps_failure(exc)


class _PlainTask:
    """A batch as a pool that does its own pickling carries it: ``(ok, value or failure)``.

    The failure is the exception pickled with its worker traceback (``dumps_failure``), so
    every pool brings it back the same way, whatever its own error reporting.
    """

    __slots__ = ("func",)

    def __init__(self, func: Callable[[], Any]) -> None:
        self.func = func

    def __call__(self) -> tuple[bool, Any]:
        try:
            return True, self.func()
        except BaseException as exc:
            return False, dumps_failure(exc)


def _pool_base(pool_class: type) -> type:
    """The class ``pool_class`` builds on below ``joblib_rs.pool``'s own classes: normally
    :class:`multiprocessing.pool.Pool`, another when a third party re-parented
    ``PicklingPool`` (ray's joblib backend does)."""
    for cls in pool_class.__mro__:
        if cls.__module__ != "joblib_rs.pool":
            return cls
    return object


def _accepted_options(base: type) -> frozenset[str] | None:
    """Keyword arguments the pool base's constructor takes (None: any)."""
    try:
        parameters = inspect.signature(base.__init__).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters if p.name not in ("self", "processes"))


class MultiprocessingBackend(PoolManagerMixin, MeasuredBatchingMixin, ParallelBackendBase):
    """Runs batches in a ``joblib.pool.MemmappingPool`` (joblib's legacy process backend).

    The pool is :class:`joblib_rs.pool.MemmappingPool` (``joblib.pool.MemmappingPool`` under
    :func:`joblib_rs.install`), built per call as joblib builds it, so backends written for
    joblib that subclass this one and re-parent ``PicklingPool`` (ray's) get their pool.
    On multiprocessing's own pool, batches travel with ``_task_pickle``, so lambdas and
    functions defined in ``__main__`` work, and arrays of at least ``max_nbytes`` travel
    through shared memory as ``'loky'``'s do (see ``joblib_rs._memmapping``), both ways.
    With custom ``forward_reducers``/``backward_reducers``, or on another pool base, the
    pool pickles the batches itself, as in joblib.
    The start method is the platform default unless ``JOBLIB_START_METHOD`` names another,
    or a multiprocessing context is passed as ``Parallel(backend=ctx)`` or ``context=ctx``.
    Pool options (``initializer``, ``initargs``, ``maxtasksperchild``, and any option of a
    re-parented pool, such as ray's ``ray_remote_args``) pass through
    ``Parallel(**backend_kwargs)`` or ``parallel_config(**backend_params)``.
    """

    supports_retrieve_callback = True
    supports_return_generator = False
    supports_sharedmem = False
    uses_threads = False

    _POOL_OPTIONS: tuple[str, ...] = ("initializer", "initargs", "maxtasksperchild", "context")
    # Parallel's own settings: memmapping options are read before these are dropped.
    _IGNORED_OPTIONS: tuple[str, ...] = (
        "temp_folder",
        "max_nbytes",
        "mmap_mode",
        "verbose",
        "prefer",
        "require",
    )

    #: ``MemmappingPool``'s own options; the others go on to its base's constructor.
    _MEMMAPPING_POOL_OPTIONS: tuple[str, ...] = (
        "temp_folder",
        "max_nbytes",
        "mmap_mode",
        "forward_reducers",
        "backward_reducers",
        "verbose",
        "prewarm",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: Any = None
        self._memmapping: MemmappingContext | None = None
        # Whether batches travel as _task_pickle bytes (else the pool pickles them).
        self._own_transport = True

    def _nested_refusal(self) -> str | None:
        if mp.current_process().daemon:
            if inside_dask_worker():
                return DASK_DAEMON_REFUSAL
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
        """``n_jobs`` resolved against :func:`cpu_count`; 1 inside a worker process or when
        ``JOBLIB_MULTIPROCESSING=0``."""
        check_n_jobs(n_jobs)
        if n_jobs is None or not MULTIPROCESSING_ENABLED:
            return 1
        refusal = self._nested_refusal()
        if refusal is not None:
            if n_jobs != 1:
                warnings.warn(refusal, stacklevel=3)
            return 1
        return resolve_n_jobs(n_jobs)

    def _settings(self, backend_kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**self.backend_kwargs, **backend_kwargs}

    def _pool_options(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The pool's own options among the backend and call keyword arguments; Parallel's
        settings are dropped and anything else is a ``TypeError``."""
        options = dict(settings)
        for name in self._IGNORED_OPTIONS:
            options.pop(name, None)
        unknown = sorted(set(options) - set(self._POOL_OPTIONS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword argument(s) {unknown}; "
                f"expected some of {list(self._POOL_OPTIONS)}"
            )
        return options

    @staticmethod
    def _memmapping_context(settings: dict[str, Any]) -> MemmappingContext:
        """Shared-memory transport of large arrays, from Parallel's memmapping settings."""
        return MemmappingContext(
            settings.get("temp_folder"),
            settings.get("max_nbytes", 1024**2),
            settings.get("mmap_mode", "r"),
        )

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Start a pool of ``n_jobs`` processes (or fall back to sequential for one).

        The pool is ``joblib_rs.pool.MemmappingPool(n_jobs, **options)``, its options those
        of the backend and of the call (Parallel's ``temp_folder``, ``max_nbytes``,
        ``mmap_mode``, ``verbose`` and ``context`` included, as joblib passes them); an
        option neither it nor its base takes is a ``TypeError`` naming it.
        """
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        settings = self._settings(backend_kwargs)
        for name in ("prefer", "require"):
            settings.pop(name, None)
        # Imported here: most processes never use this backend (nor multiprocessing.pool).
        from multiprocessing.pool import Pool

        from joblib_rs import pool as pool_module

        pool_class = pool_module.MemmappingPool
        base = _pool_base(pool_class)
        self._check_pool_options(base, settings)
        self.parallel = parallel
        self._own_transport = issubclass(base, Pool) and not (
            settings.get("forward_reducers") or settings.get("backward_reducers")
        )
        if self._own_transport:
            self._pool = self._start_own_transport_pool(pool_class, n_jobs, settings)
        else:
            self._pool = pool_class(n_jobs, **settings)
        return n_jobs

    def _check_pool_options(self, base: type, settings: dict[str, Any]) -> None:
        accepted = _accepted_options(base)
        if accepted is None:
            return
        expected = accepted | set(self._MEMMAPPING_POOL_OPTIONS)
        unknown = sorted(set(settings) - expected)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword argument(s) {unknown}; "
                f"expected some of {sorted(expected)}"
            )

    def _start_own_transport_pool(
        self, pool_class: type, n_jobs: int, settings: dict[str, Any]
    ) -> Any:
        """The pool carries ``_task_pickle`` bytes; large arrays go through this call's
        shared-memory folder, so the pool's own array reducer is off."""
        memmapping = self._memmapping = self._memmapping_context(settings)
        policy = None
        if memmapping.max_nbytes is not None:
            policy = ArrayPolicy(memmapping.max_nbytes, memmapping.folder, memmapping.mmap_mode)
        options = {k: v for k, v in settings.items() if k not in self._MEMMAPPING_POOL_OPTIONS}
        context = options.pop("context", None) or default_mp_context()
        initargs = (
            self._prepare_worker_env(n_jobs),
            policy,
            options.pop("initializer", None),
            tuple(options.pop("initargs", None) or ()),
        )
        try:
            return pool_class(
                n_jobs,
                max_nbytes=None,
                initializer=_init_worker,
                initargs=initargs,
                context=context,
                **options,
            )
        except BaseException:
            self._drop_memmapping()
            raise

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None):
        """Send the batch to the pool: pickled here, large arrays through shared memory, on
        multiprocessing's pool; as it is otherwise (the pool pickles it)."""
        if self._own_transport:
            memmapping: Any = self._memmapping  # set by configure()
            task: Any = _PoolTask(dumps_task(func, memmapping.reduce_array))
        else:
            task = _PlainTask(func)
        return self._get_pool().apply_async(task, (), callback=callback, error_callback=callback)

    def retrieve_result_callback(self, out: Any) -> Any:
        """Return the batch's results or raise its exception (worker traceback as cause)."""
        if isinstance(out, BaseException):  # the pool itself failed
            raise out
        ok, payload = out
        if not ok:
            raise loads_failure(payload)
        return loads_result(payload) if self._own_transport else payload

    def _drop_memmapping(self) -> None:
        if self._memmapping is not None:
            self._memmapping.cleanup()
            self._memmapping = None

    def terminate(self) -> None:
        """Stop the pool's processes and remove the call's shared-memory files."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
        self._drop_memmapping()
        self.reset_batch_stats()
