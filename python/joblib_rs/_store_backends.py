"""The ``'local'`` store of :class:`joblib_rs.Memory`: a folder tree run by the Rust store.

:class:`FileSystemStoreBackend` implements joblib's store-backend API (:mod:`joblib_rs.
_store_base`, re-exported here at joblib's import path) over ``joblib_rs._core``: entries are
published atomically, a per-entry lock lets one process compute a missing result while the
others wait. The layout is specified in ``docs/store.md``. Data flow::

    hit:   MemorizedFunc ─► _core.CallPlan.fetch (bind, hash, read, verify, decode: one call,
           one open of output.jrs): small outputs read in memory; bigger ones read in place
           from the same descriptor, and with mmap_mode mapped from it (_loading.load_opened;
           mapped payloads' checksums read once per file version, in the Rust reader)
             └ not a container (a registered compressor's stream) ─► _load_by_path
    miss:  lock_item (_core.store_lock) ─► compute ─► commit_item (_core.Staging: output and
           metadata written aside, published by one rename)
    limits: reduce_store ─► _core.store_reduce_size (parallel walk, LRU selection, removal)
"""

from __future__ import annotations

import datetime
import json
import os
import pickle
import warnings
from collections.abc import Callable
from pickle import PicklingError
from typing import Any

from joblib_rs import _core, _loading, numpy_pickle
from joblib_rs._store_base import (
    DEFAULT_LOCK_TIMEOUT,
    CacheItemInfo,
    CachePicklingWarning,
    CacheWarning,
    StoreBackendBase,
    StoreBackendMixin,
    _load_from_bytes,
    _makedirs,
    _print_loading,
    _warn_damaged,
    _warn_left_behind,
    concurrency_safe_write,
    memstr_to_bytes,
)
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

#: Outputs up to this size are read by the store in one call and unpickled from memory;
#: bigger ones are read in place from the open file (their arrays filled or memory-mapped).
_READ_LIMIT = 1 << 20
#: The ``mmap_mode`` values the reader maps itself.
_MAP_MODES = ("r", "r+", "w+", "c")
#: Staging folders older than this are leftovers of killed processes (seconds).
_STALE_TEMP_AGE = 3600.0


class _ProcessReader:
    """This process's Rust reader of a store's entries (with what it verified and kept).

    Held in a wrapper so that it is not part of the store's value: two stores of the same
    location compare equal whatever their readers have seen (joblib compares a pickled and
    reloaded ``Memory`` attribute by attribute)."""

    __slots__ = ("core",)

    def __init__(self) -> None:
        self.core = _core.EntryReader(
            pickle.loads,
            _load_from_bytes,
            _loading.ENSURE_NATIVE,
            _READ_LIMIT,
            _loading.alloc,
            _loading.load_opened,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ProcessReader)

    __hash__ = object.__hash__


def reader_mapping(mmap_mode: str | None) -> tuple[bool, str | None]:
    """``(mapped, mmap_mode)`` for the reader: a mode numpy does not know is left to the
    load by path, which reports it as ``load`` does."""
    mode = mmap_mode if mmap_mode in _MAP_MODES else None
    return mmap_mode is not None, mode


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
        self._reader = _ProcessReader()

    def __getstate__(self) -> dict[str, Any]:
        # Which entries this process verified means nothing to another process.
        state = self.__dict__.copy()
        state["_reader"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reader = _ProcessReader()

    @property
    def reader(self) -> _core.EntryReader:
        """The Rust reader of this store's entries (see ``crates/joblib-py/src/store_hit.rs``)."""
        return self._reader.core

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
        _warn_left_behind(skipped, location, stacklevel=3)

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
        mapped, mode = reader_mapping(self.mmap_mode)
        hit = self._reader.core.fetch(full_path, mapped, True, mode)
        if hit.found:
            return hit.value
        if hit.size is None:
            filename = os.path.join(full_path, self._output_name)
            raise KeyError(
                f"Non-existing item (may have been cleared).\nFile {filename} does not exist"
            )
        try:
            return self._load_by_path(full_path, self.mmap_mode)
        except BaseException:
            self._reader.core.forget(full_path)
            raise

    # -- joblib-rs hooks ---------------------------------------------------------------------

    def _load_by_path(self, entry: str, mmap_mode: str | None) -> Any:
        """Load an output the reader left to load by path: one that is not a container (a
        registered compressor's stream: nothing in it is mapped or checksummed)."""
        path = os.path.join(entry, self._output_name)
        return numpy_pickle.load(path, mmap_mode=mmap_mode)

    def fetch_item(self, call_id: Any, mmap_mode: str | None) -> tuple[bool, Any]:
        """See :meth:`fetch_entry`."""
        return self.fetch_entry(os.path.join(self.location, *call_id), mmap_mode)

    def fetch_entry(self, entry: str, mmap_mode: str | None) -> tuple[bool, Any]:
        """Load the entry folder ``entry`` in one call into the Rust reader, which opens its
        output once (small: one ``read``; bigger: read in place; ``mmap_mode``: mapped from
        that open file). The first hit of an entry in this process, then one per second at
        most, also checks that the entry is whole and refreshes its access time for LRU.
        Damage warns with :class:`CacheWarning` and counts as a miss."""
        mapped, mode = reader_mapping(mmap_mode)
        return self.finish_fetch(
            entry, self._reader.core.fetch(entry, mapped, False, mode), mmap_mode
        )

    def finish_fetch(
        self, entry: str, hit: _core.StoreHit, mmap_mode: str | None
    ) -> tuple[bool, Any]:
        """``(found, output)`` of what the reader found at ``entry``: loads an output left to
        load by path, warns about damage."""
        if hit.found:
            return True, hit.value
        if hit.size is not None:
            try:
                return True, self._load_by_path(entry, mmap_mode)
            except Exception as e:
                self._reader.core.forget(entry)
                _warn_damaged(entry, e)
                return False, None
        if hit.damage is not None:
            _warn_damaged(entry, hit.damage)
        return False, None

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
