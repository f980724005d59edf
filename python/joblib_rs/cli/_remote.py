"""``joblib-rs cache ...`` and ``inspect`` on object storage (``s3://``, ``gs://``, ``az://``).

A URL location is read through the same Rust client as ``Memory("s3://...")``
(``_core.RemoteStore``, configured by each cloud's environment variables)::

    URL ──► store root <url>/joblib_rs ──► scan (1 LIST) ─┬─► CacheStore (functions, entries)
                                                          ├─► show: 1 ranged GET per entry
                                                          │   (header + metadata only)
                                                          ├─► prune: reduce_size (LRU)
                                                          └─► clear: clear_own (ours only)

Objects under the prefix that the store did not create are listed as skipped and never
removed, as in a local store.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from typing import Any

from joblib_rs import _core
from joblib_rs.cli._cache import CacheFunction, CacheStore, Entry
from joblib_rs.cli._errors import CliError

__all__ = [
    "RemoteEntry",
    "clear_remote",
    "find_remote_store",
    "inspect_remote",
    "is_url",
    "prune_remote",
]


def is_url(location: str) -> bool:
    """Whether ``location`` is a ``scheme://`` URL rather than a path."""
    return _core.url_scheme(location) is not None


def _client(url: str) -> Any:
    """A client for ``url`` (a bucket and prefix), or a :class:`CliError` naming it."""
    from joblib_rs._remote_store import REMOTE_SCHEMES

    scheme = _core.url_scheme(url)
    if scheme not in REMOTE_SCHEMES:
        supported = ", ".join(f"{s}://" for s in sorted(REMOTE_SCHEMES))
        raise CliError(
            f"unsupported location {url!r}: unknown URL scheme (supported: {supported})"
        )
    try:
        return _core.RemoteStore(url, [])
    except (OSError, ValueError) as e:
        raise CliError(f"cannot open {url!r}: {e}") from e


def _raw_key(listed: str) -> str:
    """A listed key (percent-encoded as stored) as the client's methods take it."""
    return urllib.parse.unquote(listed)


@dataclass
class RemoteEntry(Entry):
    """A cached result in object storage: ``<func>/<args hash>/entry.jrs``."""

    client: Any = None
    key: str = ""

    def load_metadata(self) -> None:
        """Read the entry's metadata with one ranged GET (the output is not downloaded)."""
        try:
            found = self.client.entry_metadata(self.key)
        except (OSError, ValueError) as e:
            self.damage.append(str(e))
            return
        if found is None:
            self.damage.append(f"no {_core.REMOTE_ENTRY_NAME}")
            return
        try:
            meta = json.loads(found[0].decode("utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            self.metadata = meta
        except ValueError as e:
            self.damage.append(f"unreadable metadata ({e})")

    def verify_output(self) -> None:
        """Download the whole entry and check its checksums (adds to ``damage``)."""
        try:
            if self.client.get_entry(self.key) is None:
                self.damage.append(f"no {_core.REMOTE_ENTRY_NAME}")
        except (OSError, ValueError) as e:
            self.damage.append(str(e))


def _store_root(location: str) -> str:
    """``<location>/joblib_rs``, or ``location`` when it already names the store root."""
    location = location.rstrip("/")
    if location.rsplit("/", 1)[-1] == _core.STORE_DIR:
        return location
    return f"{location}/{_core.STORE_DIR}"


def find_remote_store(location: str) -> CacheStore:
    """List the functions and entries of the store at the URL ``location`` (two LISTs).

    Raises
    ------
    CliError
        If the URL cannot be opened, the server fails, or nothing under it was written by
        joblib-rs's store.
    """
    root = _store_root(location)
    client = _client(root)
    try:
        listing = client.list("")
        items = client.scan()
    except (OSError, ValueError) as e:
        raise CliError(f"cannot list {root}: {e}") from e
    functions: dict[str, CacheFunction] = {}
    func_code_suffix = "/" + _core.STORE_FUNC_CODE
    for key, _size, _modified in listing:
        if key.endswith(func_code_suffix):
            name = _raw_key(key[: -len(func_code_suffix)])
            functions[name] = CacheFunction(name, f"{root}/{name}")
    for entry, size, atime in items:
        func_key, _, args_hash = entry.rpartition("/")
        name = _raw_key(func_key)
        func = functions.setdefault(name, CacheFunction(name, f"{root}/{name}"))
        raw = _raw_key(entry)
        func.entries.append(
            RemoteEntry(
                args_hash,
                f"{root}/{raw}",
                size,
                atime or None,
                client=client,
                key=f"{raw}/{_core.REMOTE_ENTRY_NAME}",
            )
        )
    if not functions:
        detail = (
            f"{len(listing)} object(s) there, none written by it" if listing else "it is empty"
        )
        raise CliError(f"no joblib-rs cache at {location!r}: {root} holds no cache ({detail})")
    for func in functions.values():
        func.entries.sort(key=lambda e: e.last_access or 0.0, reverse=True)
    return CacheStore(location, root, dict(sorted(functions.items())), client=client)


def prune_remote(
    store: CacheStore,
    bytes_limit: int | None,
    items_limit: int | None,
    age_limit: float | None,
    dry_run: bool,
) -> list[tuple[str, int]]:
    """``reduce_size`` on the remote store: the entries removed (or that would be) as
    ``(key, size)``."""
    from joblib_rs._remote_store import _STALE_LEASE_AGE

    try:
        removed = store.client.reduce_size(
            bytes_limit, items_limit, age_limit, _STALE_LEASE_AGE, dry_run
        )
    except (OSError, ValueError) as e:
        raise CliError(f"cannot prune {store.root}: {e}") from e
    return [(_raw_key(entry), size) for entry, size, _ in removed]


def clear_remote(store: CacheStore, func: CacheFunction | None) -> tuple[int, list[str]]:
    """Remove what the store created (under one function's prefix, or all of it):
    ``(entries removed, keys skipped)``."""
    prefix = "" if func is None else func.name
    try:
        _, entries, skipped = store.client.clear_own(prefix)
    except (OSError, ValueError) as e:
        raise CliError(f"cannot clear {store.root}: {e}") from e
    return entries, [f"{store.root}/{_raw_key(k)}" for k in skipped]


def inspect_remote(url: str) -> Any:
    """Describe and verify the object at ``url``: a file written by ``dump`` (or
    ``joblib.dump``), or a cache entry (``.../entry.jrs``, whose metadata checksum and output
    are checked, then the output described).

    Returns
    -------
    Report
        As :func:`joblib_rs.cli._inspect.inspect_file`, naming the URL.
    """
    from joblib_rs.cli._inspect import Report, inspect_file

    parent, _, name = url.rstrip("/").rpartition("/")
    if not name or "://" not in parent:
        raise CliError(f"{url!r} does not name an object (expected scheme://bucket/key)")
    client = _client(parent)
    try:
        if name == _core.REMOTE_ENTRY_NAME:
            found = client.get_entry(name)
            data = None if found is None else found[1]
        else:
            data = client.get(name)
    except (OSError, ValueError) as e:
        if name == _core.REMOTE_ENTRY_NAME:
            report = Report(url, "joblib-rs cache entry", 0)
            report.error = str(e)
            return report
        raise CliError(f"cannot read {url!r}: {e}") from e
    if data is None:
        raise CliError(f"no object at {url!r}")
    with tempfile.TemporaryDirectory(prefix="joblib-rs-inspect-") as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        report = inspect_file(path)
    report.file = url
    return report
