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
    rng = np.random.default_rng(0)
    return [
        ("array 1 GiB float64", rng.random((1 << 30) // 8 // scale), ">= 10x"),
        ("array 100 MB Fortran order", np.asfortranarray(rng.random((2500 // scale, 5000))), ""),
        ("list of 100k small dicts",
         [{"id": i, "name": f"item{i}", "value": i * 0.5} for i in range(100_000 // scale)],
         ">= 15x"),
        ("dict with 1M int keys", {i: float(i) for i in range(1_000_000 // scale)}, ">= 4x"),
        ("list of 10k small arrays", [rng.random(16) for _ in range(10_000 // scale)], ""),
        ("1M-element list of str", [str(i) for i in range(1_000_000 // scale)], ""),
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
