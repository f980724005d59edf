"""A context object for caching a function's return value each time it is called with the same
input arguments: joblib's :class:`Memory`, over the Rust store.

A call is keyed by the function's identity (module path and name, see
:func:`~joblib_rs._func_inspect.get_func_name`) and the hash of its bound arguments
(:func:`joblib_rs.hash`). A hit costs the hash, one ``stat``, one ``read`` and one unpickle.
A miss takes the entry's lock, so that among processes (and threads) missing the same key at
once one computes and the others load its result; entries are published atomically. See
``docs/store.md`` for the layout and the concurrency guarantees.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import inspect
import logging
import os
import pathlib
import textwrap
import threading
import time
import tokenize
import warnings
import weakref
from collections.abc import Callable
from typing import Any, overload

from joblib_rs import _core
from joblib_rs._func_inspect import (
    ArgBinder,
    format_call,
    format_signature,
    format_time,
    get_func_code,
    get_func_name,
    pformat,
)
from joblib_rs._remote_store import remote_backend_for
from joblib_rs._store_backends import (
    CacheWarning,
    FileSystemStoreBackend,
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

FIRST_LINE_TEXT = "# first line:"


class JobLibCollisionWarning(UserWarning):
    """Warn that there might be a collision between names of functions."""


_STORE_BACKENDS: dict[str, type] = {"local": FileSystemStoreBackend}

# Functions whose code was checked against func_code.py in this process: func -> {store
# location: code object}. A hit then never reads func_code.py. Memory.clear() resets it.
_FUNCTION_HASHES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
# Bumped by Memory.clear() so MemorizedFunc objects forget their own verification too.
_generation = 0
# Entries whose lock this thread holds: a recursive call with the same arguments computes
# instead of waiting for itself.
_held = threading.local()
_NO_CODE = object()


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


def _extract_first_line(func_code: str) -> tuple[str, int]:
    if func_code.startswith(FIRST_LINE_TEXT):
        first, _, rest = func_code.partition("\n")
        return rest, int(first[len(FIRST_LINE_TEXT) :])
    return func_code, -1


def _held_keys() -> set[Any]:
    keys = getattr(_held, "keys", None)
    if keys is None:
        keys = _held.keys = set()
    return keys


###############################################################################################
# Results


class MemorizedResult(Logger):
    """Object representing a cached value.

    Attributes
    ----------
    location : str
        The location of joblib cache. Depends on the store backend used.
    func : function or str
        Function whose output is cached. The string case is intended only for instantiation
        based on the output of repr() on another instance (namely
        ``eval(repr(memorized_instance))`` works).
    args_id : str
        Hash of the function arguments.
    backend : str
        Type of store backend for reading/writing cache files. Default is 'local'.
    mmap_mode : {None, 'r+', 'r', 'w+', 'c'}
        The memmapping mode used when loading from cache numpy arrays. See numpy.load for the
        meaning of the different values.
    verbose : int
        Verbosity level (0 means no message).
    timestamp, metadata : string
        For internal use only.
    """

    def __init__(
        self,
        location: Any,
        call_id: tuple[str, str] | None = None,
        backend: str = "local",
        mmap_mode: str | None = None,
        verbose: int = 0,
        timestamp: float | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        func: str | None = None,
        args_id: str | None = None,
    ) -> None:
        Logger.__init__(self)
        if call_id is None:
            if func is None or args_id is None:
                raise TypeError("MemorizedResult needs call_id, or func and args_id")
            call_id = (func, args_id)
        self._call_id = tuple(call_id)
        self.store_backend = _store_backend_factory(
            backend, location, verbose=verbose, backend_options={"mmap_mode": mmap_mode}
        )
        self.mmap_mode = mmap_mode
        self.metadata = (
            metadata if metadata is not None else self.store_backend.get_metadata(self._call_id)
        )
        self.duration = self.metadata.get("duration", None)
        self.verbose = verbose
        self.timestamp = timestamp

    @property
    def func(self) -> str:
        return self.func_id

    @property
    def func_id(self) -> str:
        return self._call_id[0]

    @property
    def args_id(self) -> str:
        return self._call_id[1]

    def get(self) -> Any:
        """Read value from cache and return it."""
        try:
            return self.store_backend.load_item(
                self._call_id,
                timestamp=self.timestamp,
                metadata=self.metadata,
                verbose=self.verbose,
            )
        except KeyError as e:
            folder = os.path.join(self.store_backend.location, *self._call_id)
            raise KeyError(
                f"Non-existing cache value (may have been cleared).\nFile {folder} does not exist"
            ) from e
        except ValueError as e:
            folder = os.path.join(self.store_backend.location, *self._call_id)
            raise KeyError(
                "Error while trying to load a MemorizedResult's value. It seems that this "
                f"folder is corrupted : {folder}"
            ) from e

    def clear(self) -> None:
        """Clear value from cache."""
        self.store_backend.clear_item(self._call_id)

    def __repr__(self) -> str:
        func_id, args_id = self._call_id
        return (
            f'{self.__class__.__name__}(location="{self.store_backend.location}", '
            f'func="{func_id}", args_id="{args_id}")'
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["timestamp"] = None
        return state


class NotMemorizedResult:
    """Class representing an arbitrary value.

    This class is a replacement for MemorizedResult when there is no cache.
    """

    __slots__ = ("valid", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.valid = True

    def get(self) -> Any:
        if not self.valid:
            raise KeyError("No value stored.")
        return self.value

    def clear(self) -> None:
        self.valid = False
        self.value = None

    def __repr__(self) -> str:
        if self.valid:
            return f"{self.__class__.__name__}({pformat(self.value)})"
        return f"{self.__class__.__name__} with no value"

    def __getstate__(self) -> dict[str, Any]:
        return {"valid": self.valid, "value": self.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.valid = state["valid"]
        self.value = state["value"]


###############################################################################################
# Functions without a cache


class NotMemorizedFunc:
    """No-op object decorating a function.

    This class replaces MemorizedFunc when there is no cache. It provides an identical API
    but does not write anything on disk.

    Attributes
    ----------
    func : callable
        Original undecorated function.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def call_and_shelve(self, *args: Any, **kwargs: Any) -> NotMemorizedResult:
        return NotMemorizedResult(self.func(*args, **kwargs))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(func={self.func})"

    def clear(self, warn: bool = True) -> None:
        """Nothing to clear (``warn`` is accepted for MemorizedFunc's signature)."""

    def call(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        return self.func(*args, **kwargs), {}

    def check_call_in_cache(self, *args: Any, **kwargs: Any) -> bool:
        return False


class AsyncNotMemorizedFunc(NotMemorizedFunc):
    """:class:`NotMemorizedFunc` of a coroutine function."""

    async def call_and_shelve(self, *args: Any, **kwargs: Any) -> NotMemorizedResult:  # type: ignore[override]
        return NotMemorizedResult(await self.func(*args, **kwargs))


###############################################################################################
# Cached functions


class MemorizedFunc(Logger):
    """Callable object decorating a function for caching its return value each time it is
    called.

    Methods are provided to inspect the cache or clean it.

    Attributes
    ----------
    func : callable
        The original, undecorated, function.
    location : string
        The location of joblib cache. Depends on the store backend used.
    backend : str
        Type of store backend for reading/writing cache files. Default is 'local', in which
        case the location is the path to a disk storage.
    ignore : list or None
        List of variable names to ignore when choosing whether to recompute.
    mmap_mode : {None, 'r+', 'r', 'w+', 'c'}
        The memmapping mode used when loading from cache numpy arrays. See numpy.load for the
        meaning of the different values.
    compress : boolean, integer or 2-tuple, optional
        Whether to zip the stored data on disk. If an integer is given, it should be between 1
        and 9, and sets the amount of compression. Note that compressed arrays cannot be read
        by memmapping. If a 2-tuple is given, the first element must be a string
        corresponding to a compression method and the second element an integer level.
    verbose : int, optional
        The verbosity flag, controls messages that are issued as the function is evaluated.
    cache_validation_callback : callable, optional
        Callable to check if a result in cache is valid or is to be recomputed. When the
        function is called with arguments for which a cache exists, the callback is called
        with the cache entry's metadata as its sole argument. If it returns True, the cached
        result is returned, else the cache for these arguments is cleared and recomputed.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        location: Any,
        backend: str = "local",
        ignore: list[str] | None = None,
        mmap_mode: str | None = None,
        compress: bool | int | str | tuple[str, int] = False,
        verbose: int = 1,
        timestamp: float | None = None,
        cache_validation_callback: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        Logger.__init__(self)
        self.mmap_mode = mmap_mode
        self.compress = compress
        self.func = func
        self.cache_validation_callback = cache_validation_callback
        self.func_id = _build_func_identifier(func)
        self.ignore = ignore if ignore is not None else []
        self._verbose = verbose
        self.store_backend = _store_backend_factory(
            backend,
            location,
            verbose=verbose,
            backend_options={"compress": compress, "mmap_mode": mmap_mode},
        )
        self._entry_prefix: str | None = None
        if self.store_backend is not None:
            # Creates the function's folder: an unwritable location fails here, at once.
            self.store_backend.store_cached_func_code([self.func_id])
            if isinstance(self.store_backend, FileSystemStoreBackend):
                # The local store is read by entry path, built by concatenation on hits.
                folder = os.path.join(self.store_backend.location, self.func_id)
                self._entry_prefix = folder + os.sep
        self.timestamp = timestamp if timestamp is not None else time.time()
        self._func_code_info: tuple[str, str | None, int] | None = None
        self._func_code_id: int | None = None
        self._binder: ArgBinder | None = None
        self._verified: tuple[Any, int] | None = None
        self._is_async = inspect.iscoroutinefunction(func)
        try:
            functools.update_wrapper(self, func)
        except Exception:
            # Objects like ufuncs lack some of the attributes copied.
            pass
        if not hasattr(self, "__doc__") or self.__doc__ is None:
            self.__doc__ = getattr(func, "__doc__", None)

    # -- public API ----------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        prefix = self._entry_prefix
        if prefix is None or self._verbose > 1 or self.cache_validation_callback is not None:
            return self._cached_call(args, kwargs, shelving=False)[0]
        # The hot path of the local store, with nothing to print or validate on a hit.
        bound, args_id = self._key(args, kwargs)
        self._check_code(stacklevel=3)
        found, output = self.store_backend.fetch_entry(prefix + args_id, self.mmap_mode)
        if found:
            return output
        return self._miss((self.func_id, args_id), args, kwargs, bound, False)[0]

    def call_and_shelve(self, *args: Any, **kwargs: Any) -> MemorizedResult:
        """Call wrapped function, cache result and return a reference.

        This method returns a reference to the cached result instead of the result itself.
        The reference object is small and picklable, allowing to send or store it easily.
        Call .get() on reference object to get result.

        Returns
        -------
        cached_result : MemorizedResult or NotMemorizedResult
            Reference to the value returned by the wrapped function. The class
            "NotMemorizedResult" is used when there is no cache activated (e.g.
            location=None in Memory).
        """
        result: MemorizedResult = self._cached_call(args, kwargs, shelving=True)[0]
        return result

    def call(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Force the execution of the function with the given arguments.

        The output values will be persisted, i.e., the cache will be updated with any new
        values.

        Parameters
        ----------
        *args : arguments
            The arguments.
        **kwargs : keyword arguments
            Keyword arguments.

        Returns
        -------
        output : object
            The output of the function call.
        metadata : dict
            The metadata associated with the call.
        """
        bound, args_id = self._key(args, kwargs)
        output_and_metadata: tuple[Any, dict[str, Any]] = self._call(
            (self.func_id, args_id), args, kwargs, bound
        )
        return output_and_metadata

    def check_call_in_cache(self, *args: Any, **kwargs: Any) -> bool:
        """Check if the function call is cached and valid for given arguments.

        Does not call the function or do any work besides function inspection and argument
        hashing.

        - Compare the function code with the one from the cached function, asserting if it
          has changed.
        - Check if the function call is present in the cache.
        - Call `cache_validation_callback` for user define cache validation.

        Returns
        -------
        is_call_in_cache : bool
            Whether or not the function call is in cache and can be used.
        """
        _, args_id = self._key(args, kwargs)
        call_id = (self.func_id, args_id)
        self._check_code(stacklevel=3)
        return self.store_backend.contains_item(call_id) and self._validate(call_id)

    def clear(self, warn: bool = True) -> None:
        """Empty the function's cache."""
        if self._verbose > 0 and warn:
            self.warn(f"Clearing function cache identified by {self.func_id}")
        self.store_backend.clear_path([self.func_id])
        func_code, _, first_line = self.func_code_info
        self._write_func_code(func_code, first_line)

    @property
    def func_code_info(self) -> tuple[str, str | None, int]:
        """``(source, source file, first line)`` of the function, computed once (and again if
        its ``__code__`` is replaced)."""
        code = getattr(self.func, "__code__", None)
        if code is not None and self._func_code_id != id(code):
            self._func_code_id = id(code)
            self._func_code_info = None
        if self._func_code_info is None:
            self._func_code_info = get_func_code(self.func)
        return self._func_code_info

    # -- the call path ----------------------------------------------------------------------

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], str]:
        binder = self._binder
        if binder is None:
            binder = self._binder = ArgBinder(self.func, self.ignore)
        bound = binder.bind(args, kwargs)
        return bound, _core.hash(bound, "xxh3", self.mmap_mode is not None)

    def _get_args_id(self, *args: Any, **kwargs: Any) -> str:
        """The hash of the arguments of a call."""
        return self._key(args, kwargs)[1]

    def _cached_call(self, args: tuple[Any, ...], kwargs: dict[str, Any], shelving: bool) -> Any:
        bound, args_id = self._key(args, kwargs)
        call_id = (self.func_id, args_id)
        backend = self.store_backend
        if self._verbose >= 20:
            self._log_query(args, kwargs, args_id)
        self._check_code(stacklevel=4)
        if self.cache_validation_callback is not None and backend.contains_item(call_id):
            self._validate(call_id)
        found, output = self._lookup(call_id, shelving)
        if found:
            return output, {}
        return self._miss(call_id, args, kwargs, bound, shelving)

    def _miss(
        self,
        call_id: tuple[str, str],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        bound: dict[str, Any],
        shelving: bool,
    ) -> Any:
        backend = self.store_backend
        args_id = call_id[1]
        if self._verbose > 10:
            location = backend.get_cached_func_info([self.func_id])["location"]
            self.warn(
                f"Computing func {get_func_name(self.func)[1]}, argument hash {args_id} "
                f"in location {location}"
            )
        return self._compute(call_id, args, kwargs, bound, shelving)

    def _lookup(self, call_id: tuple[str, str], shelving: bool) -> tuple[bool, Any]:
        backend = self.store_backend
        if shelving:
            if backend.contains_item(call_id):
                return True, self._memorized_result(call_id)
            return False, None
        start = time.time() if self._verbose > 1 else 0.0
        prefix = self._entry_prefix
        if prefix is not None:
            found, output = backend.fetch_entry(prefix + call_id[1], self.mmap_mode)
        else:
            found, output = backend.fetch_item(call_id, self.mmap_mode)
        if found and self._verbose > 1:
            full_path = os.path.join(str(backend.location), *call_id)
            elapsed = f"{format_time(time.time() - self.timestamp): <16}"
            msg = f"[Memory]{elapsed}: Loading {os.path.basename(self.func_id)}"
            print(f"{msg}..." if self._verbose < 10 else f"{msg} from {full_path}")
            if self._verbose > 4:
                self._print_duration(time.time() - start, context="cache loaded ")
        return found, output

    def _compute(
        self,
        call_id: tuple[str, str],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        bound: dict[str, Any],
        shelving: bool,
    ) -> Any:
        """Compute under the entry's lock: whoever takes it second finds the entry written
        and loads it. Coroutines, recursive calls and lock-less backends compute directly."""
        held = _held_keys()
        key = (str(self.store_backend.location), call_id)
        if self._is_async or key in held:
            return self._call(call_id, args, kwargs, bound, shelving)
        lock = self.store_backend.lock_item(call_id)
        if lock is None:
            return self._call(call_id, args, kwargs, bound, shelving)
        held.add(key)
        try:
            found, output = self._lookup(call_id, shelving)
            if found:
                return output, {}
            return self._call(call_id, args, kwargs, bound, shelving)
        finally:
            held.discard(key)
            lock.release()

    def _call(
        self,
        call_id: tuple[str, str],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        bound: dict[str, Any] | None = None,
        shelving: bool = False,
    ) -> Any:
        self._before_call(args, kwargs)
        start_time = time.time()
        output = self.func(*args, **kwargs)
        return self._after_call(call_id, args, kwargs, bound, shelving, output, start_time)

    def _before_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._verbose > 0:
            print(format_call(self.func, args, kwargs))

    def _after_call(
        self,
        call_id: tuple[str, str],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        bound: dict[str, Any] | None,
        shelving: bool,
        output: Any,
        start_time: float,
    ) -> tuple[Any, dict[str, Any]]:
        if bound is None:
            bound = self._key(args, kwargs)[0]

        def metadata() -> dict[str, Any]:
            return self._metadata(time.time() - start_time, start_time, bound)

        metadata_dict = self.store_backend.commit_item(call_id, output, metadata, self._verbose)
        if self._verbose > 0:
            self._print_duration(metadata_dict["duration"])
        if shelving:
            return self._memorized_result(call_id, metadata_dict), metadata_dict
        if self.mmap_mode is not None:
            # Memory-map the output at the first call too, so every call returns the same kind.
            found, mapped = self.store_backend.fetch_item(call_id, self.mmap_mode)
            if found:
                output = mapped
        return output, metadata_dict

    def _metadata(
        self, duration: float, start_time: float, bound: dict[str, Any]
    ) -> dict[str, Any]:
        began = time.time()
        input_repr = {k: repr(v) for k, v in bound.items()}
        took = time.time() - began
        if took > 0.5:
            warnings.warn(
                f"Persisting input arguments took {took:.2f}s to run. If this happens often "
                "in your code, it can cause performance problems (results will be correct in "
                "all cases). The reason for this is probably some large input arguments for "
                "a wrapped function.",
                stacklevel=6,
            )
        return {"duration": duration, "input_args": input_repr, "time": start_time}

    def _memorized_result(
        self, call_id: tuple[str, str], metadata: dict[str, Any] | None = None
    ) -> MemorizedResult:
        return MemorizedResult(
            self.store_backend,
            call_id,
            metadata=metadata,
            timestamp=self.timestamp,
            verbose=self._verbose - 1,
        )

    def _validate(self, call_id: tuple[str, str]) -> bool:
        """Run ``cache_validation_callback`` on the entry; clear it if refused."""
        callback = self.cache_validation_callback
        if callback is None:
            return True
        if callback(self.store_backend.get_metadata(call_id)):
            return True
        self.store_backend.clear_item(call_id)
        return False

    def _print_duration(self, duration: float, context: str = "") -> None:
        _, name = get_func_name(self.func)
        msg = f"{name} {context}- {format_time(duration)}"
        print(max(0, 80 - len(msg)) * "_" + msg)

    def _log_query(self, args: tuple[Any, ...], kwargs: dict[str, Any], args_id: str) -> None:
        logging.basicConfig(level=logging.INFO)
        _, signature = format_signature(self.func, *args, **kwargs)
        location = self.store_backend.get_cached_func_info([self.func_id])["location"]
        self.info(
            textwrap.dedent(
                f"""
                Querying {get_func_name(self.func)[1]} with signature
                {signature}.

                (argument hash {args_id})

                The store location is {location}.
                """
            )
        )

    # -- change detection ---------------------------------------------------------------------

    def _check_code(self, stacklevel: int) -> None:
        """Make sure the stored results belong to this code of the function: compare it with
        ``func_code.py`` once per process (and after ``__code__`` changes). A changed function
        has its cache cleared."""
        code = getattr(self.func, "__code__", _NO_CODE)
        verified = self._verified
        if verified is not None and verified[0] is code and verified[1] == _generation:
            return
        location = str(self.store_backend.location)
        try:
            seen = _FUNCTION_HASHES.get(self.func)
        except TypeError:
            seen = None
        if seen is not None and seen.get(location) is code:
            self._verified = (code, _generation)
            return
        self._check_previous_func_code(stacklevel=stacklevel + 1)
        if self._is_named():
            self._remember_code(code, location)

    def _is_named(self) -> bool:
        # Lambdas all share one name: they are compared with the disk on every call, as in
        # joblib, so that alternating two of them keeps recomputing rather than mixing results.
        return getattr(self.func, "__name__", "<lambda>") != "<lambda>"

    def _remember_code(self, code: Any, location: str) -> None:
        self._verified = (code, _generation)
        try:
            _FUNCTION_HASHES.setdefault(self.func, {})[location] = code
        except TypeError:
            pass

    def _write_func_code(self, func_code: str, first_line: int) -> None:
        self.store_backend.store_cached_func_code(
            [self.func_id], f"{FIRST_LINE_TEXT} {first_line}\n{func_code}"
        )

    def _check_previous_func_code(self, stacklevel: int = 2) -> bool:
        """Compare the function's code with ``func_code.py``; warn about name collisions and
        clear the cache of a changed function. Returns whether the stored code matched."""
        func_code, source_file, first_line = self.func_code_info
        try:
            stored = self.store_backend.get_cached_func_code([self.func_id])
            old_func_code, old_first_line = _extract_first_line(stored)
        except (FileNotFoundError, NotADirectoryError):
            self._write_func_code(func_code, first_line)
            return False
        except (OSError, ValueError) as e:
            # Unreadable or garbled: the results cannot be trusted to match this code.
            warnings.warn(
                f"Cannot read the stored code of {self.func_id} ({type(e).__name__}: {e}); "
                "its cache is cleared.",
                CacheWarning,
                stacklevel=stacklevel,
            )
            self.clear(warn=False)
            return False
        if old_func_code == func_code:
            return True
        _, func_name = get_func_name(self.func, resolv_alias=False)
        if old_first_line == first_line == -1 or func_name == "<lambda>":
            description = (
                f"{func_name} ({source_file}:{first_line})" if first_line != -1 else func_name
            )
            warnings.warn(
                JobLibCollisionWarning(
                    f"Cannot detect name collisions for function '{description}'"
                ),
                stacklevel=stacklevel,
            )
        if old_first_line != first_line and source_file is not None:
            if os.path.exists(source_file):
                n_lines = len(func_code.split("\n"))
                try:
                    with tokenize.open(source_file) as f:
                        lines = f.readlines()[old_first_line - 1 : old_first_line - 2 + n_lines]
                    collision = "".join(lines).rstrip() == old_func_code.rstrip()
                except (OSError, SyntaxError, UnicodeDecodeError):
                    collision = False
            else:
                collision = source_file.startswith("<doctest ")
            if collision:
                warnings.warn(
                    JobLibCollisionWarning(
                        f"Possible name collisions between functions '{func_name}' "
                        f"({source_file}:{old_first_line}) and '{func_name}' "
                        f"({source_file}:{first_line})"
                    ),
                    stacklevel=stacklevel,
                )
        if self._verbose > 10:
            self.warn(f"Function {func_name} (identified by {self.func_id}) has changed.")
        self.clear(warn=True)
        return False

    # -- object protocol ----------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Read the source now: child processes may not be able to.
        _ = self.func_code_info
        state = self.__dict__.copy()
        state["timestamp"] = None
        state["_func_code_id"] = None
        state["_binder"] = None
        state["_verified"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(func={self.func}, location={self.store_backend.location})"
        )


class AsyncMemorizedFunc(MemorizedFunc):
    """:class:`MemorizedFunc` of a coroutine function: ``await cached(...)``."""

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        out = self._cached_call(args, kwargs, shelving=False)
        out = await out if asyncio.iscoroutine(out) else out
        return out[0]

    async def call_and_shelve(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        out = self._cached_call(args, kwargs, shelving=True)
        out = await out if asyncio.iscoroutine(out) else out
        return out[0]

    async def call(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        out = super().call(*args, **kwargs)
        return await out if asyncio.iscoroutine(out) else out

    async def _call(  # type: ignore[override]
        self,
        call_id: tuple[str, str],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        bound: dict[str, Any] | None = None,
        shelving: bool = False,
    ) -> Any:
        self._before_call(args, kwargs)
        start_time = time.time()
        output = await self.func(*args, **kwargs)
        return self._after_call(call_id, args, kwargs, bound, shelving, output, start_time)


###############################################################################################
# Memory


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
        global _generation
        if warn:
            self.warn("Flushing completely the cache")
        if self.store_backend is not None:
            self.store_backend.clear()
            # Functions must write their code again before their next result.
            _FUNCTION_HASHES.clear()
            _generation += 1

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
