"""Side-by-side timings of joblib and joblib_rs dump/load on the workloads of issue 3.

Run: ``python benchmarks/bench_persist.py`` (quick sizes, well under 2 minutes on 2 cores)
or ``--full`` for the issue's sizes (512 MB compressed, 1 GiB raw). Both libraries run in the
same process, alternately, on the same data and folder; compare the ratios, not absolute
times across machines or sessions.
"""

from __future__ import annotations

import argparse
import gc
import json
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


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def median_of(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compressible_array(nbytes: int) -> np.ndarray:
    """Runs of 8 equal increasing float64 values, as ../shared/bench (joblib zlib-3: ~23x)."""
    n = nbytes // 8
    return np.repeat(np.arange((n + 7) // 8, dtype=np.float64), 8)[:n]


def workloads(full: bool) -> list[tuple[str, Any, Any, int, int]]:
    """(name, value, compress, dump repeats, load repeats): best-of-n, fewer where joblib
    takes many seconds."""
    mb = 1 << 20
    big = 512 if full else 64
    raw_mb = 1024 if full else 256
    n_tuples = 1_000_000
    random = np.random.default_rng(1).random(big * mb // 8)
    compressible = compressible_array(big * mb)
    return [
        (f"random float64 {big} MB, compress=3", random, 3, 1, 3),
        (f"compressible float64 {big} MB, compress=3", compressible, 3, 3, 3),
        (f"random float64 {big} MB, compress=('lz4', 3)", random, ("lz4", 3), 1, 3),
        (f"compressible float64 {big} MB, compress=('lz4', 3)", compressible, ("lz4", 3), 3, 3),
        (
            f"list of {n_tuples:,} small tuples",
            [(i, i * 0.5, str(i)) for i in range(n_tuples)],
            0,
            1,
            2,
        ),
        (
            f"raw float64 array {raw_mb} MB",
            np.random.default_rng(0).random(raw_mb * mb // 8),
            0,
            3,
            3,
        ),
    ]


def run(full: bool, folder: Path) -> list[dict[str, Any]]:
    rows = []
    for name, value, compress, dump_repeat, load_repeat in workloads(full):
        row: dict[str, Any] = {"workload": name}
        for lib_name, lib in (("joblib", joblib), ("joblib_rs", joblib_rs)):
            path = folder / f"{lib_name}.bin"

            def do_dump(
                lib: Any = lib, path: Path = path, value: Any = value, compress: Any = compress
            ) -> None:
                lib.dump(value, path, compress=compress)

            def do_load(lib: Any = lib, path: Path = path) -> None:
                lib.load(path)

            row[f"{lib_name} dump s"] = best_of(dump_repeat, do_dump)
            row[f"{lib_name} size MB"] = path.stat().st_size / 2**20
            row[f"{lib_name} load s"] = best_of(load_repeat, do_load)
            if compress == 0 and isinstance(value, np.ndarray):

                def do_mmap(lib: Any = lib, path: Path = path) -> None:
                    lib.load(path, mmap_mode="r")

                do_mmap()
                row[f"{lib_name} mmap load ms"] = median_of(21, do_mmap) * 1e3
                mapped = lib.load(path, mmap_mode="r")
                row[f"{lib_name} mmap sum s"] = best_of(
                    load_repeat, lambda m=mapped: float(np.sum(m))
                )
                del mapped
            path.unlink()
        row["dump speedup"] = row["joblib dump s"] / row["joblib_rs dump s"]
        row["load speedup"] = row["joblib load s"] / row["joblib_rs load s"]
        rows.append(row)
        print_row(row)
        del value
    return rows


def print_row(row: dict[str, Any]) -> None:
    print(f"\n{row['workload']}")
    for op in ("dump", "load"):
        jl, rs = row[f"joblib {op} s"], row[f"joblib_rs {op} s"]
        print(f"  {op}  joblib {jl:8.3f} s   joblib_rs {rs:8.3f} s   {jl / rs:5.1f}x faster")
    jl, rs = row["joblib size MB"], row["joblib_rs size MB"]
    print(f"  size  joblib {jl:8.1f} MB  joblib_rs {rs:8.1f} MB")
    if "joblib mmap load ms" in row:
        print(
            f"  mmap  joblib {row['joblib mmap load ms']:8.3f} ms  "
            f"joblib_rs {row['joblib_rs mmap load ms']:8.3f} ms"
        )
        print(
            f"  sum over the map  joblib {row['joblib mmap sum s']:8.3f} s  "
            f"joblib_rs {row['joblib_rs mmap sum s']:8.3f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="the issue's sizes (slow)")
    parser.add_argument("--quick", action="store_true", help="the default sizes (for run.py)")
    parser.add_argument("--folder", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    versions = f"joblib {joblib.__version__}  joblib_rs {joblib_rs.__version__}"
    print(f"{versions}  cores {os.cpu_count()}")
    # On a VM, the first touch of memory the guest never used is very slow (seconds per GB)
    # and would be charged to whichever library runs first: touch it once up front.
    warm = np.ones((3 << 30) if args.full else (1 << 30), dtype=np.uint8)
    del warm
    folder = Path(tempfile.mkdtemp(prefix="bench_persist_", dir=args.folder))
    try:
        rows = run(args.full, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
