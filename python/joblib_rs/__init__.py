"""joblib-rs: joblib, rebuilt with a Rust core.

Use it as ``import joblib_rs as joblib``.
"""

from joblib_rs._core import __version__
from joblib_rs._store_backends import CacheWarning
from joblib_rs.compressor import register_compressor
from joblib_rs.hashing import hash
from joblib_rs.memory import (
    JobLibCollisionWarning,
    MemorizedResult,
    Memory,
    expires_after,
    register_store_backend,
)
from joblib_rs.numpy_pickle import CorruptFileError, dump, load

__all__ = [
    "CacheWarning",
    "CorruptFileError",
    "JobLibCollisionWarning",
    "MemorizedResult",
    "Memory",
    "__version__",
    "dump",
    "expires_after",
    "hash",
    "load",
    "register_compressor",
    "register_store_backend",
]
