"""The backends of ``Parallel``, one module each, and their registry.

::

    config            the active configuration (parallel_config) and the name registry
      ▲ imported by
    base              ParallelBackendBase, AutoBatchingMixin, PoolManagerMixin, errors
      ▲
    sequential ◄── threads, multiprocessing_pool ◄── loky          dask (registered on demand)

Layers only import downwards: ``base`` imports no backend (the builtin nested defaults
register themselves), ``config`` only ``base``, and this package registers the builtin
backends by name. ``joblib_rs.parallel`` sits above all of them; ``_parallel_backends`` is
joblib's import path for these names.
"""

from joblib_rs._backends import config
from joblib_rs._backends.base import (
    MULTIPROCESSING_ENABLED,
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    PoolManagerMixin,
    TimeoutError,
)
from joblib_rs._backends.loky import LokyBackend
from joblib_rs._backends.multiprocessing_pool import MultiprocessingBackend, default_mp_context
from joblib_rs._backends.sequential import SequentialBackend
from joblib_rs._backends.threads import ThreadingBackend

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
    "default_mp_context",
]

config.BACKENDS.update({"threading": ThreadingBackend, "sequential": SequentialBackend})
if MULTIPROCESSING_ENABLED:
    # joblib's name for its default process backend: here the Rust process pool.
    config.BACKENDS.update({"multiprocessing": MultiprocessingBackend, "loky": LokyBackend})
else:
    # JOBLIB_MULTIPROCESSING=0: as in joblib, threads by default (which then run
    # sequentially) and the process backends fall back to them with a warning.
    config.DEFAULT_BACKEND = config.DEFAULT_PROCESS_BACKEND = "threading"
