"""Large arrays through the process pool, joblib-rs beside joblib (default backends), one run.

python benchmarks/bench_memmapping.py [--quick] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import numpy as np

import joblib_rs

from _common import Row, best_time, parser, print_table, write_json

try:
    import joblib
except ImportError:
    joblib = None


def make_result(i: int, n: int) -> np.ndarray:
    return np.full(n, float(i))


def total(a: np.ndarray) -> float:
    return float(a.sum())


def main() -> None:
    args = parser(__doc__).parse_args()
    scale = 10 if args.quick else 1
    n50 = 50_000_000 // 8 // scale
    big = np.random.default_rng(0).random(200_000_000 // 8 // scale)
    rows = []

    def results(mod):
        out = mod.Parallel(n_jobs=2)(mod.delayed(make_result)(i, n50) for i in range(20))
        assert out[19][0] == 19.0

    def sums(mod, **kw):
        out = mod.Parallel(n_jobs=2, **kw)(mod.delayed(total)(big) for _ in range(20))
        assert len(out) == 20

    mb = 50 // scale
    ours = best_time(lambda: results(joblib_rs), args.repeat)
    theirs = best_time(lambda: results(joblib), 1) if joblib else None
    rows.append(Row(f"20 tasks returning {mb} MB each", theirs, ours, ">= 8x"))
    ours = best_time(lambda: sums(joblib_rs), args.repeat)
    theirs = best_time(lambda: sums(joblib), args.repeat) if joblib else None
    rows.append(Row(f"{200 // scale} MB array to 20 tasks (auto)", theirs, ours, ">= 1x"))
    theirs = best_time(lambda: sums(joblib, max_nbytes=None), 1) if joblib else None
    rows.append(Row("  vs joblib max_nbytes=None", theirs, ours, ">= 20x"))
    print_table("large arrays, n_jobs=2", rows)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
