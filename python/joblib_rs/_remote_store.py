"""The object-storage store of :class:`joblib_rs.Memory`: ``Memory("s3://bucket/prefix")``
(also ``gs://`` and ``az://``), one cache shared by every machine of a cluster.

The transfers, the entry format, the leases and the LRU scan are in Rust
(``joblib_core::remote`` over Apache Arrow's ``object_store`` crate, bound as
``joblib_rs._core.RemoteStore``); every network call releases the GIL. Layout under
``<url>/joblib_rs/``::

    <func id>/func_code.py            the function's code, as in the local store
    <func id>/<args hash>/entry.jrs   ONE object: checksummed header, metadata, output
    <func id>/<args hash>.lease       who computes the entry, until when (If-None-Match: *)
    <func id>/<args hash>.atime       empty; its Last-Modified is the entry's last access

A hit is one GET (plus, at most once per ``access_time_interval`` per process and entry, one
PUT of the ``.atime`` marker). A miss is one GET, one conditional PUT of the lease and one PUT
of the entry. See ``docs/memory.md``, "Sharing a cache between machines". Which URLs and
options mean what is :mod:`joblib_rs._remote_config`'s; the lease of an entry being computed
is :mod:`joblib_rs._remote_lease`'s; this module is the store backend itself.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pickle import PicklingError
from typing import Any

from joblib_rs import _core, numpy_pickle
from joblib_rs._remote_config import (
    _STALE_LEASE_AGE,
    DEFAULT_ACCESS_TIME_INTERVAL,
    DEFAULT_LEASE_TTL,
    REMOTE_SCHEMES,
    client_options,
    remote_scheme,
)
from joblib_rs._remote_lease import _Lease, _Wait
from joblib_rs._store_backends import (
    DEFAULT_LOCK_TIMEOUT,
    CacheItemInfo,
    CacheWarning,
    StoreBackendBase,
    StoreBackendMixin,
    _load_from_bytes,
    _print_loading,
    _warn_damaged,
    memstr_to_bytes,
)
from joblib_rs._store_base import _warn_left_behind

__all__ = ["REMOTE_SCHEMES", "ObjectStoreBackend", "remote_backend_for"]

#: Clients inherited through fork(): never dropped in the child, whose copy of their I/O
#: runtime has no threads left to shut down.
_INHERITED: list[Any] = []


def remote_backend_for(location: str) -> type | None:
    """The store class for a ``scheme://`` location, None for a plain path.

    Raises
    ------
    ValueError
        For a URL whose scheme no store handles (never treated as a local folder).
    """
    if remote_scheme(location) is None:
        return None
    return ObjectStoreBackend


class ObjectStoreBackend(StoreBackendBase, StoreBackendMixin):
    """A cache on object storage (S3, GCS, Azure), shared by processes and machines.

    Locations are URLs: ``s3://bucket/prefix``, ``gs://bucket/prefix``,
    ``az://container/prefix``. Credentials, region and endpoint come from each cloud's
    standard environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``,
    ``AWS_REGION``, ``AWS_ALLOW_HTTP``, ``GOOGLE_APPLICATION_CREDENTIALS``,
    ``AZURE_STORAGE_ACCOUNT_NAME``...), overridden by ``backend_options`` keys of the cloud
    (``endpoint``, ``region``, ``access_key_id``, ``secret_access_key``, ``allow_http``...).

    Options of the store itself: ``compress``, ``mmap_mode`` (ignored with a warning: results
    are loaded into memory), ``lock_timeout`` (seconds a process waits for another one
    computing the same entry, default 300; then it computes too), ``lease_ttl`` (default 60:
    how long a crashed computing process blocks its key), ``access_time_interval`` (default
    3600: how often a hit may record its time for ``reduce_size``), ``max_retries``,
    ``retry_timeout`` and ``connect_timeout`` (network failures surface after about
    ``retry_timeout`` seconds), ``range_size`` (default 16 MiB: bigger entries are read by
    concurrent ranged GETs of this size; 0 reads each entry with one streaming GET).
    """

    _output_name: str = _core.REMOTE_ENTRY_NAME
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    lease_ttl: float = DEFAULT_LEASE_TTL
    access_time_interval: float = DEFAULT_ACCESS_TIME_INTERVAL

    def configure(
        self, location: str, verbose: int = 1, backend_options: dict[str, Any] | None = None
    ) -> None:
        """Connect to the bucket at ``location`` (no request is sent yet) and read the
        options.

        Parameters
        ----------
        location : str
            ``scheme://bucket/prefix``.
        verbose : int, default=1
            Verbosity of the store's messages.
        backend_options : dict, optional
            The store's options and the cloud client's configuration keys.
        """
        options = dict(backend_options or {})
        self.location = location.rstrip("/")
        self.verbose = verbose
        self.compress = options.get("compress", False)
        mmap_mode = options.get("mmap_mode")
        if mmap_mode is not None:
            warnings.warn(
                f"Results stored in {self.location} cannot be memory-mapped; they are loaded "
                "into memory. Option mmap_mode will be ignored.",
                stacklevel=4,
            )
        self.mmap_mode = None
        self.lock_timeout = float(options.get("lock_timeout", DEFAULT_LOCK_TIMEOUT))
        self.lease_ttl = float(options.get("lease_ttl", DEFAULT_LEASE_TTL))
        self.access_time_interval = float(
            options.get("access_time_interval", DEFAULT_ACCESS_TIME_INTERVAL)
        )
        if self.lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be positive, got {self.lease_ttl}")
        self._timeouts, self._cloud_options = client_options(options)
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._reset()
        # Validate the URL and the options now: a bad location fails at Memory().
        self._client()

    def _reset(self) -> None:
        self._handle: Any = None
        self._pid = -1
        self._touched: dict[str, float] = {}
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        # The client (its connections and runtime threads) belongs to this process.
        state = self.__dict__.copy()
        for key in ("_handle", "_pid", "_touched", "_local"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def _client(self) -> Any:
        """This process's client (created again in a forked or unpickled copy)."""
        pid = os.getpid()
        if self._handle is None or self._pid != pid:
            if self._handle is not None:
                _INHERITED.append(self._handle)
            self._handle = _core.RemoteStore(self.location, self._cloud_options, **self._timeouts)
            self._pid = pid
            self._touched = {}
        return self._handle

    @property
    def requests(self) -> int:
        """Requests this process sent to the store so far (for cost measurements)."""
        return int(self._client().requests)

    def _committed(self) -> set[str]:
        committed = getattr(self._local, "committed", None)
        if committed is None:
            committed = self._local.committed = set()
        return committed

    def _fresh(self) -> set[str]:
        fresh = getattr(self._local, "fresh", None)
        if fresh is None:
            fresh = self._local.fresh = set()
        return fresh

    # -- keys ------------------------------------------------------------------------------

    def _key(self, location: str) -> str:
        """The key (relative to the store root) of a full location string."""
        if location == self.location:
            return ""
        prefix = self.location + "/"
        if not location.startswith(prefix):
            raise ValueError(f"{location!r} is not inside the store {self.location!r}")
        return location[len(prefix) :].strip("/")

    @staticmethod
    def _entry(call_id: Any) -> str:
        return "/".join(call_id)

    def _entry_key(self, call_id: Any) -> str:
        return f"{self._entry(call_id)}/{self._output_name}"

    # -- joblib's primitives ---------------------------------------------------------------

    def _open_item(self, f: Any, mode: str) -> Any:
        """A file object over the object ``f``: read whole (``'rb'``), or written when
        closed (``'wb'``)."""
        key = self._key(f)
        client = self._client()
        if "r" in mode:
            data = client.get(key)
            if data is None:
                raise FileNotFoundError(f"No such object: {f}")
            return io.BytesIO(data)

        class _Upload(io.BytesIO):
            def close(inner) -> None:
                if not inner.closed:
                    client.put(key, inner.getvalue())
                super().close()

        return _Upload()

    def _item_exists(self, location: str) -> bool:
        """Whether an object, or any object under ``location`` as a prefix, exists."""
        key = self._key(location)
        client = self._client()
        if key and client.head(key) is not None:
            return True
        return bool(client.list(key))

    def _move_item(self, src: str, dst: str) -> None:
        """Copy ``src`` to ``dst`` and remove ``src``."""
        client = self._client()
        data = client.get(self._key(src))
        if data is None:
            raise FileNotFoundError(f"No such object: {src}")
        client.put(self._key(dst), data)
        client.delete(self._key(src))

    def create_location(self, location: str) -> None:
        """Nothing to create: object stores have no folders."""

    def clear_location(self, location: str) -> None:
        """Remove the objects the store created under ``location``; anything else there
        stays, with a :class:`CacheWarning` naming it."""
        self._clear_own(self._key(location), location)

    def _clear_own(self, prefix: str, shown_as: str) -> tuple[int, int, list[str]]:
        """Remove what the store created under ``prefix`` (one listing, bulk deletes):
        ``(objects removed, entries among them, keys left)``."""
        removed, entries, skipped = self._client().clear_own(prefix)
        _warn_left_behind(skipped, shown_as, stacklevel=4)
        return removed, entries, skipped

    def get_items(self) -> list[CacheItemInfo]:
        """Every entry, from one listing of the store."""
        return [
            CacheItemInfo(f"{self.location}/{entry}", size, datetime.datetime.fromtimestamp(atime))
            for entry, size, atime in self._client().scan()
        ]

    # -- joblib's API, one request each where possible -------------------------------------

    def load_item(
        self,
        call_id: Any,
        verbose: int = 1,
        timestamp: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Load the output stored at ``call_id``; ``KeyError`` if there is none."""
        full_path = f"{self.location}/{self._entry(call_id)}"
        _print_loading(call_id, full_path, verbose, timestamp, metadata)
        found = self._client().get_entry(self._entry_key(call_id))
        if found is None:
            raise KeyError(
                "Non-existing item (may have been cleared).\n"
                f"Object {full_path}/{self._output_name} does not exist"
            )
        return _load_from_bytes(found[1])

    def dump_item(self, call_id: Any, item: Any, verbose: int = 1) -> None:
        """Store ``item`` as a complete entry (with empty metadata)."""
        self.commit_item(call_id, item, dict, verbose)

    def clear_item(self, call_id: Any) -> None:
        """Remove the entry, its lease and its access marker."""
        entry = self._entry(call_id)
        self._local.prefetched = None
        client = self._client()
        client.delete(f"{entry}/{self._output_name}")
        client.delete(entry + _core.REMOTE_ATIME_SUFFIX)
        client.delete(entry + _core.REMOTE_LEASE_SUFFIX)

    def contains_item(self, call_id: Any) -> bool:
        """Whether an entry is stored at ``call_id`` (one HEAD request)."""
        if self._entry(call_id) in self._fresh():
            return False
        return self._client().head(self._entry_key(call_id)) is not None

    def get_item_info(self, call_id: Any) -> dict[str, Any]:
        """Information about the item: its location (URL)."""
        return {"location": f"{self.location}/{self._entry(call_id)}"}

    def get_metadata(self, call_id: Any) -> dict[str, Any]:
        """The metadata stored with the entry, ``{}`` if none can be read. The entry read is
        kept for the lookup that usually follows (``cache_validation_callback``)."""
        key = self._entry_key(call_id)
        try:
            found = self._client().get_entry(key)
        except Exception:
            return {}
        if found is None:
            return {}
        self._local.prefetched = (key, found)
        try:
            metadata = json.loads(found[0].decode("utf-8"))
        except ValueError:
            return {}
        return metadata if isinstance(metadata, dict) else {}

    def store_metadata(self, call_id: Any, metadata: dict[str, Any]) -> None:
        """Rewrite the entry with new metadata (best effort)."""
        key = self._entry_key(call_id)
        try:
            client = self._client()
            found = client.get_entry(key)
            if found is not None:
                client.put_entry(key, json.dumps(metadata).encode("utf-8"), found[1])
        except Exception:
            pass

    def contains_path(self, call_id: Any) -> bool:
        """Whether anything is stored for the function."""
        return bool(self._client().list("/".join(call_id)))

    def clear_path(self, call_id: Any) -> None:
        """Remove the function's whole cache (what the store created of it)."""
        prefix = "/".join(call_id)
        self._clear_own(prefix, f"{self.location}/{prefix}")

    def store_cached_func_code(self, call_id: Any, func_code: str | None = None) -> None:
        """Store the function's code (if given): one PUT, atomic."""
        if func_code is not None:
            key = "/".join([*call_id, _core.STORE_FUNC_CODE])
            self._client().put(key, func_code.encode("utf-8"))

    def get_cached_func_code(self, call_id: Any) -> str:
        """The stored code of the function (``FileNotFoundError`` if there is none)."""
        key = "/".join([*call_id, _core.STORE_FUNC_CODE])
        data = self._client().get(key)
        if data is None:
            raise FileNotFoundError(f"No such object: {self.location}/{key}")
        return data.decode("utf-8")

    def get_cached_func_info(self, call_id: Any) -> dict[str, Any]:
        """Information about the cached function: its location (URL)."""
        return {"location": "/".join([self.location, *call_id])}

    def clear(self) -> None:
        """Remove every object the store created; anything else under its prefix stays."""
        self._clear_own("", self.location)

    def enforce_store_limits(
        self,
        bytes_limit: int | str | None,
        items_limit: int | None = None,
        age_limit: datetime.timedelta | None = None,
    ) -> None:
        """Remove least recently accessed entries until the store fits the limits (one
        listing, then bulk deletes), and leases left by killed processes."""
        if isinstance(bytes_limit, str):
            bytes_limit = memstr_to_bytes(bytes_limit)
        if age_limit is not None and age_limit.total_seconds() < 0:
            raise ValueError("age_limit has to be a positive timedelta")
        removed = self._client().reduce_size(
            None if bytes_limit is None else max(0, int(bytes_limit)),
            None if items_limit is None else max(0, int(items_limit)),
            None if age_limit is None else age_limit.total_seconds(),
            _STALE_LEASE_AGE,
        )
        if self.verbose > 10:
            for entry, size, atime in removed:
                item = CacheItemInfo(
                    f"{self.location}/{entry}", size, datetime.datetime.fromtimestamp(atime)
                )
                print(f"Deleting item {item}")

    # -- joblib-rs hooks -------------------------------------------------------------------

    def fetch_item(self, call_id: Any, mmap_mode: str | None) -> tuple[bool, Any]:
        """One GET of the entry object, checksums verified, output unpickled. A damaged
        entry warns (:class:`CacheWarning`), is removed and counts as a miss; so does a
        network failure (the result is then computed here)."""
        key = self._entry_key(call_id)
        entry = self._entry(call_id)
        fresh = self._fresh()
        if entry in fresh:
            # This thread created the entry's lease just now: nothing was published.
            fresh.discard(entry)
            return False, None
        prefetched = getattr(self._local, "prefetched", None)
        self._local.prefetched = None
        try:
            if prefetched is not None and prefetched[0] == key:
                found = prefetched[1]
            else:
                found = self._client().get_entry(key)
        except OSError as e:
            warnings.warn(
                f"Could not read cached result {self.location}/{entry} ({e}); computing it.",
                CacheWarning,
                stacklevel=4,
            )
            return False, None
        except Exception as e:
            _warn_damaged(f"{self.location}/{entry}", e)
            self._discard(call_id)
            return False, None
        if found is None:
            return False, None
        try:
            output = _load_from_bytes(found[1])
        except Exception as e:
            _warn_damaged(f"{self.location}/{entry}", e)
            self._discard(call_id)
            return False, None
        self._touch(entry)
        return True, output

    def _discard(self, call_id: Any) -> None:
        try:
            self.clear_item(call_id)
        except OSError:
            pass

    def _touch(self, entry: str) -> None:
        """Record an access for LRU: at most once per ``access_time_interval`` per process
        and entry, one PUT of an empty marker object (never a rewrite of the entry)."""
        now = time.monotonic()
        last = self._touched.get(entry)
        if last is not None and now - last < self.access_time_interval:
            return
        if len(self._touched) >= 65536:
            self._touched.clear()
        self._touched[entry] = now
        try:
            self._client().put(entry + _core.REMOTE_ATIME_SUFFIX, b"")
        except OSError:
            pass

    def lock_item(self, call_id: Any) -> Any:
        """Take the entry's lease (``If-None-Match: *``), or wait while another process
        holds it: until the entry appears, the lease expires (then take it over) or
        ``lock_timeout`` runs out (a :class:`CacheWarning`, and None: compute here too)."""
        entry = self._entry(call_id)
        lease_key = entry + _core.REMOTE_LEASE_SUFFIX
        client = self._client()
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.02
        while True:
            try:
                state, expires = client.try_lease(lease_key, self.lease_ttl, self._owner)
                if state != "held":
                    fresh = state == "created"
                    if fresh:
                        self._fresh().add(entry)
                    return _Lease(self, entry, self.lease_ttl, fresh)
                if client.head(f"{entry}/{self._output_name}") is not None:
                    return _Wait()
            except OSError as e:
                warnings.warn(
                    f"Could not take the lease of {self.location}/{entry} ({e}); computing "
                    "without it.",
                    CacheWarning,
                    stacklevel=3,
                )
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                warnings.warn(
                    f"Waited {self.lock_timeout:.0f}s for another process computing "
                    f"{'/'.join(call_id)}; computing it here too.",
                    CacheWarning,
                    stacklevel=3,
                )
                return None
            until_expiry = max(0.0, expires - time.time())
            time.sleep(min(delay, remaining, until_expiry + 0.01))
            delay = min(delay * 1.5, 0.5)

    def commit_item(
        self, call_id: Any, output: Any, metadata_func: Callable[[], dict[str, Any]], verbose: int
    ) -> dict[str, Any]:
        """Publish output and metadata as one object (one PUT, or a multipart upload for big
        outputs): readers see the whole entry or none. Failures (unpicklable output, network)
        are a :class:`CacheWarning`; the caller still gets its result."""
        entry = self._entry(call_id)
        self._fresh().discard(entry)
        if verbose > 10:
            print(f"Persisting in {self.location}/{entry}")
        metadata = None
        try:
            buffer = io.BytesIO()
            numpy_pickle.dump(output, buffer, compress=self.compress)
            metadata = metadata_func()
            self._client().put_entry(
                self._entry_key(call_id),
                json.dumps(metadata).encode("utf-8"),
                buffer.getvalue(),
            )
            self._committed().add(entry)
            # Its own Last-Modified is its last access for now.
            self._touched[entry] = time.monotonic()
        except PicklingError as e:
            warnings.warn(
                f"Unable to cache to disk: failed to pickle output. Exception: {e}.",
                CacheWarning,
                stacklevel=3,
            )
        except Exception as e:
            warnings.warn(
                f"Unable to cache to {self.location}. Exception: {e}.", CacheWarning, stacklevel=3
            )
        return metadata if metadata is not None else metadata_func()

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(location="{self.location}")'
