"""joblib's import path for the backends (``joblib._parallel_backends``): a face.

The backends live in the ``joblib_rs._backends`` package, one module each (``base``,
``sequential``, ``threads``, ``multiprocessing_pool``, ``loky``, ``dask``); the process pool's
lifetime in ``joblib_rs._process_pool``. Third-party code importing these names from here
gets the same objects.
"""

from typing import Any

from joblib_rs._backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    LokyBackend,
    MultiprocessingBackend,
    ParallelBackendBase,
    PoolManagerMixin,
    SequentialBackend,
    ThreadingBackend,
    TimeoutError,
    default_mp_context,
)
from joblib_rs._backends.base import inside_dask_worker
from joblib_rs._cpu import cpu_count
from joblib_rs._process_pool import _reusable_pool

__all__ = [
    "AutoBatchingMixin",
    "FallbackToBackend",
    "LokyBackend",
    "MultiprocessingBackend",
    "ParallelBackendBase",
    "PoolManagerMixin",
    "SequentialBackend",
    "ThreadingBackend",
    "TimeoutError",
    "_reusable_pool",
    "cpu_count",
    "default_mp_context",
    "inside_dask_worker",
]


def __getattr__(name: str) -> Any:
    # joblib imports these here; loaded on first use (``joblib_rs.pool`` needs
    # ``multiprocessing.pool``, which a platform without ``_multiprocessing`` lacks, and
    # ``import joblib_rs`` stays free of the executor modules).
    if name == "MemmappingPool":
        from joblib_rs.pool import MemmappingPool

        return MemmappingPool
    if name == "ShutdownExecutorError":
        from joblib_rs.externals.loky.process_executor import ShutdownExecutorError

        return ShutdownExecutorError
    if name == "get_memmapping_executor":
        from joblib_rs.executor import get_memmapping_executor

        return get_memmapping_executor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
