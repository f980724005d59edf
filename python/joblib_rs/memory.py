"""A context object for caching a function's return value each time it is called with the same
input arguments: joblib's :class:`Memory`, over the Rust store.

A call is keyed by the function's identity (module path and name, see
:func:`~joblib_rs._func_inspect.get_func_name`) and the hash of its bound arguments
(:func:`joblib_rs.hash`). A hit on the local store is one call into Rust that binds, hashes,
reads, verifies and decodes the entry. A miss takes the entry's lock, so that among processes
(and threads) missing the same key at once one computes and the others load its result;
entries are published atomically. See ``docs/memory.md`` and ``docs/store.md``.

This module is joblib's face (``joblib.memory``'s names, all importable from here) and holds
:class:`Memory` itself; the rest lives one concern per module::

    Memory.cache(f) ─► MemorizedFunc (_memorized_func: the call path)
                         ├ CodeCheck (_func_code_check: does the cache match f's code?)
                         ├ store: _memory_location (which backend, f's folder)
                         │        ─► _store_backends (local, Rust) / _remote_store / yours
                         └ MemorizedResult, NotMemorized* (_memory_results)
"""

from __future__ import annotations

import asyncio  # noqa: F401  (joblib.memory's namespace)
import datetime
import functools
import inspect
import logging  # noqa: F401  (joblib.memory's namespace)
import os
import pathlib
import textwrap  # noqa: F401  (joblib.memory's namespace)
import time
import tokenize  # noqa: F401  (joblib.memory's namespace)
import warnings
import weakref  # noqa: F401  (joblib.memory's namespace)
from collections.abc import Callable
from typing import Any, overload

from joblib_rs import _core
from joblib_rs._func_code_check import (
    _FUNCTION_HASHES,  # noqa: F401  (joblib's)
    FIRST_LINE_TEXT,  # noqa: F401  (joblib's)
    JobLibCollisionWarning,
    _extract_first_line,  # noqa: F401
    forget_checked_code,
)
from joblib_rs._func_inspect import (  # noqa: F401  (joblib.memory's namespace)
    format_call,
    format_signature,
    format_time,
    get_func_code,
    get_func_name,
    pformat,
)
from joblib_rs._memorized_func import AsyncMemorizedFunc, MemorizedFunc
from joblib_rs._memory_location import (
    _STORE_BACKENDS,  # noqa: F401  (joblib's)
    _build_func_identifier,  # noqa: F401  (joblib's)
    _safe_component,  # noqa: F401
    _store_backend_factory,
    register_store_backend,
)
from joblib_rs._memory_results import (
    AsyncNotMemorizedFunc,
    MemorizedResult,
    NotMemorizedFunc,
    NotMemorizedResult,
)
from joblib_rs._store_backends import (
    CacheWarning,
    FileSystemStoreBackend,  # noqa: F401  (joblib's)
    StoreBackendBase,
)
from joblib_rs.func_inspect import extract_first_line, filter_args  # noqa: F401  (joblib's)
from joblib_rs.logger import Logger

__all__ = [
    "AsyncMemorizedFunc",
    "AsyncNotMemorizedFunc",
    "CacheWarning",
    "JobLibCollisionWarning",
    "MemorizedFunc",
    "MemorizedResult",
    "Memory",
    "NotMemorizedFunc",
    "NotMemorizedResult",
    "expires_after",
    "register_store_backend",
]


