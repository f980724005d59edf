"""scikit-learn's ``GridSearchCV`` on joblib vs on joblib-rs through ``install()``, side by side.

``GridSearchCV(RandomForestClassifier(), 4-candidate grid, cv=3, n_jobs=2, verbose=3)`` on
2,000 samples (the target of issue 16: at least joblib's speed, median of 5). Each run is a
fresh interpreter, as a user's program is: the time is ``search.fit`` alone (imports and
data excluded; the process pool's start-up included, as a program pays it). Runs alternate
joblib / joblib-rs so that a change in the machine's load hits both alike; joblib-rs is
installed the way an unmodified program gets it, ``JOBLIB_RS_INSTALL=1`` (the
``joblib_rs_install.pth`` hook), and each run checks which library ran.

Reported per library: median wall time, median CPU time of the parent process (where the
libraries' dispatching, callbacks and verbose output run) and of the worker processes (from
``/proc``: start-up imports and the fits), and the median of the per-pair ratios
joblib / joblib-rs (> 1: joblib-rs faster). ``--profile`` prints where joblib-rs's
parent process spends its time in one extra run (cProfile, top functions by cumulative time).

Usage: ``python benchmarks/bench_sklearn_gridsearch.py [--repeat 5] [--samples 2000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

GRID = r"""
import contextlib, io, os, sys, time
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV


def worker_cpu():
    # CPU seconds of this process's descendants (the worker processes, alive between calls
    # in both libraries), from /proc; 0 where there is no /proc.
    if not os.path.isdir("/proc"):
        return 0.0
    ticks, table = os.sysconf("SC_CLK_TCK"), {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            continue
        table[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    total, todo = 0.0, [os.getpid()]
    while todo:
        parent = todo.pop()
        for pid, (ppid, seconds) in table.items():
            if ppid == parent:
                total += seconds
                todo.append(pid)
    return total


if __name__ == "__main__":
    n_samples, profile = int(sys.argv[1]), sys.argv[2] == "1"
    x, y = make_classification(n_samples=n_samples, n_features=20, random_state=0)
    search = GridSearchCV(RandomForestClassifier(random_state=0),
                          {"n_estimators": [20, 50], "max_depth": [4, 8]}, cv=3, n_jobs=2,
                          verbose=3)
    if profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    with contextlib.redirect_stdout(io.StringIO()):
        start, cpu, workers = time.perf_counter(), time.process_time(), worker_cpu()
        search.fit(x, y)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        workers = worker_cpu() - workers
    if profile:
        import pstats
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    import joblib
    print(elapsed, cpu, workers, round(search.best_score_, 6), joblib.Parallel.__module__)
"""

LIBRARIES = (("joblib", False), ("joblib-rs", True))


def _run(installed: bool, samples: int, profile: bool = False) -> tuple[float, float, float, str]:
    env = dict(os.environ)
    env.pop("JOBLIB_RS_INSTALL", None)
    if installed:
        env["JOBLIB_RS_INSTALL"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", GRID, str(samples), "1" if profile else "0"],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        raise SystemExit(f"the benchmark program failed:\n{proc.stderr[-3000:]}")
    if profile:
        print(proc.stderr)
    # Workers print verbose lines of their own: the measurement is the last line.
    elapsed, cpu, workers, score, module = proc.stdout.strip().splitlines()[-1].split()
    expected = "joblib_rs.parallel" if installed else "joblib.parallel"
    if module != expected:
        raise SystemExit(
            f"expected {expected} to run, got {module}: is joblib-rs installed with its "
            "joblib_rs_install.pth hook (a wheel install; `pip install -e` omits it)?"
        )
    return float(elapsed), float(cpu), float(workers), score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="profile one joblib-rs run")
    opts = parser.parse_args()
    wall: dict[str, list[float]] = {name: [] for name, _ in LIBRARIES}
    cpu: dict[str, list[float]] = {name: [] for name, _ in LIBRARIES}
    workers: dict[str, list[float]] = {name: [] for name, _ in LIBRARIES}
    scores: set[str] = set()
    for _ in range(opts.repeat):
        for name, installed in LIBRARIES:
            elapsed, seconds, in_workers, score = _run(installed, opts.samples)
            wall[name].append(elapsed)
            cpu[name].append(seconds)
            workers[name].append(in_workers)
            scores.add(score)
    if len(scores) != 1:
        raise SystemExit(f"the libraries found different best scores: {sorted(scores)}")
    print(
        f"GridSearchCV(RandomForest, 4 candidates x 3 folds, n_jobs=2, verbose=3), "
        f"{opts.samples} samples, median of {opts.repeat} (alternating runs), "
        f"load average {os.getloadavg()[0]:.1f}:"
    )
    for name, _ in LIBRARIES:
        print(
            f"  {name:10s} wall {statistics.median(wall[name]) * 1e3:7.0f} ms"
            f"  CPU: parent {statistics.median(cpu[name]) * 1e3:5.0f} ms,"
            f" workers {statistics.median(workers[name]) * 1e3:6.0f} ms"
            f"   runs: {[round(t, 2) for t in wall[name]]}"
        )
    pairs = [a / b for a, b in zip(wall["joblib"], wall["joblib-rs"], strict=True)]
    ratio = statistics.median(wall["joblib"]) / statistics.median(wall["joblib-rs"])
    print(
        f"  joblib / joblib-rs: {ratio:.2f}x on the medians, {statistics.median(pairs):.2f}x "
        f"median of the pairs (> 1: joblib-rs faster); best_score_ {scores.pop()} on both"
    )
    if opts.profile:
        _run(True, opts.samples, profile=True)


if __name__ == "__main__":
    main()
