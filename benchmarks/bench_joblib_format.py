"""Side-by-side timings for issue 17: ``dump(..., format="joblib")`` against ``joblib.dump``,
``('lz4', 3)`` sizes, and a raw array ``dump`` against ``numpy.save`` (the page-cache limit).

Run: ``python benchmarks/bench_joblib_format.py`` (64 MB compressed workloads, 1 GiB raw) or
``--full`` (512 MB compressed). Every writer runs in this process, in alternating order, on the
same data and folder; medians of ``--repeat`` runs (default 5). Compare ratios, not absolute
times across machines.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np

import joblib_rs


def compressible_array(nbytes: int) -> np.ndarray:
    """Runs of 8 equal increasing float64 values, as bench_persist.py."""
    n = nbytes // 8
    return np.repeat(np.arange((n + 7) // 8, dtype=np.float64), 8)[:n]


def np_save(path: Path, value: np.ndarray) -> None:
    """``numpy.save`` into exactly ``path`` (given a name, it would add ``.npy``)."""
    with open(path, "wb") as f:
        np.save(f, value)


def race(
    writers: dict[str, Callable[[Path], Any]], folder: Path, repeat: int
) -> dict[str, tuple[float, int]]:
    """Median seconds and file size of each writer, runs interleaved (round-robin, the order
    rotated each round so no writer always goes first)."""
    times: dict[str, list[float]] = {name: [] for name in writers}
    sizes: dict[str, int] = {}
    names = list(writers)
    for r in range(repeat):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            path = folder / f"{name.replace(' ', '_').replace('/', '_')}.bin"
            gc.collect()
            t0 = time.perf_counter()
            writers[name](path)
            times[name].append(time.perf_counter() - t0)
            sizes[name] = path.stat().st_size
            path.unlink()
    return {name: (statistics.median(times[name]), sizes[name]) for name in names}


def report(title: str, rows: dict[str, tuple[float, int]], reference: str) -> None:
    print(f"\n{title}")
    ref_t, ref_size = rows[reference]
    for name, (t, size) in rows.items():
        print(
            f"  {name:<34} {t * 1e3:9.1f} ms  {t / ref_t:5.2f}x {reference}'s time"
            f"   {size / 2**20:9.1f} MB  {size / ref_size:5.3f}x size"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="512 MB compressed workloads")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated: joblib,lz4,raw")
    parser.add_argument("--folder", default=None)
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    mb = 1 << 20
    big = (512 if args.full else 64) * mb
    versions = f"joblib {joblib.__version__}  joblib_rs {joblib_rs.__version__}"
    print(f"{versions}  cores {os.cpu_count()}")
    warm = np.ones(2 << 30, dtype=np.uint8)  # first touch of guest memory is slow on VMs
    del warm
    folder = Path(tempfile.mkdtemp(prefix="bench_jf_", dir=args.folder))
    try:
        if not only or "joblib" in only:
            random = np.random.default_rng(1).random(big // 8)
            compressible = compressible_array(big)
            tuples = [(i, i * 0.5, str(i)) for i in range(1_000_000)]
            raw = np.random.default_rng(0).random(256 * mb // 8)
            for title, value, compress in (
                (f"random float64 {big // mb} MB, compress=3", random, 3),
                (f"compressible float64 {big // mb} MB, compress=3", compressible, 3),
                (f"random float64 {big // mb} MB, ('lz4', 3)", random, ("lz4", 3)),
                (f"compressible float64 {big // mb} MB, ('lz4', 3)", compressible, ("lz4", 3)),
                ("list of 1,000,000 small tuples", tuples, 0),
                ("raw float64 array 256 MB", raw, 0),
            ):
                rows = race(
                    {
                        "joblib.dump": lambda p, v=value, c=compress: joblib.dump(
                            v, p, compress=c
                        ),
                        "joblib_rs format='joblib'": lambda p, v=value, c=compress: joblib_rs.dump(
                            v, p, compress=c, format="joblib"
                        ),
                    },
                    folder,
                    args.repeat,
                )
                report(title, rows, "joblib.dump")
            del random, compressible, tuples, raw
        if not only or "lz4" in only:
            compressible = compressible_array(big)
            rows = race(
                {
                    "joblib.dump": lambda p: joblib.dump(compressible, p, compress=("lz4", 3)),
                    "joblib_rs (jrs)": lambda p: joblib_rs.dump(
                        compressible, p, compress=("lz4", 3)
                    ),
                },
                folder,
                args.repeat,
            )
            report(f"compressible float64 {big // mb} MB, ('lz4', 3)", rows, "joblib.dump")
            del compressible
        if not only or "raw" in only:
            raw = np.random.default_rng(0).random((1 << 30) // 8)
            rows = race(
                {
                    "np.save": lambda p: np_save(p, raw),
                    "joblib_rs.dump": lambda p: joblib_rs.dump(raw, p),
                    "joblib.dump": lambda p: joblib.dump(raw, p),
                    "joblib_rs.dump fsync=True": lambda p: joblib_rs.dump(raw, p, fsync=True),
                },
                folder,
                args.repeat,
            )
            report("raw float64 array 1 GiB, default settings", rows, "np.save")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
