"""joblib-rs: joblib, rebuilt with a Rust core.

Use it as ``import joblib_rs as joblib``.
"""

from joblib_rs._core import __version__
from joblib_rs.hashing import hash

__all__ = ["__version__", "hash"]
