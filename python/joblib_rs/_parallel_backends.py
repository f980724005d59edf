"""joblib's import path for the backends (``joblib._parallel_backends``): a face.

The backends live in the ``joblib_rs._backends`` package, one module each (``base``,
``sequential``, ``threads``, ``multiprocessing_pool``, ``loky``, ``dask``); the process pool's
lifetime in ``joblib_rs._process_pool``. Third-party code importing these names from here
gets the same objects.
"""

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
    "default_mp_context",
    "inside_dask_worker",
]
