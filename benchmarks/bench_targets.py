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
import os
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
    """One library: how it maps a function over inputs with 2 workers.

    ``prepare(func, data, mode)`` returns the zero-argument call that is timed; ``data`` is
    built before the timer starts. ``mode`` says how a joblib-like library gets its tasks:
    ``'list'`` (a list of ``delayed`` calls built inside the timed call), ``'generator'`` (a
    generator of them, consumed by ``Parallel``) or ``'prebuilt'`` (the list built before the
    timer: the engine alone). ``Pool.map`` gets ``data`` as it is in every mode.
    """

    name = ""

    def __init__(self, name: str, prepare: Callable[..., Callable[[], list[Any]]]) -> None:
        self.name = name
        self.prepare = prepare

    def close(self) -> None:
        """Stop the peer's workers."""


class JoblibLike(Peer):
    def __init__(self, module: Any, name: str) -> None:
        super().__init__(name, self._prepare)
        self.module = module

    def _prepare(self, func: Callable[[Any], Any], data: Any, mode: str) -> Callable[[], Any]:
        # A new Parallel per call, as user code does; the worker pool stays warm.
        delayed = self.module.delayed(func)
        parallel = self.module.Parallel
        if mode == "prebuilt":
            tasks = [delayed(x) for x in data]
            return lambda: parallel(n_jobs=2)(tasks)
        if mode == "list":
            return lambda: parallel(n_jobs=2)([delayed(x) for x in data])
        return lambda: parallel(n_jobs=2)(delayed(x) for x in data)


class StdlibPool(Peer):
    def __init__(self) -> None:
        super().__init__("Pool.map", self._prepare)
        self.pool = multiprocessing.get_context("spawn").Pool(2)

    def _prepare(self, func: Callable[[Any], Any], data: Any, mode: str) -> Callable[[], Any]:
        return lambda: self.pool.map(func, data)

    def close(self) -> None:
        self.pool.terminate()


class Mpire(Peer):
    def __init__(self) -> None:
        from mpire import WorkerPool

        super().__init__("mpire", self._prepare)
        self.pool = WorkerPool(n_jobs=2, keep_alive=True)

    def _prepare(self, func: Callable[[Any], Any], data: Any, mode: str) -> Callable[[], Any]:
        return lambda: self.pool.map(func, data)

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


WORKLOADS: dict[str, tuple[Callable[[Any], Any], Callable[[int], Any], int, str]] = {
    # name: (function, data(n), n, how joblib-like peers get their tasks). The targets:
    # `Parallel(n_jobs=2)(delayed(f)(x) for x in data)` with data a list, then a generator.
    "100k tiny tasks, list": (math.sqrt, lambda n: list(range(n)), N_TINY, "generator"),
    "100k tiny tasks, generator": (
        math.sqrt,
        lambda n: (i for i in range(n)),
        N_TINY,
        "generator",
    ),
    # Where the time goes: a list of delayed calls built in the timed call (the garbage
    # collector traverses the 100k live tuples), and the engine alone (tasks prebuilt).
    "100k tiny, list of delayed": (math.sqrt, lambda n: list(range(n)), N_TINY, "list"),
    "100k tiny, tasks prebuilt": (math.sqrt, lambda n: list(range(n)), N_TINY, "prebuilt"),
    "warm 10-task call": (math.sqrt, lambda n: list(range(n)), 10, "generator"),
    "20 tasks returning 50 MB": (_big, lambda n: list(range(n)), 20, "generator"),
}


def _measure(peer: Peer, workload: str, scale: float) -> tuple[float, float]:
    """Wall and CPU time (this process and its threads) of one run."""
    func, data, n, mode = WORKLOADS[workload]
    n = max(int(n * scale), 10) if n > 20 else n
    call = peer.prepare(func, data(n), mode)
    start, cpu = time.perf_counter(), time.process_time()
    out = call()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(out) == n
    if n > 20:
        assert out[-1] == math.sqrt(n - 1), "results out of order"
    del out
    return elapsed, cpu


def _creation_costs(repeat: int, scale: float) -> dict[str, float]:
    """Median time to build 100k tasks, the part of the tiny-task workloads ``Pool.map``
    does not have: joblib-rs's and joblib's ``delayed``, and plain ``(f, (x,), {})`` tuples
    (the least any ``delayed`` returning joblib's triples can cost)."""
    import joblib

    import joblib_rs

    n = max(int(N_TINY * scale), 10)
    ours, theirs, func = joblib_rs.delayed(math.sqrt), joblib.delayed(math.sqrt), math.sqrt
    makers: dict[str, Callable[[], Any]] = {
        "joblib-rs delayed": lambda: [ours(i) for i in range(n)],
        "joblib delayed": lambda: [theirs(i) for i in range(n)],
        "plain tuples": lambda: [(func, (i,), {}) for i in range(n)],
    }
    times: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(repeat):
        for name, make in makers.items():
            start = time.perf_counter()
            make()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


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
    repeat = max(args.repeat, 5)
    peers = _peers()
    names = [w for w in WORKLOADS if not args.only or args.only in w]
    print(f"load average {os.getloadavg()[0]:.1f}; medians of {repeat} alternating runs")
    try:
        for peer in peers:  # warm every pool (and the batch sizes) before timing
            for workload in names:
                if not workload.startswith("20 tasks"):
                    _measure(peer, workload, scale)
        print(f"{'workload':<30}" + "".join(f"{p.name:>14}" for p in peers) + "   ratios")
        for workload in names:
            times: dict[str, list[float]] = {p.name: [] for p in peers}
            cpu: dict[str, list[float]] = {p.name: [] for p in peers}
            inner = 20 if workload.startswith("warm") else 1
            for _ in range(repeat):
                for peer in peers:
                    # Tiny calls are timed in groups of `inner` (per-call median of groups).
                    wall = cpu_time = 0.0
                    for _ in range(inner):
                        one_wall, one_cpu = _measure(peer, workload, scale)
                        wall, cpu_time = wall + one_wall, cpu_time + one_cpu
                    times[peer.name].append(wall / inner)
                    cpu[peer.name].append(cpu_time / inner)
            med = {name: statistics.median(values) for name, values in times.items()}
            med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
            ours = med["joblib-rs"]
            ratios = (
                f"joblib/ours {med['joblib'] / ours:.1f}x, ours/Pool {ours / med['Pool.map']:.2f}x"
            )
            print(f"{workload:<30}" + "".join(f"{_fmt(med[p.name]):>14}" for p in peers), ratios)
            print(
                f"{'  (CPU of the calling process)':<30}"
                + "".join(f"{_fmt(med_cpu[p.name]):>14}" for p in peers)
            )
    finally:
        for peer in peers:
            peer.close()
    if not args.only or "tiny" in args.only:
        costs = _creation_costs(repeat, scale)
        print(
            "building the 100k tasks alone: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in costs.items())
        )
    if not args.only or "first" in args.only:
        first = _first_call(repeat)
        print(
            f"{'first call (fresh, numpy)':<30}{_fmt(first['joblib-rs']):>14}"
            f"{_fmt(first['joblib']):>14}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
