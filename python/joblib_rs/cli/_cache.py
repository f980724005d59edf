"""``joblib-rs cache ...``: list, show, prune and clear the store of a ``Memory`` location
(a folder here; an object-storage URL through :mod:`joblib_rs.cli._remote`).

The layout is ``docs/store.md``'s: ``<location>/joblib_rs/<module path>/<function>/<hash>/``
holding ``output.jrs`` and ``metadata.json``. Sizes and access times come from the Rust
store's parallel walk (``_core.store_scan``); pruning and clearing call the same store code as
``Memory.reduce_size`` and ``Memory.clear``.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from joblib_rs import _core
from joblib_rs._store_backends import reduce_store
from joblib_rs.cli._errors import EXIT_USAGE, CliError
from joblib_rs.cli._format import (
    format_age,
    format_duration,
    format_size,
    format_table,
    parse_age,
    parse_size,
)

__all__ = [
    "CacheFunction",
    "CacheStore",
    "Entry",
    "confirm",
    "find_store",
    "run_clear",
    "run_ls",
    "run_prune",
    "run_show",
]

_HEX = frozenset("0123456789abcdef")


def _is_entry_name(name: str) -> bool:
    """An argument-hash folder name (32 or 40 lowercase hex digits), as the store's."""
    return len(name) in (32, 40) and set(name) <= _HEX


