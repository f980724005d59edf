"""joblib-rs: joblib, rebuilt with a Rust core.

Use it as ``import joblib_rs as joblib``.
"""

from joblib_rs._core import __version__

__all__ = ["__version__"]