class Memory(Logger):
    """A context object for caching a function's return value each time it is called with
    the same input arguments.

    All values are cached on the filesystem, in a deep directory structure.

    Parameters
    ----------
    location : str, pathlib.Path or None
        The path of the base directory to use as a data store or None. If None is given, no
        caching is done and the Memory object is completely transparent. The cache lives in
        its ``joblib_rs`` sub-folder.
    backend : str, optional, default='local'
        Type of store backend for reading/writing cache files. The 'local' backend is using
        regular filesystem operations to manipulate data (open, mv, etc) in the backend.
    mmap_mode : {None, 'r+', 'r', 'w+', 'c'}, optional
        The memmapping mode used when loading from cache numpy arrays. See numpy.load for the
        meaning of the arguments.
    compress : boolean, integer or 2-tuple, optional
        Whether to zip the stored data on disk. If an integer is given, it should be between 1
        and 9, and sets the amount of compression. Note that compressed arrays cannot be read
        by memmapping. If a 2-tuple is given, the first element must be a string
        corresponding to a compression method and the second element an integer level.
    verbose : int, optional
        Verbosity flag, controls the debug messages that are issued as functions are
        evaluated.
    bytes_limit : int or str, optional
        Limit in bytes of the size of the cache, applied by :meth:`reduce_size` when it is
        called without a limit (joblib 0.13's API; prefer passing the limit to
        :meth:`reduce_size`).
    backend_options : dict, optional
        Contains a dictionary of named parameters used to configure the store backend. The
        'local' backend accepts ``lock_timeout`` (seconds, default 300): how long a process
        waits for another one computing the same result before computing it too.
    cachedir : str or None, optional
        Deprecated alias of ``location``.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | StoreBackendBase | None = None,
        backend: str = "local",
        mmap_mode: str | None = None,
        compress: bool | int | str | tuple[str, int] = False,
        verbose: int = 1,
        bytes_limit: int | str | None = None,
        backend_options: dict[str, Any] | None = None,
        *,
        cachedir: str | os.PathLike[str] | None = None,
    ) -> None:
        Logger.__init__(self)
        if isinstance(bytes_limit, dict) and backend_options is None:
            # joblib >= 1.5 dropped bytes_limit: its 6th positional argument is backend_options.
            bytes_limit, backend_options = None, bytes_limit
        if cachedir is not None:
            if location is not None:
                raise ValueError(
                    "You set both 'location' and 'cachedir' arguments to a non-None value. "
                    "'cachedir' has been deprecated in version 0.12 and will be removed in "
                    "version 0.14.\nPlease only set 'location'."
                )
            warnings.warn(
                "The 'cachedir' parameter has been deprecated in version 0.12 and will be "
                f"removed in version 0.14.\nYou provided \"cachedir='{cachedir}'\", use "
                f"\"location='{cachedir}'\" instead.",
                DeprecationWarning,
                stacklevel=2,
            )
            location = cachedir
        self._verbose = verbose
        self.mmap_mode = mmap_mode
        self.timestamp = time.time()
        self.backend = backend
        self.compress = compress
        self.bytes_limit = bytes_limit
        self.backend_options = dict(backend_options or {})
        if compress and mmap_mode is not None:
            warnings.warn("Compressed results cannot be memmapped", stacklevel=2)
        self.location = location
        if isinstance(location, str | pathlib.PurePath):
            location = os.path.join(os.fspath(location), _core.STORE_DIR)
        self.store_backend = _store_backend_factory(
            backend,
            location,
            verbose=self._verbose,
            backend_options={
                "compress": compress,
                "mmap_mode": mmap_mode,
                **self.backend_options,
            },
        )

    @property
    def cachedir(self) -> Any:
        """Deprecated alias of ``location``."""
        return self.location

    @overload
    def cache(
        self,
        func: None = None,
        ignore: list[str] | None = None,
        verbose: int | None = None,
        mmap_mode: str | bool | None = False,
        cache_validation_callback: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Callable[[Callable[..., Any]], MemorizedFunc | NotMemorizedFunc]: ...

    @overload
    def cache(
        self,
        func: Callable[..., Any],
        ignore: list[str] | None = None,
        verbose: int | None = None,
        mmap_mode: str | bool | None = False,
        cache_validation_callback: Callable[[dict[str, Any]], bool] | None = None,
    ) -> MemorizedFunc | NotMemorizedFunc: ...

    def cache(
        self,
        func: Callable[..., Any] | None = None,
        ignore: list[str] | None = None,
        verbose: int | None = None,
        mmap_mode: str | bool | None = False,
        cache_validation_callback: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Any:
        """Decorates the given function func to only compute its return value for input
        arguments not cached on disk.

        Parameters
        ----------
        func : callable, optional
            The function to be decorated.
        ignore : list of strings
            A list of arguments name to ignore in the hashing.
        verbose : integer, optional
            The verbosity mode of the function. By default that of the memory object is used.
        mmap_mode : {None, 'r+', 'r', 'w+', 'c'}, optional
            The memmapping mode used when loading from cache numpy arrays. See numpy.load for
            the meaning of the arguments. By default that of the memory object is used.
        cache_validation_callback : callable, optional
            Callable to validate whether or not the cache is valid. When the cached function
            is called with arguments for which a cache exists, this callable is called with
            the metadata of the cached result as its sole argument. If it returns True, then
            the cached result is returned, else the cache for these arguments is cleared and
            recomputed.

        Returns
        -------
        decorated_func : MemorizedFunc object
            The returned object is a MemorizedFunc object, that is callable (behaves like a
            function), but offers extra methods for cache lookup and management. See the
            documentation for :class:`joblib_rs.memory.MemorizedFunc`.
        """
        if cache_validation_callback is not None and not callable(cache_validation_callback):
            raise ValueError(
                f"cache_validation_callback needs to be callable. Got {cache_validation_callback}."
            )
        if func is None:
            return functools.partial(
                self.cache,
                ignore=ignore,
                mmap_mode=mmap_mode,
                verbose=verbose,
                cache_validation_callback=cache_validation_callback,
            )
        if self.store_backend is None:
            is_async = inspect.iscoroutinefunction(func)
            return (AsyncNotMemorizedFunc if is_async else NotMemorizedFunc)(func)
        if verbose is None:
            verbose = self._verbose
        if mmap_mode is False:
            mmap_mode = self.mmap_mode
        if isinstance(func, MemorizedFunc):
            func = func.func
        cls = AsyncMemorizedFunc if inspect.iscoroutinefunction(func) else MemorizedFunc
        return cls(
            func,
            location=self.store_backend,
            backend=self.backend,
            ignore=ignore,
            mmap_mode=mmap_mode,  # type: ignore[arg-type]
            compress=self.compress,
            verbose=verbose,
            timestamp=self.timestamp,
            cache_validation_callback=cache_validation_callback,
        )

    def clear(self, warn: bool = True) -> None:
        """Erase the complete cache directory."""
        if warn:
            self.warn("Flushing completely the cache")
        if self.store_backend is not None:
            self.store_backend.clear()
            # Functions must write their code again before their next result.
            forget_checked_code()

    def reduce_size(
        self,
        bytes_limit: int | str | None = None,
        items_limit: int | None = None,
        age_limit: datetime.timedelta | None = None,
    ) -> None:
        """Remove cache elements to make the cache fit its limits.

        The limitation can impose that the cache size fits in ``bytes_limit``, that the
        number of cache items is no more than ``items_limit``, and that all files in cache
        are not older than ``age_limit``.

        Parameters
        ----------
        bytes_limit : int | str, optional
            Limit in bytes of the size of the cache. By default, the size of the cache is
            unlimited (or the ``bytes_limit`` given to the constructor). When reducing the
            size of the cache, the most recently accessed items are kept first. If a str is
            passed, it is converted to a number of bytes using units { K | M | G} for kilo,
            mega, giga.
        items_limit : int, optional
            Number of items to limit the cache to. By default, the number of items in the
            cache is unlimited. When reducing the size of the cache, the most recently
            accessed items are kept first.
        age_limit : datetime.timedelta, optional
            Maximum age of items to limit the cache to. When reducing the size of the cache,
            any items last accessed more than the given length of time ago are deleted.
            Example: to remove files older than 5 days, use datetime.timedelta(days=5).
            Negative timedelta are not accepted.
        """
        if self.store_backend is None:
            return
        if bytes_limit is None:
            bytes_limit = self.bytes_limit
        if bytes_limit is None and items_limit is None and age_limit is None:
            return
        self.store_backend.enforce_store_limits(bytes_limit, items_limit, age_limit)

    def eval(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Eval function func with arguments `*args` and `**kwargs`, in the context of the
        memory.

        This method works similarly to the builtin `apply`, except that the function is
        called only if the cache is not up to date.
        """
        if self.store_backend is None:
            return func(*args, **kwargs)
        return self.cache(func)(*args, **kwargs)

    def __repr__(self) -> str:
        location = None if self.store_backend is None else self.store_backend.location
        return f"{self.__class__.__name__}(location={location})"

    def __getstate__(self) -> dict[str, Any]:
        """The timestamp is not pickled, so that hashing a Memory does not depend on it."""
        state = self.__dict__.copy()
        state["timestamp"] = None
        return state


###############################################################################################
# cache_validation_callback helpers


def expires_after(
    days: float = 0,
    seconds: float = 0,
    microseconds: float = 0,
    milliseconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    weeks: float = 0,
) -> Callable[[dict[str, Any]], bool]:
    """Helper cache_validation_callback to force recompute after a duration.

    Parameters
    ----------
    days, seconds, microseconds, milliseconds, minutes, hours, weeks : numbers
        Argument passed to a timedelta.
    """
    delta = datetime.timedelta(
        days=days,
        seconds=seconds,
        microseconds=microseconds,
        milliseconds=milliseconds,
        minutes=minutes,
        hours=hours,
        weeks=weeks,
    )

    def cache_validation_callback(metadata: dict[str, Any]) -> bool:
        computed_at = metadata.get("time")
        if not isinstance(computed_at, int | float):
            # No usable metadata (damaged entry): recompute.
            return False
        return time.time() - computed_at < delta.total_seconds()

    return cache_validation_callback
