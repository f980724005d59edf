"""hash(): joblib and joblib-rs side by side, in one process, on the same objects.

python benchmarks/bench_hash.py [--quick] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import numpy as np

import joblib_rs

from _common import Row, best_time, parser, print_table, write_json

try:
    import joblib
except ImportError:  # the comparison column stays empty
    joblib = None


def workloads(scale: int) -> list[tuple[str, object, str]]:
    # Names state the sizes actually used (--quick divides them by 10).
    rng = np.random.default_rng(0)
    n = 1_000_000 // scale
    return [
        (f"array {1024 // scale} MiB float64", rng.random((1 << 30) // 8 // scale), ">= 10x"),
        (
            f"array {100 // scale} MB Fortran order",
            np.asfortranarray(rng.random((2500 // scale, 5000))),
            "",
        ),
        (
            f"list of {n // 10:,} small dicts",
            [{"id": i, "name": f"item{i}", "value": i * 0.5} for i in range(n // 10)],
            ">= 15x",
        ),
        (f"dict with {n:,} int keys", {i: float(i) for i in range(n)}, ">= 4x"),
        (f"list of {n // 100:,} small arrays", [rng.random(16) for _ in range(n // 100)], ""),
        (f"{n:,}-element list of str", [str(i) for i in range(n)], ""),
    ]


def main() -> None:
    args = parser(__doc__).parse_args()
    scale = 10 if args.quick else 1
    rows = []
    for name, obj, target in workloads(scale):
        ours = best_time(lambda obj=obj: joblib_rs.hash(obj), args.repeat)
        theirs = None if joblib is None else best_time(lambda obj=obj: joblib.hash(obj), 1)
        rows.append(Row(name, theirs, ours, target))
        del obj
    print_table("hash (best of runs; joblib timed once)", rows)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
