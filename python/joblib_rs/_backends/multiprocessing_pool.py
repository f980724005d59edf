"""The ``'multiprocessing'`` backend: batches run in a ``multiprocessing.Pool`` made per call.

::

    configure ─► context.Pool(n, _init_worker(env, ArrayPolicy, initializer, initargs))
    submit(batch) ─► _PoolTask(dumps_task(batch, call's reduce_array)) ─► apply_async
                         worker: loads_task(payload)() ─► (True, dumps_result(value, policy))
                                                        or (False, dumps_failure(exc))
    callback(out) ─► retrieve_result_callback: loads_result / loads_failure

Tasks and results travel with ``_task_pickle`` as on the ``'loky'`` pool (the stdlib pool only
carries their bytes), so lambdas and ``__main__`` functions work and a result is pickled once;
large arrays go through the call's shared-memory folder (``_memmapping``), in both directions.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from collections.abc import Callable
from typing import Any

from joblib_rs._backends.base import (
    MULTIPROCESSING_ENABLED,
    FallbackToBackend,
    MeasuredBatchingMixin,
    ParallelBackendBase,
    PoolManagerMixin,
    check_n_jobs,
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


class MultiprocessingBackend(PoolManagerMixin, MeasuredBatchingMixin, ParallelBackendBase):
    """Runs batches in a :class:`multiprocessing.Pool` (joblib's legacy process backend).

    Batches travel with ``_task_pickle``, so lambdas and functions defined in ``__main__``
    work; arrays of at least ``max_nbytes`` travel through shared memory as ``'loky'``'s do
    (see ``joblib_rs._memmapping``), as joblib's memmapping pool does for this backend.
    The start method is the platform default unless ``JOBLIB_START_METHOD`` names another,
    or a multiprocessing context is passed as ``Parallel(backend=ctx)`` or ``context=ctx``.
    Pool options (``initializer``, ``initargs``, ``maxtasksperchild``) pass through
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: Any = None
        self._memmapping: MemmappingContext | None = None

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
        """Start a pool of ``n_jobs`` processes (or fall back to sequential for one)."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        settings = self._settings(backend_kwargs)
        options = self._pool_options(settings)
        memmapping = self._memmapping = self._memmapping_context(settings)
        policy = None
        if memmapping.max_nbytes is not None:
            policy = ArrayPolicy(memmapping.max_nbytes, memmapping.folder, memmapping.mmap_mode)
        context = options.pop("context", None) or default_mp_context()
        initargs = (
            self._prepare_worker_env(n_jobs),
            policy,
            options.pop("initializer", None),
            tuple(options.pop("initargs", ())),
        )
        self.parallel = parallel
        self._pool = context.Pool(n_jobs, _init_worker, initargs, **options)
        return n_jobs

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None):
        """Send the pickled batch to the pool; large arrays through shared memory."""
        memmapping: Any = self._memmapping  # set by configure()
        task = _PoolTask(dumps_task(func, memmapping.reduce_array))
        return self._pool.apply_async(task, (), callback=callback, error_callback=callback)

    def retrieve_result_callback(self, out: Any) -> Any:
        """Return the batch's results or raise its exception (worker traceback as cause)."""
        if isinstance(out, BaseException):  # the pool itself failed
            raise out
        ok, payload = out
        if ok:
            return loads_result(payload)
        raise loads_failure(payload)

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
