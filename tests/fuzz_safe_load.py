"""Seeded fuzzing of ``load(..., allowed="safe")``: random and mutated pickles.

Usage: ``python fuzz_safe_load.py [--examples N] [--seed S]``. Inputs are mutations of
honest pickles (every protocol, the data types the safe set builds, numpy arrays and
dtypes) and of the hostile corpus, plus random opcode soups. Each is decoded by the Rust
unpickler under the safe policy, and one in eight goes through a real file and
``joblib_rs.load``. The run passes when every input either loaded or raised
``pickle.UnpicklingError`` (``CorruptFileError`` included), no audit event of
``security_child.WATCHED`` happened, and the process state is unchanged. The last line
printed is a JSON summary. ``make fuzz`` runs a longer campaign.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import decimal
import fractions
import json
import pickle
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hostile_pickles import CASES, PROTOCOLS, make
from security_child import WATCHED, _fingerprint

import joblib_rs
from joblib_rs import _restricted

_seen: list[str] = []
_on = [False]


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _on[0] and event.startswith(WATCHED):
        _seen.append(event)


def _seeds() -> list[bytes]:
    honest = [
        [1, -2, 2**80, 1.5, "é\ud800", b"x\x00", bytearray(b"ab"), None, True],
        {"a": (1, 2), "b": {3, 4}, "c": frozenset([5]), 7: [[], {}]},
        collections.OrderedDict(a=1),
        collections.Counter("abca"),
        collections.defaultdict(list, k=[1]),
        collections.deque([1, 2], maxlen=4),
        datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        datetime.timedelta(3, 4, 5),
        decimal.Decimal("1.25"),
        fractions.Fraction(2, 7),
        range(1, 9, 2),
        slice(1, None, 2),
        complex(1, -1),
        np.arange(12.0).reshape(3, 4),
        np.asfortranarray(np.ones((2, 3), dtype=">i4")),
        np.zeros(2, dtype=[("a", "<i8"), ("b", "U3"), ("c", ("f4", (2,)))]),
        np.array(["2020-01-01"], dtype="M8[D]"),
        np.float32(2.5),
        np.dtype("U7"),
    ]
    out = [pickle.dumps(v, protocol=p) for v in honest for p in PROTOCOLS]
    out += [make(c, p, "/nonexistent/x") for c in CASES for p in (0, 2, 5)]
    return out


_OPCODES = [
    bytes([c]) for c in b"()0123NJKMLFGSTUVXBCabdeghijlopqrstu}]." + bytes(range(0x80, 0x99))
]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if kind == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif kind == 1:
            buf[pos:pos] = rng.choice(_OPCODES)
        elif kind == 2 and buf:
            del buf[pos : pos + rng.randint(1, 8)]
        elif kind == 3:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif kind == 4 and buf:
            n = rng.randint(1, 16)
            buf[pos:pos] = buf[pos : pos + n]  # duplicate a run of opcodes
        else:
            buf = buf[:pos]
    return bytes(buf)


def _soup(rng: random.Random) -> bytes:
    return b"".join(rng.choice(_OPCODES) + rng.randbytes(rng.randint(0, 3)) for _ in range(40))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    rng = random.Random(opts.seed)
    seeds = _seeds()
    rules = _restricted.rules_for("safe")
    assert rules is not None
    work = Path(tempfile.mkdtemp(prefix="jrs-fuzz-"))
    # Warm lazy imports (codecs included) outside the audit window.
    joblib_rs.dump([1], work / "warm")
    joblib_rs.load(work / "warm", allowed="safe")
    from joblib_rs.compressor import _COMPRESSORS

    for comp in _COMPRESSORS.values():
        if comp.prefix:
            (work / "warm").write_bytes(comp.prefix + b"\x00" * 64)
            try:
                joblib_rs.load(work / "warm", allowed="safe")
            except Exception:
                pass
    sys.addaudithook(_hook)
    before = _fingerprint()
    bad: list[str] = []
    outcomes: collections.Counter[str] = collections.Counter()
    for n in range(opts.examples):
        data = _soup(rng) if n % 10 == 0 else _mutate(rng, rng.choice(seeds))
        via_file = n % 8 == 0
        _seen.clear()
        _on[0] = True
        try:
            if via_file:
                path = work / "f"
                path.write_bytes(data)
                joblib_rs.load(path, allowed="safe")
            else:
                _restricted.unpickle(data, _restricted.Loader(rules))
            outcome = "loaded"
        except pickle.UnpicklingError as exc:
            outcome = type(exc).__name__
        except Exception as exc:  # anything else is a finding
            outcome = f"{type(exc).__name__}: {str(exc)[:120]}"
            bad.append(f"#{n} {outcome} input={data[:80]!r}")
        finally:
            _on[0] = False
        events = [e for e in _seen if not (via_file and e == "open")]
        if events:
            bad.append(f"#{n} audit events {events} input={data[:80]!r}")
        outcomes[outcome.split(":")[0]] += 1
    if _fingerprint() != before:
        bad.append("process state changed")
    print(json.dumps({"examples": opts.examples, "outcomes": outcomes, "bad": bad[:20]}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
