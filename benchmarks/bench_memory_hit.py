"""Memory cache hits, joblib and joblib-rs side by side in one process (issues 14 and 18).

    python benchmarks/bench_memory_hit.py [--quick] [--repeat 7] [--json out.json]

Two workloads, each timed alternately on both libraries so that load on a shared machine
hits them alike; the figure is the median:

- a hit of ``add(1)`` (small arguments, small result): median per call over batches, wall
  and CPU time (targets: <= 7 us, issue 18; <= 20 us, issue 14);
- a hit of ``double(big)`` with a 100 MB array argument and result under ``mmap_mode='r'``:
  median of ``--repeat`` calls (target: >= 10x faster than joblib, issue 14). The first hit
  of each library is left out: joblib-rs verifies a mapped entry's checksums once per file
  version and process (``docs/memory.md``), which that hit pays.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import joblib_rs

from _common import Row, parser, print_table, write_json

try:
    import joblib
except ImportError:  # the comparison column stays empty
    joblib = None


def add(x, y=2):
    return x + y


def double(a):
    return a * 2.0


def alternate(fns: dict[str, Callable[[], Any]], calls: int, batches: int) -> dict[str, Any]:
    """Per function: median over ``batches`` of the wall and CPU time per call of a batch of
    ``calls`` calls, the batches of the functions interleaved."""
    wall: dict[str, list[float]] = {key: [] for key in fns}
    cpu: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(batches):
        for key, fn in fns.items():
            fn()
            w, c = time.perf_counter(), time.process_time()
            for _ in range(calls):
                fn()
            cpu[key].append((time.process_time() - c) / calls)
            wall[key].append((time.perf_counter() - w) / calls)
    return {key: (statistics.median(wall[key]), statistics.median(cpu[key])) for key in fns}


def main() -> None:
    args = parser(__doc__).parse_args()
    scale = 10 if args.quick else 1
    repeat = max(args.repeat, 5)
    root = tempfile.mkdtemp(prefix="bench-memory-hit-")
    modules: dict[str, Any] = {"rs": joblib_rs}
    if joblib is not None:
        modules["jl"] = joblib
    rows = []
    try:
        small = {
            key: module.Memory(f"{root}/{key}-small", verbose=0).cache(add)
            for key, module in modules.items()
        }
        hit = alternate({k: (lambda c=c: c(1)) for k, c in small.items()}, 5000 // scale, 21)
        jl = hit.get("jl")
        rows.append(Row("hit, small args (wall)", jl and jl[0], hit["rs"][0], "<= 7 us"))
        rows.append(Row("hit, small args (CPU)", jl and jl[1], hit["rs"][1], "<= 7 us"))

        big = np.random.default_rng(0).random(100_000_000 // 8 // scale)
        cached = {
            key: module.Memory(f"{root}/{key}-big", mmap_mode="r", verbose=0).cache(double)
            for key, module in modules.items()
        }
        for c in cached.values():
            c(big)  # miss: computes and stores
            c(big)  # first hit (verifies a mapped entry once in joblib-rs)
        times: dict[str, list[float]] = {key: [] for key in cached}
        for _ in range(repeat):
            for key, c in cached.items():
                start = time.perf_counter()
                out = c(big)
                times[key].append(time.perf_counter() - start)
                del out
        med = {key: statistics.median(v) for key, v in times.items()}
        label = f"{big.nbytes // 1_000_000} MB"
        rows.append(Row(f"hit, {label} array, mmap_mode='r'", med.get("jl"), med["rs"], ">= 10x"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(f"Memory hits (median; load average {os.getloadavg()[0]:.2f})", rows)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
