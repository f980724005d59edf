"""A cached function: :class:`MemorizedFunc` (and :class:`AsyncMemorizedFunc`).

Data flow of a call::

    f(*args, **kwargs)
     ├ hit (local store, nothing to print or validate): code check ─► _core.CallPlan.fetch
     │   one call into Rust: bind (signature plan from ArgBinder) ─► hash ─► read the entry ─►
     │   verify ─► decode ─► the value
     ├ general path (other stores, verbose > 1, cache_validation_callback, shelving):
     │   ArgBinder.bind ─► _core.hash ─► code check ─► [callback] ─► store.fetch_item
     └ miss: the entry's lock (one computer per key among processes and threads) ─► look
         again ─► compute ─► store.commit_item (output and metadata published at once)

Change detection (does the cache belong to this code?) is :class:`~joblib_rs.
_func_code_check.CodeCheck`'s; the store is the backend's (:mod:`joblib_rs._store_backends`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from joblib_rs import _core
from joblib_rs._func_code_check import _NO_CODE, CodeCheck
from joblib_rs._func_inspect import (
    ArgBinder,
    format_call,
    format_signature,
    format_time,
    get_func_name,
)
from joblib_rs._memory_location import _build_func_identifier, _store_backend_factory
from joblib_rs._memory_results import MemorizedResult
from joblib_rs._store_backends import FileSystemStoreBackend, reader_mapping
from joblib_rs.logger import Logger

__all__ = ["AsyncMemorizedFunc", "MemorizedFunc"]

# Entries whose lock this thread holds: a recursive call with the same arguments computes
# instead of waiting for itself.
_held = threading.local()


def _held_keys() -> set[Any]:
    keys = getattr(_held, "keys", None)
    if keys is None:
        keys = _held.keys = set()
    return keys


class MemorizedFunc(Logger, CodeCheck):
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
        # The hit path in Rust (local store only), built at the first call: False until then.
        self._plan: _core.CallPlan | bool | None = False
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
        plan = self._plan
        if plan is False:
            plan = self._plan = self._make_plan()
        if plan is None or self._verbose > 1 or self.cache_validation_callback is not None:
            return self._cached_call(args, kwargs, shelving=False)[0]
        # The hot path of the local store, with nothing to print or validate on a hit: the
        # code check (two lookups once done), then one call into Rust.
        verified = self._verified
        if (
            verified is None
            or verified[0] is not getattr(self.func, "__code__", _NO_CODE)
            or verified[1] != CodeCheck._generation
        ):
            self._check_code(stacklevel=3)
        hit = plan.fetch(args, kwargs)
        if hit.found:
            return hit.value
        return self._after_fetch(hit, args, kwargs)

    def _make_plan(self) -> _core.CallPlan | None:
        """The Rust plan of this function's hits (:class:`~joblib_rs._core.CallPlan`), or
        None for stores other than the local one (their calls take the general path, as do
        calls with messages to print or a ``cache_validation_callback`` to run)."""
        store = self.store_backend
        if self._entry_prefix is None or not isinstance(store, FileSystemStoreBackend):
            return None
        binder = self._binder
        if binder is None:
            binder = self._binder = ArgBinder(self.func, self.ignore)
        layout = binder.layout()
        if layout is None:
            return None
        try:
            return _core.CallPlan(
                store.reader,
                self._entry_prefix,
                *layout,
                self.mmap_mode is not None,
                *reader_mapping(self.mmap_mode),
            )
        except TypeError:
            # An ignore list that is not made of strings: the general path reports it.
            return None

    def _after_fetch(
        self, hit: _core.StoreHit, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A call whose entry was not decoded in Rust: a call that does not bind (the Python
        binder raises joblib's error), an output to load by path, damage, or a miss."""
        args_id = hit.args_id
        if args_id is None:
            return self._cached_call(args, kwargs, shelving=False)[0]
        entry = f"{self._entry_prefix}{args_id}"
        found, output = self.store_backend.finish_fetch(entry, hit, self.mmap_mode)
        if found:
            return output
        binder = self._binder
        bound = binder.bind(args, kwargs) if binder is not None else self._key(args, kwargs)[0]
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

    # -- object protocol ----------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Read the source now: child processes may not be able to.
        _ = self.func_code_info
        state = self.__dict__.copy()
        state["timestamp"] = None
        state["_func_code_id"] = None
        state["_binder"] = None
        state["_verified"] = None
        state["_plan"] = False
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
