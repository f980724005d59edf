"""``loky.backend.resource_tracker``: counted temporary resources, removed at the last release.

::

    register(name, rtype)      count(name) += 1
    maybe_unlink(name, rtype)  count(name) -= 1; at 0 the resource is removed
                               ("file": unlinked, retried while in use; "folder": removed
                               with its content; "semlock": the named semaphore unlinked)
    unregister(name, rtype)    forgotten without removing it
    at exit                    what is still registered is removed, with a warning

loky runs the tracker as a separate process shared by a parent and its workers, so counts
cover every process. joblib-rs's tracker lives in the process that uses it: joblib-rs's own
pools delete their temporary folders themselves and do not need one. ``_fd`` (the pipe to
loky's tracker process) is therefore always None: no process is ever started.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import threading
import time
import warnings

__all__ = ["ResourceTracker", "ensure_running", "maybe_unlink", "register", "unregister"]

#: Report every action on stderr when true (as loky's ``VERBOSE``).
VERBOSE = False


def _unlink_file(name: str) -> None:
    for attempt in range(10):
        try:
            os.unlink(name)
            return
        except FileNotFoundError:
            return
        except PermissionError:
            if attempt == 9:
                raise
            if VERBOSE:
                print(
                    f"[ResourceTracker] tried to unlink {name}, got PermissionError",
                    file=sys.stderr,
                )
            time.sleep(0.2)


def _unlink_semlock(name: str) -> None:
    import _multiprocessing

    _multiprocessing.sem_unlink(name)


_CLEANUP = {
    "file": _unlink_file,
    "folder": lambda name: shutil.rmtree(name, ignore_errors=False),
    "semlock": _unlink_semlock,
}


class ResourceTracker:
    """Reference counts of named resources; the last :meth:`maybe_unlink` removes one."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._exit_hook = False

    def ensure_running(self) -> None:
        """Arrange for leftover resources to be removed when the interpreter exits."""
        with self._lock:
            if not self._exit_hook:
                atexit.register(self._cleanup_at_exit)
                self._exit_hook = True

    def _check(self, rtype: str) -> None:
        if rtype not in _CLEANUP:
            raise ValueError(
                f"Cannot register a resource of type {rtype!r}: use one of {sorted(_CLEANUP)}"
            )

    def register(self, name: str, rtype: str) -> None:
        """Count one more user of ``name``."""
        self._check(rtype)
        self.ensure_running()
        with self._lock:
            key = (os.fspath(name), rtype)
            self._counts[key] = self._counts.get(key, 0) + 1
        if VERBOSE:
            print(f"[ResourceTracker] register {name} ({rtype})", file=sys.stderr)

    def unregister(self, name: str, rtype: str) -> None:
        """Stop tracking ``name`` without removing it."""
        self._check(rtype)
        with self._lock:
            self._counts.pop((os.fspath(name), rtype), None)

    def maybe_unlink(self, name: str, rtype: str) -> None:
        """Count one user less; remove ``name`` when none is left."""
        self._check(rtype)
        key = (os.fspath(name), rtype)
        with self._lock:
            if key not in self._counts:
                warnings.warn(
                    f"resource_tracker: {name} ({rtype}) is not registered", stacklevel=2
                )
                return
            left = self._counts[key] - 1
            if left > 0:
                self._counts[key] = left
                return
            self._counts.pop(key, None)
        if VERBOSE:
            print(f"[ResourceTracker] unlink {name} ({rtype})", file=sys.stderr)
        try:
            _CLEANUP[rtype](key[0])
        except FileNotFoundError:
            pass
        except OSError as exc:
            warnings.warn(f"resource_tracker: {name}: {exc!r}", stacklevel=2)

    def _cleanup_at_exit(self) -> None:
        with self._lock:
            leftovers = list(self._counts)
            self._counts.clear()
        by_type: dict[str, int] = {}
        for name, rtype in leftovers:
            by_type[rtype] = by_type.get(rtype, 0) + 1
            try:
                _CLEANUP[rtype](name)
            except OSError:
                pass
        for rtype, count in by_type.items():
            warnings.warn(
                f"resource_tracker: There appear to be {count} leaked {rtype} objects to "
                "clean up at shutdown",
                stacklevel=1,
            )


_resource_tracker = ResourceTracker()
ensure_running = _resource_tracker.ensure_running
register = _resource_tracker.register
unregister = _resource_tracker.unregister
maybe_unlink = _resource_tracker.maybe_unlink
