"""Where a cached function's results live: the store backend of a location, and the
function's folder inside it.

``Memory(location, backend=...)`` ─► :func:`_store_backend_factory` ─► a store object: the
``'local'`` :class:`~joblib_rs._store_backends.FileSystemStoreBackend`, an object store for
``s3://``-style URLs (:mod:`joblib_rs._remote_store`), or a backend registered with
:func:`register_store_backend`. A function's entries then live under
:func:`_build_func_identifier`'s folder name (module path and name, sanitised so that it
stays inside the location).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from joblib_rs._func_inspect import get_func_name
from joblib_rs._remote_store import remote_backend_for
from joblib_rs._store_backends import FileSystemStoreBackend, StoreBackendBase

__all__ = ["register_store_backend"]

_STORE_BACKENDS: dict[str, type] = {"local": FileSystemStoreBackend}


def register_store_backend(backend_name: str, backend: type) -> None:
    """Extend available store backends.

    The Memory, MemorizeResult and MemorizeFunc objects are designed to be agnostic to the
    type of store used behind. By default, the local file system is used but this function
    gives the possibility to extend joblib's memory pattern with other types of storage such
    as cloud storage (S3, GCS, OpenStack, HadoopFS, etc) or blob DBs.

    Parameters
    ----------
    backend_name : str
        The name identifying the store backend being registered. For example, 'local' is used
        with FileSystemStoreBackend.
    backend : StoreBackendBase subclass
        The name of a class that implements the StoreBackendBase interface.
    """
    if not isinstance(backend_name, str):
        raise ValueError(f"Store backend name should be a string, '{backend_name}' given.")
    is_store = isinstance(backend, type) and issubclass(backend, StoreBackendBase)
    if backend is None or not is_store:
        raise ValueError(f"Store backend should inherit StoreBackendBase, '{backend}' given.")
    _STORE_BACKENDS[backend_name] = backend


def _store_backend_factory(
    backend: str,
    location: Any,
    verbose: int = 0,
    backend_options: dict[str, Any] | None = None,
) -> Any:
    """The configured store for ``location`` (a path, or a store object used as is)."""
    if isinstance(location, StoreBackendBase):
        return location
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if isinstance(location, str):
        # scheme://... is object storage (or an unknown scheme: ValueError), never a folder.
        remote = remote_backend_for(location) if backend == "local" else None
        location = location if remote is not None else os.path.expanduser(location)
        cls = remote or _STORE_BACKENDS.get(backend)
        if cls is None:
            raise TypeError(f"Unknown location {location} or backend {backend}")
        store = cls()
        store.configure(location, verbose=verbose, backend_options=backend_options or {})
        return store
    if location is not None:
        warnings.warn(
            f"Instantiating a backend using a {location.__class__.__name__} as a location is "
            "not supported by joblib. Returning None instead.",
            UserWarning,
            stacklevel=3,
        )
    return None


_UNSAFE_IN_NAME = frozenset("/\\\0%") | ({os.altsep} if os.altsep else set())


def _safe_component(part: str) -> str:
    """One folder name of a function's cache path, from its module or qualified name.

    ``__module__`` and ``__qualname__`` are ordinary attributes that anything may set: a
    separator, ``..``, a leading dot (the store's internal names) or NUL would place the
    folder outside the cache location or among the store's own files. Such characters are
    %-encoded (``%`` too, so distinct names stay distinct); ordinary names are unchanged.
    """
    if part in (".", ".."):
        return part.replace(".", "%2E")
    if not _UNSAFE_IN_NAME.isdisjoint(part) or part.startswith("."):
        out = "".join(f"%{ord(c):02X}" if c in _UNSAFE_IN_NAME else c for c in part)
        return "%2E" + out[1:] if out.startswith(".") else out
    return part


def _build_func_identifier(func: Any) -> str:
    modules, name = get_func_name(func)
    return os.path.join(*(_safe_component(p) for p in [*modules, name] if p != ""))
