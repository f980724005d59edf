"""get_reusable_executor: joblib-rs's (Rust pool) vs joblib's loky, side by side.

Each measurement runs in a fresh interpreter, alternating the two: 10,000 tiny ``submit``s
on a warm 2-worker executor, and the first ``submit`` of a fresh interpreter (imports
excluded). Usage: ``python benchmarks/bench_executor.py [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

SUBMITS = r"""
import time, operator
from {module}.externals.loky import get_reusable_executor
if __name__ == "__main__":
    ex = get_reusable_executor(max_workers=2)
    ex.submit(operator.add, 1, 1).result()
    start = time.perf_counter()
    futures = [ex.submit(operator.add, i, 1) for i in range(10_000)]
    assert [f.result() for f in futures][-1] == 10_000
    print(time.perf_counter() - start)
"""

FIRST = r"""
import time, operator
from {module}.externals.loky import get_reusable_executor
if __name__ == "__main__":
    start = time.perf_counter()
    get_reusable_executor(max_workers=2).submit(operator.add, 1, 1).result()
    print(time.perf_counter() - start)
"""


def _run(code: str, module: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    for title, code in (("10,000 tiny submits", SUBMITS), ("first submit", FIRST)):
        times: dict[str, list[float]] = {"joblib": [], "joblib_rs": []}
        for _ in range(opts.repeat):
            for module in times:
                times[module].append(_run(code, module))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{title}: joblib {med['joblib'] * 1e3:.1f} ms, joblib-rs "
            f"{med['joblib_rs'] * 1e3:.1f} ms -> {med['joblib'] / med['joblib_rs']:.2f}x"
        )


if __name__ == "__main__":
    main()
