"""joblib-rs: joblib, rebuilt with a Rust core.

Use it as ``import joblib_rs as joblib``.
"""

from joblib_rs._core import __version__
from joblib_rs.compressor import register_compressor
from joblib_rs.hashing import hash
from joblib_rs.numpy_pickle import CorruptFileError, dump, load

__all__ = ["CorruptFileError", "__version__", "dump", "hash", "load", "register_compressor"]
