"""Loads hostile pickles under an audit hook, in a fresh interpreter (see test_security.py).

Usage: ``python security_child.py WORKDIR CASE [CASE ...]`` (or ``--all``). For each
case, each carrier and each protocol 0-5, the file is written first, then loaded with the
case's ``allowed`` inside an audit window; one JSON line per load reports what ``load``
raised, every audit event of interest seen during it, and whether the process was
tampered with.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hostile_pickles import CARRIERS, CASES, PROTOCOLS, make

import joblib_rs

#: Audit events that mean the file ran code or touched the system.
WATCHED = (
    "os.system",
    "subprocess.Popen",
    "exec",
    "compile",
    "import",
    "open",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.remove",
    "os.rename",
    "os.truncate",
    "os.chmod",
    "os.kill",
    "socket.",
    "ctypes.",
    "builtins.input",
    "shutil.",
    "sys.settrace",
    "sys.setprofile",
    "object.__setattr__",
    "object.__delattr__",
)

_window: dict[str, Any] = {"on": False, "path": None, "events": []}


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _window["on"] or not event.startswith(WATCHED):
        return
    if (
        event == "open"
        and args
        and isinstance(args[0], (str, bytes))
        and os.fsdecode(args[0]) == _window["path"]
        and args[1] in ("r", "rb")
    ):
        return  # load opening the very file it was given
    _window["events"].append([event, repr(args)[:200]])


def _fingerprint() -> tuple[Any, ...]:
    return (
        collections.Counter.most_common,
        collections.OrderedDict.__init__,
        np.dtype("f8").byteorder,
        np.dtype("f8").fields,
        np.float64.__new__,
    )


class _SystemTrue:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


def main() -> None:
    work = Path(sys.argv[1])
    target = str(work / "pwned")
    # Warm every lazy import of every carrier's load path outside the audit window.
    for carrier, write in CARRIERS.items():
        honest = work / f"honest-{carrier}"
        write(honest, pickle.dumps({"a": np.arange(3), "b": {1, 2}}, protocol=5))
        joblib_rs.load(honest, allowed="safe")
    sys.addaudithook(_hook)
    before = _fingerprint()
    if sys.argv[2:] == ["--control"]:
        # The harness's own check: an unrestricted load of os.system('true') is seen.
        path = work / "control"
        CARRIERS["container-raw"](path, pickle.dumps(_SystemTrue()))
        _window.update(on=True, path=str(path), events=[])
        joblib_rs.load(path)
        _window["on"] = False
        print(json.dumps({"events": _window["events"]}))
        return
    cases = list(CASES) if sys.argv[2:] == ["--all"] else sys.argv[2:]
    for case in cases:
        _, allowed = CASES[case]
        for proto in PROTOCOLS:
            for carrier, write in CARRIERS.items():
                path = work / f"case-{carrier}-{proto}"
                write(path, make(case, proto, target))
                _window.update(on=True, path=str(path), events=[])
                try:
                    joblib_rs.load(path, allowed=allowed)
                    raised = None
                except Exception as exc:  # the report says which; the test judges
                    raised = [type(exc).__name__, str(exc)[:300]]
                finally:
                    _window["on"] = False
                report = {
                    "case": case,
                    "proto": proto,
                    "carrier": carrier,
                    "raised": raised,
                    "events": _window["events"],
                    "tampered": _fingerprint() != before,
                    "target_exists": os.path.exists(target),
                }
                print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
