"""The joblib-rs demo: a cached, parallel signal-processing pipeline, run twice.

Run with ``make demo`` (or ``.venv/bin/python demo/demo.py`` once installed). The pipeline:

1. ``generate``  16 chunks of 256 noisy signals each (328 MB of float32, fixed seed), each
                 chunk cached by ``Memory`` and read back memory-mapped (``mmap_mode='r'``);
2. ``features``  per chunk, in ``Parallel(n_jobs=2)``: FFT band powers and windowed
                 statistics, cached per chunk (the cache key is the hash of the 20 MB chunk);
3. ``aggregate`` one feature matrix and target vector (cached);
4. ``fit``       a least-squares model predicting each signal's target (cached);
5. ``dump`` / ``load`` / ``load(mmap_mode='r')`` of the model and the features.

The pipeline runs twice against one cache folder: the first run computes and fills the cache,
the second finds every step there. The same code runs on joblib when it is installed (the
library is passed in as ``jl``), and the two are compared step by step.
"""

from __future__ import annotations

import inspect
import os
import sys
import tempfile
import time
from types import ModuleType
from typing import Any

import numpy as np

import joblib_rs

N_CHUNKS = 16
SIGNALS_PER_CHUNK = 256
SAMPLES = 20_000  # per signal: 16 x 256 x 20,000 float32 = 328 MB
BANDS = [(1, 200), (200, 800), (800, 2500), (2500, 6000), (6000, 10_001)]  # FFT bins
TONES = [90.0, 520.0, 1700.0, 4100.0]  # one tone (in FFT bins) inside each of the first bands
TRUE_WEIGHTS = np.array([3.0, -1.0, 0.5, 2.0])  # target = weights . (tone amplitudes squared)
STEPS = ["generate", "features", "aggregate", "fit", "dump", "load", "load(mmap)"]


def generate(seed: int, index: int) -> dict[str, np.ndarray]:
    """One chunk of signals: four tones with random amplitudes and phases, plus noise.

    Each signal's target is a weighted sum of its squared tone amplitudes, so the tone band
    powers that ``features`` measures predict it.
    """
    rng = np.random.default_rng([seed, index])
    t = np.arange(SAMPLES) / SAMPLES
    tones = np.asarray(TONES)[:, None]
    basis = np.concatenate([np.cos(2 * np.pi * tones * t), np.sin(2 * np.pi * tones * t)])
    amplitudes = rng.uniform(0.2, 1.5, size=(SIGNALS_PER_CHUNK, len(TONES)))
    phases = rng.uniform(0, 2 * np.pi, size=amplitudes.shape)
    coefficients = np.concatenate([amplitudes * np.cos(phases), -amplitudes * np.sin(phases)], 1)
    signals = rng.standard_normal((SIGNALS_PER_CHUNK, SAMPLES), dtype=np.float32)
    signals += (coefficients @ basis).astype(np.float32)
    target = (amplitudes**2) @ TRUE_WEIGHTS + rng.normal(0, 0.05, SIGNALS_PER_CHUNK)
    return {"signals": signals, "target": target}


def features(signals: np.ndarray, window: int = 500) -> np.ndarray:
    """One row per signal: the power in each FFT band, then statistics of its mean and
    standard deviation over consecutive ``window``-sample windows."""
    spectrum = np.abs(np.fft.rfft(signals, axis=1)) ** 2 / signals.shape[1]
    band_powers = [spectrum[:, lo:hi].sum(axis=1) for lo, hi in BANDS]
    n, samples = signals.shape
    windows = signals[:, : samples - samples % window].reshape(n, -1, window)
    means, stds = windows.mean(axis=2), windows.std(axis=2)
    stats = [stds.mean(axis=1), stds.max(axis=1), np.abs(means).max(axis=1)]
    return np.column_stack(band_powers + stats)


def aggregate(chunk_features: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, Any]:
    """Stack the per-chunk features and targets into one design matrix (standardised)."""
    x = np.concatenate(chunk_features)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    return {"X": (x - mean) / scale, "y": np.concatenate(targets), "mean": mean, "scale": scale}


def fit(data: dict[str, Any]) -> dict[str, Any]:
    """Least squares with an intercept; returns the coefficients and the R² on the data."""
    x = np.column_stack([np.ones(len(data["X"])), data["X"]])
    coef, *_ = np.linalg.lstsq(x, data["y"], rcond=None)
    residual = data["y"] - x @ coef
    r2 = 1 - residual.var() / data["y"].var()
    return {"coef": coef, "r2": float(r2), "mean": data["mean"], "scale": data["scale"]}


