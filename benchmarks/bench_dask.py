"""Scaling out: the 'dask' backend, and scikit-learn on joblib-rs's pool, beside joblib, one run.

    python benchmarks/bench_dask.py [--quick] [--repeat 1] [--json out.json]

1. ``Parallel`` of 1000 tasks of 10 ms under ``parallel_config('dask')`` on a LocalCluster of
   2 worker processes (1 thread each): joblib's dask backend and joblib-rs's, against the
   ideal 1000 * 10 ms / 2 = 5 s (target: within 1.3x).
2. scikit-learn ``cross_val_score(..., n_jobs=2)`` under ``joblib.parallel_config`` with
   joblib's ``'loky'`` and with ``'joblib_rs'`` (:func:`joblib_rs.register_joblib_backend`),
   both pools warm (target: not slower, ratio noted).
"""

from __future__ import annotations

import logging
import time

import joblib_rs

from _common import Row, best_time, parser, print_table, write_json

try:
    import joblib
except ImportError:
    joblib = None

TASK_SECONDS = 0.01


def sleeper(i: int) -> int:
    time.sleep(TASK_SECONDS)
    return i


def dask_rows(n_tasks: int, repeat: int) -> list[Row]:
    from distributed import Client, LocalCluster

    n_workers = 2
    ideal = n_tasks * TASK_SECONDS / n_workers
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster),
    ):

        def run_rs(n: int = n_tasks) -> None:
            with joblib_rs.parallel_config(backend="dask"):
                out = joblib_rs.Parallel()(joblib_rs.delayed(sleeper)(i) for i in range(n))
            assert out == list(range(n))

        def run_joblib(n: int = n_tasks) -> None:
            with joblib.parallel_config(backend="dask"):
                out = joblib.Parallel()(joblib.delayed(sleeper)(i) for i in range(n))
            assert out == list(range(n))

        # Warm-up: the workers' first tasks pay for imports and connections.
        run_rs(20)
        if joblib is not None:
            run_joblib(20)

        t_rs = best_time(run_rs, repeat)
        t_jl = best_time(run_joblib, repeat) if joblib is not None else None
    name = f"dask {n_tasks} x 10 ms, 2 workers"
    return [
        Row(name, t_jl, t_rs, f"<= 1.3x ideal {ideal:.2f} s: {t_rs / ideal:.2f}x"),
    ]


def sklearn_rows(repeat: int, quick: bool) -> list[Row]:
    try:
        from sklearn.datasets import make_classification
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import cross_val_score
    except ImportError:
        print("scikit-learn is not installed: skipping the bridge benchmark")
        return []
    if joblib is None:
        return []
    joblib_rs.register_joblib_backend()
    X, y = make_classification(n_samples=400 if quick else 2000, n_features=20, random_state=0)

    def score(backend: str) -> list[float]:
        with joblib.parallel_config(backend=backend):
            return list(
                cross_val_score(
                    RandomForestClassifier(n_estimators=30 if quick else 100, random_state=0),
                    X,
                    y,
                    cv=4,
                    n_jobs=2,
                )
            )

    # Warm both pools (worker start-up and scikit-learn imports are not the subject).
    assert score("joblib_rs") == score("loky")
    t_rs = best_time(lambda: score("joblib_rs"), repeat)
    t_jl = best_time(lambda: score("loky"), repeat)
    return [Row("sklearn cross_val_score n_jobs=2", t_jl, t_rs, "not slower than loky")]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    repeat = args.repeat
    rows = dask_rows(100 if args.quick else 1000, repeat)
    rows += sklearn_rows(repeat, args.quick)
    print_table("Scaling out (joblib = joblib's dask / loky backends)", rows)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
