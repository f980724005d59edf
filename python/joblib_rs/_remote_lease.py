"""Who computes a missing entry of the object store: the lease one process holds on it.

``ObjectStoreBackend.lock_item`` takes ``<entry>.lease`` with a conditional PUT
(``If-None-Match: *``) and returns a :class:`_Lease`: a background thread renews it every
third of its lifetime until ``release()``. After a commit the lease stays (it marks the
entry as computed); after a failure it is deleted so another process computes at once. A
process that finds the entry published while waiting gets a :class:`_Wait` (nothing held).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from joblib_rs import _core

if TYPE_CHECKING:
    from joblib_rs._remote_store import ObjectStoreBackend


class _Lease:
    """The lease of one entry held by this process: renewed in a background thread until
    released. Released after a successful commit it stays in the store (it marks the entry
    as computed); after a failure it is deleted so that another process computes at once."""

    def __init__(self, backend: ObjectStoreBackend, entry: str, ttl: float, fresh: bool) -> None:
        self.backend = backend
        self.entry = entry
        self.key = entry + _core.REMOTE_LEASE_SUFFIX
        self.ttl = ttl
        self.fresh = fresh
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="joblib-rs-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        client = self.backend._client()
        while not self._stop.wait(self.ttl / 3):
            try:
                client.renew_lease(self.key, self.ttl, self.backend._owner)
            except OSError:
                # The server is unreachable: the lease may expire and another process
                # compute too (a duplicate computation, never a wrong result).
                pass

    def release(self) -> None:
        """Stop renewing; delete the lease unless this thread published the entry."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.backend._fresh().discard(self.entry)
        committed = self.backend._committed()
        if self.entry in committed:
            committed.discard(self.entry)
            return
        try:
            self.backend._client().delete(self.key)
        except OSError:
            # It will expire.
            pass


class _Wait:
    """What :meth:`ObjectStoreBackend.lock_item` returns when the entry was published while
    waiting: nothing to release; the caller loads the entry."""

    def release(self) -> None:
        """Nothing is held."""