def run_pipeline(jl: ModuleType, cache_dir: str, out_dir: str) -> tuple[dict, dict]:
    """Run every step with library ``jl`` (joblib_rs or joblib); returns (timings, results)."""
    memory = jl.Memory(cache_dir, verbose=0)
    cached_generate = memory.cache(generate, mmap_mode="r")
    cached_features = memory.cache(features)
    cached_aggregate = memory.cache(aggregate)
    cached_fit = memory.cache(fit)
    # progress=True (a bar on stderr) is a joblib-rs addition; joblib only has verbose=.
    has_progress = "progress" in inspect.signature(jl.Parallel).parameters
    progress = {"progress": True} if has_progress else {}
    timings: dict[str, float] = {}

    def step(name: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = func(*args, **kwargs)
        timings[name] = time.perf_counter() - start
        return result

    chunks = step("generate", lambda: [cached_generate(2024, i) for i in range(N_CHUNKS)])
    chunk_features = step(
        "features",
        lambda: jl.Parallel(n_jobs=2, **progress)(
            [jl.delayed(cached_features)(chunk["signals"]) for chunk in chunks]
        ),
    )
    data = step("aggregate", cached_aggregate, chunk_features, [c["target"] for c in chunks])
    model = step("fit", cached_fit, data)
    path = os.path.join(out_dir, "model.jl")
    step("dump", jl.dump, {"model": model, "features": data["X"]}, path)
    loaded = step("load", jl.load, path)
    mapped = step("load(mmap)", jl.load, path, mmap_mode="r")
    np.testing.assert_array_equal(loaded["features"], data["X"])
    np.testing.assert_array_equal(mapped["features"], data["X"])
    return timings, {
        "features": data["X"],
        "coef": model["coef"],
        "r2": model["r2"],
        "mapped": type(mapped["features"]).__name__,
    }


def cold_and_warm(jl: ModuleType) -> tuple[list[dict], list[dict]]:
    """The pipeline twice against one fresh cache folder: (timings, results) of both runs."""
    with tempfile.TemporaryDirectory(prefix=f"{jl.__name__}-demo-") as folder:
        cache, out = os.path.join(folder, "cache"), os.path.join(folder, "out")
        os.makedirs(out)
        runs = [run_pipeline(jl, cache, out) for _ in ("cold", "warm")]
    return [t for t, _ in runs], [r for _, r in runs]


def check_same(a: dict, b: dict, what: str) -> None:
    """Assert two runs gave identical features and model, and say so."""
    np.testing.assert_array_equal(a["features"], b["features"])
    np.testing.assert_array_equal(a["coef"], b["coef"])
    print(f"  identical results: {what} (features {a['features'].shape}, model coefficients)")


def fmt(seconds: float) -> str:
    """A duration for the table: milliseconds below a second."""
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def print_table(ours: list[dict], theirs: list[dict] | None) -> None:
    """Per-step timings, cold and warm, with joblib's and the ratio when joblib ran."""
    header = f"  {'step':<12}{'cold':>10}{'warm':>10}"
    if theirs:
        header += f"{'joblib cold':>13}{'joblib warm':>13}{'ratio cold':>12}{'ratio warm':>12}"
    print(header)
    for name in [*STEPS, "total"]:
        ours_cw = [sum(t.values()) if name == "total" else t[name] for t in ours]
        line = f"  {name:<12}" + "".join(f"{fmt(s):>10}" for s in ours_cw)
        if theirs:
            theirs_cw = [sum(t.values()) if name == "total" else t[name] for t in theirs]
            line += "".join(f"{fmt(s):>13}" for s in theirs_cw)
            line += "".join(f"{j / r:>11.1f}x" for j, r in zip(theirs_cw, ours_cw, strict=True))
        print(line)


def main() -> None:
    try:
        import joblib
    except ImportError:
        joblib = None
    size = N_CHUNKS * SIGNALS_PER_CHUNK * SAMPLES * 4 / 1e6
    print(
        f"joblib-rs {joblib_rs.__version__}: {N_CHUNKS} chunks x {SIGNALS_PER_CHUNK} signals "
        f"x {SAMPLES} samples ({size:.0f} MB float32), pipeline run cold then warm\n"
    )
    # On a VM the first touch of memory the process never used is slow, and would be charged
    # to whichever library runs first: touch 1 GB once up front. Likewise numpy's linear
    # algebra starts its BLAS threads on first use.
    np.ones(1 << 30, dtype=np.uint8)
    np.linalg.lstsq(np.eye(4), np.ones(4), rcond=None)
    print("joblib-rs:", flush=True)
    ours, our_results = cold_and_warm(joblib_rs)
    print(
        f"  model R² = {our_results[0]['r2']:.4f}; load(mmap_mode='r') gave a "
        f"{our_results[0]['mapped']}"
    )
    check_same(*our_results, "cold run == warm run")
    theirs = None
    if joblib is not None:
        print(f"\njoblib {joblib.__version__} (same code, no progress bar):", flush=True)
        theirs, their_results = cold_and_warm(joblib)
        check_same(*their_results, "cold run == warm run")
        check_same(our_results[0], their_results[0], "joblib-rs == joblib")
    else:
        print("\n(joblib is not installed: no comparison)")
    print("\nSeconds per step (ratio = joblib time / joblib-rs time, higher is better):")
    print_table(ours, theirs)
    print("  (joblib-rs's dump to a path is atomic: a crash never leaves a torn file under its")
    print("   name; neither library flushes to disk by default: dump(..., fsync=True) does)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
