"""joblib's import path of the ``'dask'`` backend; it lives in ``joblib_rs._backends.dask``."""

from joblib_rs._backends.dask import DaskDistributedBackend

__all__ = ["DaskDistributedBackend"]
