#!/usr/bin/env python
"""The parallel engine's speed targets, side by side in one run: joblib-rs, joblib, the
standard library's ``multiprocessing.Pool`` (and mpire when installed).

Usage:
    python benchmarks/bench_targets.py [--repeat N] [--only NAME] [--quick]

Every peer runs each workload ``repeat`` times (at least 5 for the targets), alternating
peers, with its workers warm (a first call is made and not timed, as a warm
``multiprocessing.Pool`` is what ``Pool.map`` measures); the table shows medians and the
ratios the targets are stated in. The first-call latency target is measured separately, in
fresh interpreters (see ``_first_call``). Compare ratios, never absolute times across runs:
this machine is shared.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import numpy as np

N_TINY = 100_000
BIG_BYTES = 50 * 1024 * 1024


def _big(i: int) -> Any:
    return np.full(BIG_BYTES // 8, float(i))


class Peer:
    """One library: how it maps a function over inputs with 2 workers."""

    name = ""

    def map(self, func: Callable[[Any], Any], inputs: Any) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JoblibLike(Peer):
    def __init__(self, module: Any, name: str) -> None:
        self.module = module
        self.name = name

    def map(self, func: Callable[[Any], Any], inputs: Any) -> list[Any]:
        # A new Parallel per call, as user code does; the worker pool stays warm.
        delayed = self.module.delayed(func)
        return self.module.Parallel(n_jobs=2)(delayed(x) for x in inputs)


class StdlibPool(Peer):
    name = "Pool.map"

    def __init__(self) -> None:
        self.pool = multiprocessing.get_context("spawn").Pool(2)

    def map(self, func: Callable[[Any], Any], inputs: Any) -> list[Any]:
        return self.pool.map(func, inputs)

    def close(self) -> None:
        self.pool.terminate()


class Mpire(Peer):
    name = "mpire"

    def __init__(self) -> None:
        from mpire import WorkerPool

        self.pool = WorkerPool(n_jobs=2, keep_alive=True)

    def map(self, func: Callable[[Any], Any], inputs: Any) -> list[Any]:
        return self.pool.map(func, inputs)

    def close(self) -> None:
        self.pool.terminate()


def _peers() -> list[Peer]:
    import joblib

    import joblib_rs

    peers: list[Peer] = [
        JoblibLike(joblib_rs, "joblib-rs"),
        JoblibLike(joblib, "joblib"),
        StdlibPool(),
    ]
    try:
        peers.append(Mpire())
    except ImportError:
        pass
    return peers


WORKLOADS: dict[str, tuple[Callable[[Any], Any], Callable[[int], Any], int]] = {
    # name: (function, inputs(n), n)
    "100k tiny tasks, list": (math.sqrt, lambda n: list(range(n)), N_TINY),
    "100k tiny tasks, generator": (math.sqrt, lambda n: (i for i in range(n)), N_TINY),
    "warm 10-task call": (math.sqrt, lambda n: list(range(n)), 10),
    "20 tasks returning 50 MB": (_big, lambda n: list(range(n)), 20),
}


def _measure(peer: Peer, workload: str, scale: float) -> float:
    func, inputs, n = WORKLOADS[workload]
    n = max(int(n * scale), 10) if n > 20 else n
    start = time.perf_counter()
    out = peer.map(func, inputs(n))
    elapsed = time.perf_counter() - start
    assert len(out) == n
    if workload.startswith("100k"):
        assert out[-1] == math.sqrt(n - 1), "results out of order"
    del out
    return elapsed


def _first_call(repeat: int) -> dict[str, float]:
    """Median time of the first ``Parallel(n_jobs=2)`` call in a fresh interpreter that has
    imported numpy, running a function of the user's own module (imports not timed)."""
    script = textwrap.dedent(
        """
        import sys, time, types
        import numpy
        import {module} as lib

        user = types.ModuleType("user_module")
        exec("def work(x):\\n    return x * 2\\n", user.__dict__)
        user.work.__module__ = "__main__"  # a script's function: travels by value
        start = time.perf_counter()
        out = lib.Parallel(n_jobs=2)(lib.delayed(user.work)(i) for i in range(10))
        print(time.perf_counter() - start)
        assert out == [2 * i for i in range(10)]
        """
    )
    medians = {}
    for name, module in (("joblib-rs", "joblib_rs"), ("joblib", "joblib")):
        times = []
        for _ in range(repeat):
            out = subprocess.run(
                [sys.executable, "-c", script.format(module=module)],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
            times.append(float(out.stdout.strip().splitlines()[-1]))
        medians[name] = statistics.median(times)
    return medians


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement (median)")
    parser.add_argument("--only", help="run only the workloads whose name contains this")
    parser.add_argument("--quick", action="store_true", help="10x fewer tiny tasks")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    peers = _peers()
    names = [w for w in WORKLOADS if not args.only or args.only in w]
    try:
        for peer in peers:  # warm every pool (and the batch sizes) before timing
            for workload in names:
                if not workload.startswith("20 tasks"):
                    _measure(peer, workload, scale)
        print(f"{'workload':<30}" + "".join(f"{p.name:>14}" for p in peers) + "   ratios")
        for workload in names:
            times: dict[str, list[float]] = {p.name: [] for p in peers}
            inner = 20 if workload.startswith("warm") else 1
            for _ in range(args.repeat):
                for peer in peers:
                    # Tiny calls are timed in groups of `inner` (per-call median of groups).
                    start = time.perf_counter()
                    for _ in range(inner):
                        _measure(peer, workload, scale)
                    times[peer.name].append((time.perf_counter() - start) / inner)
            med = {name: statistics.median(values) for name, values in times.items()}
            ours = med["joblib-rs"]
            ratios = (
                f"joblib/ours {med['joblib'] / ours:.1f}x, ours/Pool {ours / med['Pool.map']:.2f}x"
            )
            print(f"{workload:<30}" + "".join(f"{_fmt(med[p.name]):>14}" for p in peers), ratios)
    finally:
        for peer in peers:
            peer.close()
    if not args.only or "first" in args.only:
        first = _first_call(max(args.repeat, 5))
        print(
            f"{'first call (fresh, numpy)':<30}{_fmt(first['joblib-rs']):>14}"
            f"{_fmt(first['joblib']):>14}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
