"""joblib's store-backend API for :class:`joblib_rs.Memory`, and what every backend shares.

:class:`StoreBackendBase` (the primitives: open, exists, move, create, clear, list) and
:class:`StoreBackendMixin` (the store logic on top of them) are joblib's API for third-party
stores (cloud buckets, databases): a backend written for joblib keeps working here. Data flow
of a generic backend::

    MemorizedFunc ─► fetch_item(call_id) ─► contains_item ─► load_item ─► numpy_pickle.load
                 ─► lock_item (None: no lock) ─► compute ─► commit_item ─► dump_item + metadata

Besides joblib's methods, :class:`StoreBackendMixin` defines three hooks that
:class:`~joblib_rs.memory.MemorizedFunc` calls: :meth:`~StoreBackendMixin.fetch_item`,
:meth:`~StoreBackendMixin.lock_item` and :meth:`~StoreBackendMixin.commit_item`. Their
generic versions are built on joblib's methods, so a third-party backend needs none of them;
the local store (:mod:`joblib_rs._store_backends`) and the object stores
(:mod:`joblib_rs._remote_store`) override them with the Rust store.
"""

from __future__ import annotations

import collections
import datetime
import io
import json
import operator
import os
import threading
import time
import uuid
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from pickle import PicklingError
from typing import Any

from joblib_rs import numpy_pickle
from joblib_rs._func_inspect import format_time

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "CacheItemInfo",
    "CachePicklingWarning",
    "CacheWarning",
    "StoreBackendBase",
    "StoreBackendMixin",
    "concurrency_safe_write",
    "memstr_to_bytes",
]

CacheItemInfo = collections.namedtuple("CacheItemInfo", "path size last_access")

#: Default longest wait for another process computing the same entry (seconds).
DEFAULT_LOCK_TIMEOUT = 300.0


def _loader_from_bytes() -> Callable[[bytes], Any]:
    """``bytes -> object`` for outputs read by the store.

    ``numpy_pickle`` has no public ``loads``; ``load(io.BytesIO(data))`` streams the bytes back
    through a file object, which costs a few microseconds on every cache hit. This adapter
    calls its in-memory loader with exactly what ``load`` would pass it (no policy, native
    byte order enforced), and falls back to ``load`` if that private function goes away.
    """
    load_bytes = getattr(numpy_pickle, "_load_bytes", None)
    ensure_native = getattr(numpy_pickle, "_ENSURE_NATIVE", None)
    if load_bytes is None or ensure_native is None:
        return lambda data: numpy_pickle.load(io.BytesIO(data))

    def load_from_bytes(data: bytes) -> Any:
        token = ensure_native.set(True)
        try:
            return load_bytes(data, "", None, True)
        finally:
            ensure_native.reset(token)

    return load_from_bytes


_load_from_bytes = _loader_from_bytes()


def _makedirs(path: str, attempts: int = 5) -> None:
    """``os.makedirs(path, exist_ok=True)`` that survives another process removing the folder
    (a concurrent ``clear``) between its creation and the existence check: makedirs then
    raises ``FileExistsError`` for a folder that no longer exists; create it again."""
    for attempt in range(attempts):
        try:
            os.makedirs(path, exist_ok=True)
            return
        except (FileExistsError, FileNotFoundError):
            if attempt == attempts - 1:
                raise


class CacheWarning(Warning):
    """Warning about the cache: a damaged entry recomputed, an output that could not be
    stored, a lock waited on for too long. The result returned is always correct."""


class CachePicklingWarning(CacheWarning, FutureWarning):
    """An output could not be pickled for the cache: a :class:`CacheWarning`, and the
    ``FutureWarning`` joblib emits (it announces that this will become an error)."""


