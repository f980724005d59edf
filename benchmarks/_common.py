"""Shared helpers of the side-by-side benchmarks: timing, and the comparison table."""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    """One workload measured on joblib and on joblib-rs (best of ``repeat`` runs, seconds)."""

    name: str
    joblib: float | None
    joblib_rs: float
    target: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.joblib is None else self.joblib / self.joblib_rs


def best_time(fn: Callable[[], Any], repeat: int) -> float:
    """Minimum wall time of ``repeat`` calls of ``fn`` (garbage collected between calls)."""
    times = []
    for _ in range(max(1, repeat)):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print(f"{'workload':<36} {'joblib':>10} {'joblib-rs':>10} {'speed-up':>9}  target")
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.1f}x"
        print(
            f"{row.name:<36} {fmt_seconds(row.joblib):>10} {fmt_seconds(row.joblib_rs):>10} "
            f"{ratio:>9}  {row.target}"
        )


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="10x smaller sizes")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    return p


def write_json(path: str | None, rows: list[Row]) -> None:
    if path:
        with open(path, "w") as f:
            json.dump([asdict(r) | {"ratio": r.ratio} for r in rows], f, indent=2)


def median(values: list[float]) -> float:
    return statistics.median(values)