@dataclass
class Entry:
    """One cached result (an argument-hash folder)."""

    hash: str
    path: str
    size: int
    last_access: float | None
    metadata: dict[str, Any] | None = None
    damage: list[str] = field(default_factory=list)

    def load_metadata(self) -> None:
        """Read ``metadata.json`` and record what is missing or unreadable in ``damage``."""
        meta_path = os.path.join(self.path, _core.STORE_METADATA)
        try:
            with open(meta_path, "rb") as f:
                meta = json.loads(f.read().decode("utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            self.metadata = meta
        except FileNotFoundError:
            self.damage.append(f"no {_core.STORE_METADATA}")
        except (OSError, ValueError) as e:
            self.damage.append(f"unreadable {_core.STORE_METADATA} ({e})")
        if not os.path.isfile(os.path.join(self.path, _core.STORE_OUTPUT)):
            self.damage.append(f"no {_core.STORE_OUTPUT}")

    def verify_output(self) -> None:
        """Read ``output.jrs`` whole and check every checksum (adds to ``damage``)."""
        output = os.path.join(self.path, _core.STORE_OUTPUT)
        if not os.path.isfile(output):
            return
        try:
            _core.inspect_path(output)
        except (OSError, ValueError) as e:
            self.damage.append(f"{_core.STORE_OUTPUT}: {e}")

    def _number(self, key: str) -> float | None:
        value = (self.metadata or {}).get(key)
        return float(value) if isinstance(value, int | float) else None

    @property
    def duration(self) -> float | None:
        """Seconds the computation took (from the metadata)."""
        return self._number("duration")

    @property
    def computed(self) -> float | None:
        """When the result was computed (epoch seconds, from the metadata)."""
        return self._number("time")

    @property
    def input_args(self) -> dict[str, str] | None:
        """The arguments' reprs as stored in the metadata."""
        args = (self.metadata or {}).get("input_args")
        return {str(k): str(v) for k, v in args.items()} if isinstance(args, dict) else None

    def to_json(self) -> dict[str, Any]:
        """The entry as ``show --json`` prints it."""
        return {
            "hash": self.hash,
            "path": self.path,
            "size": self.size,
            "duration": self.duration,
            "time": self.computed,
            "last_access": self.last_access,
            "input_args": self.input_args,
            "damaged": bool(self.damage),
            "damage": list(self.damage),
        }


@dataclass
class CacheFunction:
    """One cached function: its folder and its entries."""

    name: str
    path: str
    entries: list[Entry] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Total size of the entries, in bytes."""
        return sum(e.size for e in self.entries)

    @property
    def last_access(self) -> float | None:
        """Most recent access of any entry (epoch seconds)."""
        return max((e.last_access for e in self.entries if e.last_access), default=None)


@dataclass
class CacheStore:
    """A store root and the functions found under it; ``client`` is the object-storage
    client of a URL location (None for a folder)."""

    location: str
    root: str
    functions: dict[str, CacheFunction]
    client: Any = None

    def match(self, func: str) -> CacheFunction:
        """The function named ``func``: its folder path under the root, or an unambiguous
        suffix of it (``f`` for ``mymod/f``).

        Raises
        ------
        CliError
            If no function or several match.
        """
        key = func.strip("/").replace(os.sep, "/")
        if key in self.functions:
            return self.functions[key]
        found = [name for name in self.functions if name.endswith("/" + key)]
        if len(found) == 1:
            return self.functions[found[0]]
        if not found:
            known = ", ".join(sorted(self.functions)) or "none"
            raise CliError(f"no cached function {func!r} in {self.root} (functions: {known})")
        raise CliError(
            f"function name {func!r} is ambiguous in {self.root}; candidates: "
            + ", ".join(sorted(found))
        )


#: How ``show`` and ``prune`` describe an entry folder holding files the cache did not write.
_NOT_OURS = "holds files the cache did not create (left alone)"


def _resolve_root(location: str) -> str:
    """The store root for ``location``: ``location/joblib_rs``, or ``location`` itself when it
    is a store root."""
    if not os.path.exists(location):
        raise CliError(f"location {location!r} does not exist")
    if not os.path.isdir(location):
        raise CliError(f"location {location!r} is not a folder")
    nested = os.path.join(location, _core.STORE_DIR)
    if os.path.isdir(nested):
        return _check_marker(nested)
    if os.path.basename(os.path.normpath(location)) == _core.STORE_DIR:
        return _check_marker(location)
    hint = ""
    if os.path.isdir(os.path.join(location, "joblib")):
        hint = f" ({os.path.join(location, 'joblib')} is a joblib cache, not a joblib-rs one)"
    raise CliError(
        f"no joblib-rs cache in {location!r}: neither {nested!r} nor {location!r} is a "
        f"joblib-rs store{hint}"
    )


def _check_marker(root: str) -> str:
    """``root`` if it carries the store marker, or is a store of an earlier version (which is
    then given one); else a :class:`CliError`: nothing is listed or removed in a folder the
    cache did not create."""
    if os.path.isfile(os.path.join(root, _core.STORE_MARKER)):
        return root
    try:
        if _core.store_mark(root, only_if_store=True):
            return root
    except OSError:
        return root  # a store of an earlier version on a read-only file system
    raise CliError(
        f"{root!r} is not a joblib-rs cache: it has no {_core.STORE_MARKER} marker and holds no "
        "cached function; refusing to touch it"
    )


def _function_folders(root: str) -> list[str]:
    """Folders under ``root`` holding a function's cache: a ``func_code.py`` or entries."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        entries = [d for d in dirnames if _is_entry_name(d)]
        if entries or _core.STORE_FUNC_CODE in filenames:
            if dirpath != root:
                found.append(dirpath)
        # Descend into module folders only; skip entries and staging/trash folders.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in entries)
    return found


def find_store(location: str) -> CacheStore:
    """Locate the store of ``location`` and list its functions and entries.

    Parameters
    ----------
    location : str
        What was given to ``Memory(location)``, or the store root itself.

    Returns
    -------
    CacheStore
        The functions found, sorted by name.

    Raises
    ------
    CliError
        If ``location`` holds no joblib-rs store.
    """
    from joblib_rs.cli import _remote

    if _remote.is_url(location):
        return _remote.find_remote_store(location)
    root = os.path.abspath(_resolve_root(location))
    functions: dict[str, CacheFunction] = {}
    for folder in _function_folders(root):
        name = os.path.relpath(folder, root).replace(os.sep, "/")
        functions[name] = CacheFunction(name, os.path.abspath(folder))
    by_folder = {os.path.abspath(f.path): f for f in functions.values()}
    for path, size, atime in _core.store_scan(root):
        func = by_folder.get(os.path.abspath(os.path.dirname(path)))
        if func is not None:
            func.entries.append(Entry(os.path.basename(path), path, size, atime or None))
    # Entries the scan could not stat (vanished, unreadable) still belong to their function.
    for func in functions.values():
        seen = {e.hash for e in func.entries}
        try:
            names = os.listdir(func.path)
        except OSError:
            names = []
        for name in names:
            path = os.path.join(func.path, name)
            if name not in seen and _is_entry_name(name) and os.path.isdir(path):
                try:
                    foreign = sorted(
                        n
                        for n in os.listdir(path)
                        if n not in (_core.STORE_OUTPUT, _core.STORE_METADATA)
                        and not n.startswith(".tmp-")
                    )
                except OSError:
                    foreign = []
                damage = (
                    [f"{_NOT_OURS}: {', '.join(foreign)}"] if foreign else ["unreadable folder"]
                )
                func.entries.append(Entry(name, path, 0, None, damage=damage))
        func.entries.sort(key=lambda e: e.last_access or 0.0, reverse=True)
    return CacheStore(location, root, dict(sorted(functions.items())))


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def run_ls(location: str, as_json: bool) -> int:
    """``cache ls``: one row per cached function."""
    store = find_store(location)
    funcs = list(store.functions.values())
    if as_json:
        _print_json(
            {
                "location": location,
                "store": store.root,
                "functions": [
                    {
                        "name": f.name,
                        "path": f.path,
                        "entries": len(f.entries),
                        "size": f.size,
                        "last_access": f.last_access,
                    }
                    for f in funcs
                ],
                "entries": sum(len(f.entries) for f in funcs),
                "size": sum(f.size for f in funcs),
            }
        )
        return 0
    print(f"Cache {store.root}")
    if not funcs:
        print("No cached functions.")
        return 0
    now = time.time()
    rows = [
        [f.name, str(len(f.entries)), format_size(f.size), format_age(f.last_access, now)]
        for f in funcs
    ]
    print(format_table(["FUNCTION", "ENTRIES", "SIZE", "LAST ACCESS"], rows, right=(1, 2)))
    total = sum(f.size for f in funcs)
    count = sum(len(f.entries) for f in funcs)
    print(f"{len(funcs)} functions, {count} entries, {format_size(total)}")
    return 0


def _short_args(args: dict[str, str] | None, width: int = 60) -> str:
    if args is None:
        return "?"
    text = ", ".join(f"{k}={v}" for k, v in args.items())
    return text if len(text) <= width else text[: width - 3] + "..."


def run_show(location: str, func: str, as_json: bool, verify: bool) -> int:
    """``cache show``: the entries of one function; damaged entries are flagged."""
    store = find_store(location)
    target = store.match(func)
    for entry in target.entries:
        entry.load_metadata()
        if verify:
            entry.verify_output()
    damaged = sum(1 for e in target.entries if e.damage)
    if as_json:
        _print_json(
            {
                "function": target.name,
                "path": target.path,
                "store": store.root,
                "entries": [e.to_json() for e in target.entries],
                "size": target.size,
                "damaged": damaged,
            }
        )
        return 0
    print(f"Function {target.name} ({target.path})")
    if not target.entries:
        print("No entries.")
        return 0
    now = time.time()
    rows = []
    for e in target.entries:
        status = "ok" if not e.damage else "DAMAGED: " + "; ".join(e.damage)
        rows.append(
            [
                e.hash,
                format_size(e.size),
                format_duration(e.duration),
                format_age(e.computed, now),
                format_age(e.last_access, now),
                _short_args(e.input_args),
                status,
            ]
        )
    headers = ["HASH", "SIZE", "DURATION", "COMPUTED", "LAST ACCESS", "ARGUMENTS", "STATUS"]
    print(format_table(headers, rows, right=(1, 2)))
    print(
        f"{len(target.entries)} entries, {format_size(target.size)}"
        + (f", {damaged} damaged" if damaged else "")
    )
    return 0


def confirm(question: str, assume_yes: bool, read: Callable[[], str] | None = None) -> None:
    """Ask ``question [y/N]`` on stderr and read the answer from stdin.

    Raises
    ------
    CliError
        Unless the answer is yes (or ``assume_yes``): end of input or anything else aborts.
    """
    if assume_yes:
        return
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = (read or sys.stdin.readline)()
    if not answer:
        sys.stderr.write("\n")
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("aborted: nothing was removed")


def _limit(parse: Callable[[str], Any], text: str | None, option: str) -> Any:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as e:
        raise CliError(f"{option}: {e}", EXIT_USAGE) from e


def run_prune(
    location: str,
    max_size: str | None,
    max_age: str | None,
    max_items: int | None,
    dry_run: bool,
    assume_yes: bool,
) -> int:
    """``cache prune``: ``Memory.reduce_size`` from the command line (LRU)."""
    bytes_limit = _limit(parse_size, max_size, "--max-size")
    age = _limit(parse_age, max_age, "--max-age")
    if max_items is not None and max_items < 0:
        raise CliError(f"--max-items: invalid count {max_items} (must be >= 0)", EXIT_USAGE)
    if bytes_limit is None and age is None and max_items is None:
        raise CliError(
            "prune needs at least one of --max-size, --max-age, --max-items", EXIT_USAGE
        )
    age_limit = None if age is None else datetime.timedelta(seconds=age)
    store = find_store(location)
    foreign = [
        e.path
        for f in store.functions.values()
        for e in f.entries
        if any(d.startswith(_NOT_OURS) for d in e.damage)
    ]
    if foreign:
        _print_skipped(foreign)
    planned = _reduce(store, bytes_limit, max_items, age_limit, dry_run=True)
    total = sum(len(f.entries) for f in store.functions.values())
    planned_bytes = sum(size for _, size in planned)
    if not planned:
        print(f"Nothing to remove: the {total} entries of {store.root} fit the limits.")
        return 0
    what = f"{len(planned)} of {total} entries ({format_size(planned_bytes)})"
    if dry_run:
        print(f"Would remove {what}:")
        for name, size in planned:
            print(f"  {name}  {format_size(size)}")
        return 0
    confirm(f"Remove {what} from {store.root}?", assume_yes)
    removed = _reduce(store, bytes_limit, max_items, age_limit, dry_run=False)
    freed = sum(size for _, size in removed)
    print(f"Removed {len(removed)} entries ({format_size(freed)}, {freed} bytes).")
    return 0


def _reduce(
    store: CacheStore,
    bytes_limit: int | None,
    max_items: int | None,
    age_limit: datetime.timedelta | None,
    dry_run: bool,
) -> list[tuple[str, int]]:
    """``Memory.reduce_size`` on the store: the entries removed (or that would be), as
    ``(path relative to the store root, size)``."""
    if store.client is not None:
        from joblib_rs.cli._remote import prune_remote

        age = None if age_limit is None else age_limit.total_seconds()
        return prune_remote(store, bytes_limit, max_items, age, dry_run)
    items = reduce_store(store.root, bytes_limit, max_items, age_limit, dry_run=dry_run)
    return [(os.path.relpath(i.path, store.root), i.size) for i in items]


def run_clear(location: str, func: str | None, assume_yes: bool) -> int:
    """``cache clear``: remove every entry, or one function's folder."""
    store = find_store(location)
    if func is None:
        funcs = list(store.functions.values())
        count = sum(len(f.entries) for f in funcs)
        size = sum(f.size for f in funcs)
        confirm(
            f"Remove the whole cache {store.root} ({len(funcs)} functions, {count} entries, "
            f"{format_size(size)})?",
            assume_yes,
        )
        # What Memory.clear() does: what the store created goes, anything else stays.
        if store.client is not None:
            from joblib_rs.cli._remote import clear_remote

            n_entries, skipped = clear_remote(store, None)
            n_funcs = len(funcs)
        else:
            n_funcs, n_entries, skipped = _core.store_clear(store.root)
        print(f"Removed {n_funcs} functions, {n_entries} entries ({format_size(size)}).")
        _print_skipped(skipped)
        return 0
    target = store.match(func)
    confirm(
        f"Remove function {target.name} ({len(target.entries)} entries, "
        f"{format_size(target.size)})?",
        assume_yes,
    )
    # What MemorizedFunc.clear() does: the entries it created are renamed aside and removed.
    if store.client is not None:
        from joblib_rs.cli._remote import clear_remote

        n_entries, skipped = clear_remote(store, target)
    else:
        _, n_entries, skipped = _core.store_remove(target.path)
    print(f"Removed {target.name}: {n_entries} entries ({format_size(target.size)}).")
    _print_skipped(skipped)
    return 0


def _print_skipped(skipped: list[str]) -> None:
    """Name what a clear left in place because the cache did not create it."""
    if skipped:
        print(f"Skipped {len(skipped)} item(s) the cache did not create:")
        for path in sorted(skipped):
            print(f"  {path}")