def memstr_to_bytes(text: str) -> int:
    """``'10G'``, ``'500M'``, ``'50K'`` to a number of bytes."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    try:
        return int(units[text[-1]] * float(text[:-1]))
    except (KeyError, ValueError, IndexError) as e:
        raise ValueError(
            f"Invalid literal for size give: {text} (type {type(text)}) should be "
            "alike '10G', '500M', '50K'."
        ) from e


def concurrency_safe_write(
    object_to_write: Any, filename: str, write_func: Callable[[Any, str], Any]
) -> str:
    """Write ``object_to_write`` with ``write_func`` to a unique temporary sibling of
    ``filename`` and return that name (the caller then moves it into place)."""
    thread_id = id(threading.current_thread())
    temporary = f"{filename}.{uuid.uuid4().hex}-{os.getpid()}-{thread_id}"
    write_func(object_to_write, temporary)
    return temporary


class StoreBackendBase(metaclass=ABCMeta):
    """The methods a store backend must implement (joblib's API).

    Subclass it together with :class:`StoreBackendMixin`, which provides everything else on
    top of these primitives, and register the class with
    :func:`joblib_rs.register_store_backend`.
    """

    location: Any = None

    @abstractmethod
    def _open_item(self, f: Any, mode: str) -> Any:
        """Open the item ``f`` in ``mode`` (``'rb'`` or ``'wb'``); return a file object."""

    @abstractmethod
    def _item_exists(self, location: str) -> bool:
        """Whether an item (file or folder) exists at ``location``."""

    @abstractmethod
    def _move_item(self, src: str, dst: str) -> None:
        """Move the item ``src`` to ``dst``, replacing it."""

    @abstractmethod
    def create_location(self, location: str) -> None:
        """Create the location (a folder, on a file system)."""

    @abstractmethod
    def clear_location(self, location: str) -> None:
        """Remove the location and everything under it."""

    @abstractmethod
    def get_items(self) -> list[CacheItemInfo]:
        """Every cached item, as :data:`CacheItemInfo` ``(path, size, last_access)``."""

    @abstractmethod
    def configure(
        self, location: str, verbose: int = 0, backend_options: dict[str, Any] | None = None
    ) -> None:
        """Configure the store at ``location`` with the backend's named options."""


class StoreBackendMixin:
    """The store logic common to every backend, built on :class:`StoreBackendBase`'s
    primitives. Items are ``call_id`` sequences of path components, usually
    ``(function id, argument hash)``."""

    #: The name of an entry's output file.
    _output_name = "output.pkl"
    location: Any
    compress: Any = False
    mmap_mode: str | None = None
    verbose: int = 1

    # -- joblib's API ------------------------------------------------------------------------

    def load_item(
        self,
        call_id: Any,
        verbose: int = 1,
        timestamp: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Load the output stored at ``call_id``; ``KeyError`` if there is none."""
        full_path = os.path.join(self.location, *call_id)
        _print_loading(call_id, full_path, verbose, timestamp, metadata)
        filename = os.path.join(full_path, self._output_name)
        if not self._item_exists(filename):
            raise KeyError(
                f"Non-existing item (may have been cleared).\nFile {filename} does not exist"
            )
        mmap_mode = getattr(self, "mmap_mode", None)
        if mmap_mode is None:
            with self._open_item(filename, "rb") as f:
                return numpy_pickle.load(f)
        return numpy_pickle.load(filename, mmap_mode=mmap_mode)

    def dump_item(self, call_id: Any, item: Any, verbose: int = 1) -> None:
        """Store ``item`` at ``call_id``; failures become a :class:`CacheWarning`."""
        try:
            item_path = os.path.join(self.location, *call_id)
            if not self._item_exists(item_path):
                self.create_location(item_path)
            filename = os.path.join(item_path, self._output_name)
            if verbose > 10:
                print(f"Persisting in {item_path}")

            def write_func(to_write: Any, dest: str) -> None:
                with self._open_item(dest, "wb") as f:
                    numpy_pickle.dump(to_write, f, compress=self.compress)

            self._concurrency_safe_write(item, filename, write_func)
        except PicklingError as e:
            warnings.warn(
                f"Unable to cache to disk: failed to pickle output. Exception: {e}.",
                CachePicklingWarning,
                stacklevel=2,
            )
        except Exception as e:
            warnings.warn(
                "Unable to cache to disk. Possibly a race condition in the creation of the "
                f"directory. Exception: {e}.",
                CacheWarning,
                stacklevel=2,
            )

    def clear_item(self, call_id: Any) -> None:
        """Remove the item at ``call_id``."""
        item_path = os.path.join(self.location, *call_id)
        if self._item_exists(item_path):
            self.clear_location(item_path)

    def contains_item(self, call_id: Any) -> bool:
        """Whether an output is stored at ``call_id``."""
        return self._item_exists(os.path.join(self.location, *call_id, self._output_name))

    def get_item_info(self, call_id: Any) -> dict[str, Any]:
        """Information about the item: its location."""
        return {"location": os.path.join(self.location, *call_id)}

    def get_metadata(self, call_id: Any) -> dict[str, Any]:
        """The metadata stored with the item, ``{}`` if none can be read."""
        try:
            filename = os.path.join(self.location, *call_id, "metadata.json")
            with self._open_item(filename, "rb") as f:
                return json.loads(f.read().decode("utf-8"))
        except Exception:
            return {}

    def store_metadata(self, call_id: Any, metadata: dict[str, Any]) -> None:
        """Store the metadata of a computation (best effort, as joblib)."""
        try:
            item_path = os.path.join(self.location, *call_id)
            self.create_location(item_path)
            filename = os.path.join(item_path, "metadata.json")

            def write_func(to_write: Any, dest: str) -> None:
                with self._open_item(dest, "wb") as f:
                    f.write(json.dumps(to_write).encode("utf-8"))

            self._concurrency_safe_write(metadata, filename, write_func)
        except Exception:
            pass

    def contains_path(self, call_id: Any) -> bool:
        """Whether the cached function's folder exists."""
        return self._item_exists(os.path.join(self.location, *call_id))

    def clear_path(self, call_id: Any) -> None:
        """Remove every item under the path ``call_id`` (a function's whole cache)."""
        func_path = os.path.join(self.location, *call_id)
        if self._item_exists(func_path):
            self.clear_location(func_path)

    def store_cached_func_code(self, call_id: Any, func_code: str | None = None) -> None:
        """Create the function's folder and store its code (if given)."""
        func_path = os.path.join(self.location, *call_id)
        if not self._item_exists(func_path):
            self.create_location(func_path)
        if func_code is not None:
            filename = os.path.join(func_path, "func_code.py")

            def write_func(to_write: str, dest: str) -> None:
                with self._open_item(dest, "wb") as f:
                    f.write(to_write.encode("utf-8"))

            self._concurrency_safe_write(func_code, filename, write_func)

    def get_cached_func_code(self, call_id: Any) -> str:
        """The stored code of the function (``OSError`` if there is none)."""
        filename = os.path.join(self.location, *call_id, "func_code.py")
        with self._open_item(filename, "rb") as f:
            return f.read().decode("utf-8")

    def get_cached_func_info(self, call_id: Any) -> dict[str, Any]:
        """Information about the cached function: its location."""
        return {"location": os.path.join(self.location, *call_id)}

    def clear(self) -> None:
        """Remove the whole store content."""
        self.clear_location(self.location)

    def enforce_store_limits(
        self,
        bytes_limit: int | str | None,
        items_limit: int | None = None,
        age_limit: datetime.timedelta | None = None,
    ) -> None:
        """Remove least recently accessed items until the store fits the limits."""
        for item in self._get_items_to_delete(bytes_limit, items_limit, age_limit):
            if self.verbose > 10:
                print(f"Deleting item {item}")
            try:
                self.clear_location(item.path)
            except OSError:
                # Another process removed it first.
                pass

    def _get_items_to_delete(
        self,
        bytes_limit: int | str | None,
        items_limit: int | None = None,
        age_limit: datetime.timedelta | None = None,
    ) -> list[CacheItemInfo]:
        if isinstance(bytes_limit, str):
            bytes_limit = memstr_to_bytes(bytes_limit)
        if age_limit is not None and age_limit.total_seconds() < 0:
            raise ValueError("age_limit has to be a positive timedelta")
        items = self.get_items()
        if not items:
            return []
        excess_bytes = 0 if bytes_limit is None else sum(i.size for i in items) - bytes_limit
        excess_items = 0 if items_limit is None else len(items) - items_limit
        deadline = None if age_limit is None else datetime.datetime.now() - age_limit
        items.sort(key=operator.attrgetter("last_access"))
        selected: list[CacheItemInfo] = []
        freed = 0
        for item in items:
            young = deadline is None or item.last_access > deadline
            if freed >= excess_bytes and len(selected) >= excess_items and young:
                break
            selected.append(item)
            freed += item.size
        return selected

    def _concurrency_safe_write(
        self, to_write: Any, filename: str, write_func: Callable[[Any, str], Any]
    ) -> None:
        temporary = concurrency_safe_write(to_write, filename, write_func)
        self._move_item(temporary, filename)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(location="{self.location}")'

    # -- joblib-rs hooks (generic versions; FileSystemStoreBackend overrides them) -------------

    def fetch_item(self, call_id: Any, mmap_mode: str | None) -> tuple[bool, Any]:
        """``(True, output)`` for a usable entry, ``(False, None)`` otherwise. A damaged entry
        warns with :class:`CacheWarning` and counts as missing."""
        if not self.contains_item(call_id):
            return False, None
        try:
            return True, self.load_item(call_id, verbose=0)
        except Exception as e:
            _warn_damaged(call_id, e)
            return False, None

    def lock_item(self, call_id: Any) -> Any:
        """A lock held while ``call_id`` is computed (with ``release()``), or None when the
        backend does not lock: then concurrent misses all compute, as in joblib."""
        return None

    def commit_item(
        self, call_id: Any, output: Any, metadata_func: Callable[[], dict[str, Any]], verbose: int
    ) -> dict[str, Any]:
        """Store ``output`` and its metadata (``metadata_func()``, called once the output is
        written so its duration counts the write); returns the metadata."""
        self.dump_item(call_id, output, verbose=verbose)
        metadata = metadata_func()
        self.store_metadata(call_id, metadata)
        return metadata


def _warn_damaged(where: Any, error: BaseException | str) -> None:
    """Warn that the entry at ``where`` is unusable; ``error`` is the exception, or its
    ``'TypeName: message'`` text (a :class:`~joblib_rs._core.StoreHit`'s ``damage``)."""
    where = where if isinstance(where, str) else "/".join(where)
    what = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    warnings.warn(
        f"Cached result in {where} could not be loaded and will be recomputed ({what}).",
        CacheWarning,
        stacklevel=4,
    )


def _warn_left_behind(skipped: list[str], where: str, stacklevel: int) -> None:
    """Warn that a clear left ``skipped`` (items the cache did not create) in ``where``."""
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(
            f"Left {len(skipped)} item(s) in {where} that the cache did not create: {shown}",
            CacheWarning,
            stacklevel=stacklevel + 1,
        )


def _print_loading(
    call_id: Any,
    full_path: str,
    verbose: int,
    timestamp: float | None,
    metadata: dict[str, Any] | None,
) -> None:
    """joblib's ``[Memory]...: Loading f...`` message (``verbose > 1``)."""
    if verbose <= 1:
        return
    elapsed = f"{format_time(time.time() - timestamp): <16}" if timestamp is not None else ""
    signature = os.path.basename(call_id[0])
    if metadata is not None and "input_args" in metadata:
        signature += "({})".format(
            ", ".join(f"{k}={v}" for k, v in metadata["input_args"].items())
        )
    msg = f"[Memory]{elapsed}: Loading {signature}"
    print(f"{msg}..." if verbose < 10 else f"{msg} from {full_path}")
