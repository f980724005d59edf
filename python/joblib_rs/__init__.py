"""joblib-rs: joblib, rebuilt with a Rust core.

Use it as ``import joblib_rs as joblib``. This module gathers joblib's public names from
their homes: ``Parallel``/``delayed`` (``parallel``), ``Memory`` (``memory``), ``dump``/``load``
(``numpy_pickle``), ``hash`` (``hashing``); each sits on the compiled core, ``_core``. The
picture of the whole is ``docs/architecture.md``.
"""

from joblib_rs._cloudpickle_wrapper import wrap_non_picklable_objects
from joblib_rs._core import __version__
from joblib_rs._cpu import cpu_count
from joblib_rs._install import install, uninstall
from joblib_rs._joblib_bridge import register_joblib_backend
from joblib_rs._parallel_backends import ParallelBackendBase
from joblib_rs._store_backends import CacheWarning, StoreBackendBase
from joblib_rs.compressor import register_compressor
from joblib_rs.exceptions import BrokenProcessPool, TerminatedWorkerError
from joblib_rs.hashing import hash
from joblib_rs.logger import Logger, PrintTime
from joblib_rs.memory import (
    JobLibCollisionWarning,
    MemorizedResult,
    Memory,
    expires_after,
    register_store_backend,
)
from joblib_rs.numpy_pickle import CorruptFileError, dump, load
from joblib_rs.parallel import (
    Parallel,
    delayed,
    effective_n_jobs,
    parallel_backend,
    parallel_config,
    register_parallel_backend,
)

__all__ = [
    "BrokenProcessPool",
    "CacheWarning",
    "CorruptFileError",
    "JobLibCollisionWarning",
    "Logger",
    "MemorizedResult",
    "Memory",
    "Parallel",
    "ParallelBackendBase",
    "PrintTime",
    "StoreBackendBase",
    "TerminatedWorkerError",
    "__version__",
    "cpu_count",
    "delayed",
    "dump",
    "effective_n_jobs",
    "expires_after",
    "hash",
    "install",
    "load",
    "parallel_backend",
    "parallel_config",
    "register_compressor",
    "register_joblib_backend",
    "register_parallel_backend",
    "register_store_backend",
    "uninstall",
    "wrap_non_picklable_objects",
]
