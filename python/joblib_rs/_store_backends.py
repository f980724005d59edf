"""Store backends of :class:`joblib_rs.Memory`: where and how cached results are kept.

:class:`StoreBackendBase` and :class:`StoreBackendMixin` are joblib's API for third-party
stores (cloud buckets, databases): a backend written for joblib keeps working here. The
default ``'local'`` backend, :class:`FileSystemStoreBackend`, implements the same API over the
Rust store (``joblib_rs._core.store_*``): entries are published atomically, a per-entry lock
lets one process compute a missing result while the others wait, and a cache hit costs one
``stat`` and one ``read``. The layout is specified in ``docs/store.md``.

Besides joblib's methods, :class:`StoreBackendMixin` defines three hooks that
:class:`~joblib_rs.memory.MemorizedFunc` calls: :meth:`~StoreBackendMixin.fetch_item`,
:meth:`~StoreBackendMixin.lock_item` and :meth:`~StoreBackendMixin.commit_item`. Their
generic versions are built on joblib's methods, so a third-party backend needs none of them.
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

from joblib_rs import _core, numpy_pickle
from joblib_rs._func_inspect import format_time
from joblib_rs.disk import mkdirp, rm_subdirs  # noqa: F401  (joblib's module has them)

__all__ = [
    "CacheItemInfo",
    "CachePicklingWarning",
    "CacheWarning",
    "FileSystemStoreBackend",
    "StoreBackendBase",
    "StoreBackendMixin",
    "concurrency_safe_write",
    "reduce_store",
]

CacheItemInfo = collections.namedtuple("CacheItemInfo", "path size last_access")

#: Outputs up to this size are read by the store in one call and unpickled from memory;
#: bigger ones are loaded from their path (their arrays read in place or memory-mapped).
_READ_LIMIT = 1 << 20
#: Default longest wait for another process computing the same entry (seconds).
DEFAULT_LOCK_TIMEOUT = 300.0
#: A hit re-checks that its entry is whole and refreshes its access time (LRU) at most this
#: often per entry and process (seconds); other hits only open and read the output.
_VERIFY_INTERVAL = 1.0
#: Entries remembered as verified, per store object, before the memory is reset.
_MAX_VERIFIED = 4096
#: A file modified less than this long ago (ns) may change again without its modification
#: time changing (the kernel's file clock ticks every 1 to 10 ms): see ``_load_mapped``.
_RACY_NS = 50_000_000
#: Staging folders older than this are leftovers of killed processes (seconds).
_STALE_TEMP_AGE = 3600.0


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


def _warn_damaged(where: Any, error: BaseException) -> None:
    where = where if isinstance(where, str) else "/".join(where)
    warnings.warn(
        f"Cached result in {where} could not be loaded and will be recomputed "
        f"({type(error).__name__}: {error}).",
        CacheWarning,
        stacklevel=4,
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


def reduce_store(
    root: str,
    bytes_limit: int | str | None = None,
    items_limit: int | None = None,
    age_limit: datetime.timedelta | None = None,
    dry_run: bool = False,
) -> list[CacheItemInfo]:
    """Remove the least recently used entries of the store at ``root`` until it fits the
    limits (``Memory.reduce_size``'s policy, run by the Rust store), and the staging leftovers
    of killed writers.

    Parameters
    ----------
    root : str
        The store root (``<location>/joblib_rs``).
    bytes_limit : int or str, optional
        Largest total size of the entries; ``'10M'``-style strings are accepted.
    items_limit : int, optional
        Largest number of entries.
    age_limit : datetime.timedelta, optional
        Entries last accessed longer ago than this are removed.
    dry_run : bool, default=False
        Remove nothing; return the entries that would be removed.

    Returns
    -------
    list of CacheItemInfo
        The entries removed (or to remove).
    """
    if isinstance(bytes_limit, str):
        bytes_limit = memstr_to_bytes(bytes_limit)
    if age_limit is not None and age_limit.total_seconds() < 0:
        raise ValueError("age_limit has to be a positive timedelta")
    removed = _core.store_reduce_size(
        root,
        None if bytes_limit is None else max(0, int(bytes_limit)),
        None if items_limit is None else max(0, int(items_limit)),
        None if age_limit is None else age_limit.total_seconds(),
        _STALE_TEMP_AGE,
        dry_run,
    )
    return [
        CacheItemInfo(path, size, datetime.datetime.fromtimestamp(atime))
        for path, size, atime in removed
    ]


class FileSystemStoreBackend(StoreBackendBase, StoreBackendMixin):
    """The ``'local'`` store: a folder tree on a local or network file system, run by the
    Rust store. Options (``backend_options``): ``compress``, ``mmap_mode``,
    ``lock_timeout`` (seconds a process waits for another one computing the same entry,
    default 300; then it computes too) and ``fsync`` (default False: sync each entry to disk
    before publishing it, so that it also survives a power loss; without it an entry cut
    short by a power loss fails its checksum and is recomputed)."""

    _output_name: str = _core.STORE_OUTPUT
    _open_item = staticmethod(open)
    _item_exists = staticmethod(os.path.exists)
    _move_item = staticmethod(os.replace)
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    fsync: bool = False

    def configure(
        self, location: str, verbose: int = 1, backend_options: dict[str, Any] | None = None
    ) -> None:
        """Create the store folder (and a ``.gitignore`` beside it) and read the options."""
        options = dict(backend_options or {})
        self.location = os.fspath(location)
        _makedirs(self.location)
        # The marker says this folder is a store (created here, or one of an earlier version
        # adopted): the command line refuses folders without it.
        try:
            _core.store_mark(self.location)
        except OSError as e:
            warnings.warn(
                f"Unable to mark {self.location} as a joblib-rs cache. Exception: {e}.",
                stacklevel=2,
            )
        # Keep the cache out of version control: the .gitignore goes in the user's folder.
        parent = os.path.dirname(self.location)
        cache_dir = parent if os.path.basename(self.location) == _core.STORE_DIR else None
        gitignore = os.path.join(cache_dir or self.location, ".gitignore")
        if not os.path.exists(gitignore):
            try:
                _core.store_write_atomic(gitignore, b"# Created by joblib automatically.\n*\n")
            except OSError as e:
                warnings.warn(f"Unable to write {gitignore}. Exception: {e}.", stacklevel=2)
        self.compress = options.get("compress", False)
        mmap_mode = options.get("mmap_mode")
        if self.compress and mmap_mode is not None:
            warnings.warn(
                "Compressed items cannot be memmapped in a filesystem store. "
                "Option will be ignored.",
                stacklevel=2,
            )
        self.mmap_mode = mmap_mode
        self.lock_timeout = float(options.get("lock_timeout", DEFAULT_LOCK_TIMEOUT))
        self.fsync = bool(options.get("fsync", False))
        self.verbose = verbose
        self._verified_at: dict[str, float] = {}
        self._mapped_ok: dict[str, tuple[int, int, int, int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Which entries this process verified means nothing to another process.
        state = self.__dict__.copy()
        state["_verified_at"] = {}
        state["_mapped_ok"] = {}
        return state

    def _load_mapped(self, path: str, mmap_mode: str) -> Any:
        """Load ``path`` with its arrays memory-mapped. The first time in this process (and
        whenever the file's identity, size or modification time changed since), the mapped
        payloads are also read once to verify their checksums; later hits only ``stat``."""
        st = os.stat(path)
        token = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        mapped_ok = self.__dict__.setdefault("_mapped_ok", {})
        if mapped_ok.get(path) == token:
            return numpy_pickle.load(path, mmap_mode=mmap_mode)
        # A change in the same tick of the kernel's coarse file clock as the last write would
        # keep the modification time: a file modified that recently is verified on every hit
        # until it is older (git's "racy clean" rule).
        settled = time.time_ns() - st.st_mtime_ns > _RACY_NS
        output = numpy_pickle._load_mapped_verified(path, mmap_mode)
        if settled:
            if len(mapped_ok) >= _MAX_VERIFIED:
                mapped_ok.clear()
            mapped_ok[path] = token
        return output

    def create_location(self, location: str) -> None:
        """Create a folder (and its parents)."""
        _makedirs(location)

    def clear_location(self, location: str) -> None:
        """Remove what the store created in a folder (entries are renamed aside first, so
        readers never see one half removed). The store root itself stays, with its marker;
        anything the store did not create stays too, with a :class:`CacheWarning` naming it."""
        if os.path.normpath(location) == os.path.normpath(self.location):
            _, _, skipped = _core.store_clear(location)
        elif os.path.isdir(location):
            _, _, skipped = _core.store_remove(location)
        else:
            return
        if skipped:
            shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
            warnings.warn(
                f"Left {len(skipped)} item(s) in {location} that the cache did not create: "
                f"{shown}",
                CacheWarning,
                stacklevel=3,
            )

    def get_items(self) -> list[CacheItemInfo]:
        """Every entry, found by a parallel walk of the store."""
        return [
            CacheItemInfo(path, size, datetime.datetime.fromtimestamp(atime))
            for path, size, atime in _core.store_scan(self.location)
        ]

    def enforce_store_limits(
        self,
        bytes_limit: int | str | None,
        items_limit: int | None = None,
        age_limit: datetime.timedelta | None = None,
    ) -> None:
        """LRU reduction in Rust: parallel walk, selection, removal. Also sweeps leftovers of
        killed writers."""
        removed = reduce_store(self.location, bytes_limit, items_limit, age_limit)
        if self.verbose > 10:
            for item in removed:
                print(f"Deleting item {item}")

    def store_cached_func_code(self, call_id: Any, func_code: str | None = None) -> None:
        """Create the function's folder and store its code atomically (another process never
        reads half a file and wipes the cache believing the function changed)."""
        func_path = os.path.join(self.location, *call_id)
        _makedirs(func_path)
        if func_code is not None:
            _core.store_write_atomic(
                os.path.join(func_path, _core.STORE_FUNC_CODE), func_code.encode("utf-8")
            )

    def store_metadata(self, call_id: Any, metadata: dict[str, Any]) -> None:
        """Replace the metadata of an existing entry atomically (best effort)."""
        path = os.path.join(self.location, *call_id, _core.STORE_METADATA)
        try:
            _core.store_write_atomic(path, json.dumps(metadata).encode("utf-8"))
        except Exception:
            pass

    def dump_item(self, call_id: Any, item: Any, verbose: int = 1) -> None:
        """Store ``item`` as a complete entry (with empty metadata)."""
        self.commit_item(call_id, item, dict, verbose)

    def load_item(
        self,
        call_id: Any,
        verbose: int = 1,
        timestamp: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Load the output stored at ``call_id``; ``KeyError`` if there is none, the loader's
        error (``CorruptFileError``...) if it is damaged."""
        full_path = os.path.join(self.location, *call_id)
        _print_loading(call_id, full_path, verbose, timestamp, metadata)
        found = self._read(full_path, self.mmap_mode, True)
        if found is None or isinstance(found, str):
            filename = os.path.join(full_path, self._output_name)
            raise KeyError(
                f"Non-existing item (may have been cleared).\nFile {filename} does not exist"
            )
        return found[0]

    # -- joblib-rs hooks ---------------------------------------------------------------------

    def _read(self, entry: str, mmap_mode: str | None, verify: bool) -> tuple[Any] | str | None:
        """``(output,)`` for a complete entry, the damage (str) for half an entry, None for
        no entry. Loader errors propagate."""
        data = _core.store_read(entry, 0 if mmap_mode is not None else _READ_LIMIT, verify)
        if data is None or isinstance(data, str):
            return data
        if isinstance(data, bytes):
            return (_load_from_bytes(data),)
        path = os.path.join(entry, self._output_name)
        if mmap_mode is None:
            return (numpy_pickle.load(path),)
        return (self._load_mapped(path, mmap_mode),)

    def fetch_item(self, call_id: Any, mmap_mode: str | None) -> tuple[bool, Any]:
        """See :meth:`fetch_entry`."""
        return self.fetch_entry(os.path.join(self.location, *call_id), mmap_mode)

    def fetch_entry(self, entry: str, mmap_mode: str | None) -> tuple[bool, Any]:
        """Load the entry folder ``entry``: ``open`` and one ``read`` (or a load by path for
        big or memory-mapped outputs). The first hit of an entry in this process, then one
        per second at most, also checks that the entry is whole and refreshes its access time
        for LRU. Damage warns with :class:`CacheWarning` and counts as a miss."""
        now = time.monotonic()
        verified = self._verified_at.get(entry)
        verify = verified is None or now - verified > _VERIFY_INTERVAL
        try:
            data = _core.store_read(entry, _READ_LIMIT if mmap_mode is None else 0, verify)
            if type(data) is bytes:
                output = _load_from_bytes(data)
            elif type(data) is int:
                path = os.path.join(entry, self._output_name)
                if mmap_mode is None:
                    output = numpy_pickle.load(path)
                else:
                    output = self._load_mapped(path, mmap_mode)
            else:
                self._verified_at.pop(entry, None)
                if data is not None:
                    _warn_damaged(entry, ValueError(data))
                return False, None
        except Exception as e:
            self._verified_at.pop(entry, None)
            _warn_damaged(entry, e)
            return False, None
        if verify:
            if len(self._verified_at) >= _MAX_VERIFIED:
                self._verified_at.clear()
            self._verified_at[entry] = now
        return True, output

    def lock_item(self, call_id: Any) -> Any:
        """The entry's lock, waited on for at most ``lock_timeout`` seconds (a
        :class:`CacheWarning` and None if the wait runs out)."""
        entry = os.path.join(self.location, *call_id)
        try:
            lock = _core.store_lock(entry, self.lock_timeout)
        except OSError as e:
            warnings.warn(
                f"Could not lock cache entry {entry} ({e}); computing without the lock.",
                CacheWarning,
                stacklevel=3,
            )
            return None
        if lock is None:
            warnings.warn(
                f"Waited {self.lock_timeout:.0f}s for another process computing "
                f"{'/'.join(call_id)}; computing it here too.",
                CacheWarning,
                stacklevel=3,
            )
        return lock

    def commit_item(
        self, call_id: Any, output: Any, metadata_func: Callable[[], dict[str, Any]], verbose: int
    ) -> dict[str, Any]:
        """Write output and metadata into a staging folder, then publish both at once. A
        failure (unpicklable output, full disk) is a :class:`CacheWarning`; the caller still
        gets its result."""
        entry = os.path.join(self.location, *call_id)
        if verbose > 10:
            print(f"Persisting in {entry}")
        metadata = None
        for attempt in range(3):
            staging = None
            try:
                staging = _core.Staging(entry)
                # A file object, not a path: the staging folder is already private, and
                # syncing is the commit's decision (``fsync`` option).
                with open(os.path.join(staging.path, self._output_name), "wb") as f:
                    numpy_pickle.dump(output, f, compress=self.compress)
                if metadata is None:
                    metadata = metadata_func()
                staging.write(_core.STORE_METADATA, json.dumps(metadata).encode("utf-8"))
                staging.commit(self.fsync)
                break
            except FileNotFoundError as e:
                # Another process cleared the function's folder while this entry was being
                # written: write it again (the result is still good).
                if attempt == 2:
                    warnings.warn(
                        f"Unable to cache to disk. Exception: {e}.", CacheWarning, stacklevel=3
                    )
            except PicklingError as e:
                warnings.warn(
                    f"Unable to cache to disk: failed to pickle output. Exception: {e}.",
                    CachePicklingWarning,
                    stacklevel=3,
                )
                break
            except Exception as e:
                warnings.warn(
                    f"Unable to cache to disk. Exception: {e}.", CacheWarning, stacklevel=3
                )
                break
            finally:
                if staging is not None:
                    staging.abort()
        return metadata if metadata is not None else metadata_func()
