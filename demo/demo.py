"""The joblib-rs demo: what the package does today, timed against joblib when it is installed.

Run with ``make demo``. It grows with each capability into the full "cached, parallel
pipeline" demo; today it shows ``hash`` (the key of every cache), ``Parallel`` on the Rust
process pool with shared-memory arrays, and ``dump``/``load``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import joblib_rs

try:
    import joblib
except ImportError:
    joblib = None


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    print(f"joblib-rs {joblib_rs.__version__}\n")
    rng = np.random.default_rng(0)
    features = rng.random((2000, 8192))  # 128 MB of float64
    dataset = {
        "features": features,
        "labels": rng.integers(0, 10, size=2000),
        "meta": [{"id": i, "source": f"sensor-{i % 7}", "gain": i * 0.01} for i in range(50_000)],
        "params": {"lr": 0.01, "layers": (128, 64), "seed": 0},
    }

    print("1. hash identifies content, canonically")
    print(f"   hash(dataset)                    = {joblib_rs.hash(dataset)}")
    reordered = {k: dataset[k] for k in reversed(list(dataset))}
    print(f"   same dict, other key order       = {joblib_rs.hash(reordered)}")
    print(f"   Fortran-ordered copy of features = "
          f"{joblib_rs.hash(np.asfortranarray(features[:500])) == joblib_rs.hash(features[:500])}"
          " (equal to the C-ordered one)")
    tweaked = features.copy()
    tweaked[1234, 42] += 1e-12
    print(f"   one element changed by 1e-12     -> differs: "
          f"{joblib_rs.hash(tweaked) != joblib_rs.hash(features)}\n")

    print("2. speed, side by side on the same objects")
    rows = [("128 MB array", features), ("50k small dicts", dataset["meta"]),
            ("whole dataset", dataset)]
    print(f"   {'object':<18} {'joblib-rs':>10} {'joblib':>10} {'speed-up':>9}")
    for name, obj in rows:
        ours, _ = timed(lambda obj=obj: joblib_rs.hash(obj))
        if joblib is not None:
            theirs, _ = timed(lambda obj=obj: joblib.hash(obj))
            speed_up = theirs / ours
            print(f"   {name:<18} {ours * 1e3:>8.1f}ms {theirs * 1e3:>8.1f}ms {speed_up:>8.1f}x")
        else:
            print(f"   {name:<18} {ours * 1e3:>8.1f}ms {'-':>10} {'-':>9}")

    print()
    parallel_section(features)
    persistence_section(features)


def block_features(block: np.ndarray) -> np.ndarray:
    """Per-column statistics of one block of rows (a stand-in for feature extraction)."""
    return np.stack([block.mean(axis=0), block.std(axis=0), np.abs(block).max(axis=0)])


def normalised(block: np.ndarray) -> np.ndarray:
    return (block - block.mean()) / block.std()


def parallel_section(features: np.ndarray) -> None:
    print("3. Parallel on the Rust process pool (n_jobs=2)")
    blocks = np.array_split(features, 16)
    for name, func in [("16 blocks -> stats", block_features), ("16 blocks -> 16 MB each",
                                                                normalised)]:
        ours, out = timed(lambda func=func: joblib_rs.Parallel(n_jobs=2)(
            joblib_rs.delayed(func)(b) for b in blocks))
        line = f"   {name:<24} joblib-rs {ours:6.2f}s"
        if joblib is not None:
            theirs, ref = timed(lambda func=func: joblib.Parallel(n_jobs=2)(
                joblib.delayed(func)(b) for b in blocks))
            same = all(np.allclose(a, b) for a, b in zip(out, ref, strict=True))
            line += f"  joblib {theirs:6.2f}s  speed-up {theirs / ours:5.1f}x  same: {same}"
        print(line)
    print("   (arguments and results above 1 MB travel through shared memory, not pipes)\n")


def persistence_section(features: np.ndarray) -> None:
    print("4. dump / load (128 MB array; compressed: a 32 MB slice)")
    cases = [("raw", "f.jrs", features, {}),
             ("compress=3", "f.z", features[:500], {"compress": 3})]
    with tempfile.TemporaryDirectory() as folder:
        for label, name, data, kwargs in cases:
            path = os.path.join(folder, name)
            dump_s, _ = timed(lambda path=path, data=data, kwargs=kwargs: joblib_rs.dump(
                data, path, **kwargs))
            load_s, back = timed(lambda path=path: joblib_rs.load(path))
            size = os.path.getsize(path) / 1e6
            print(f"   {label:<11} dump {dump_s:6.2f}s  load {load_s:6.2f}s  {size:7.1f} MB  "
                  f"round trip exact: {np.array_equal(back, data)}")
        mm_s, mm = timed(lambda: joblib_rs.load(os.path.join(folder, "f.jrs"), mmap_mode="r"))
        print(f"   load(mmap_mode='r') {mm_s * 1e3:.2f} ms -> {type(mm).__name__} mapped in place")
        del mm


if __name__ == "__main__":
    main()
