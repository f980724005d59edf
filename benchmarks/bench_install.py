"""The cost of ``joblib_rs.install()``, and what a process that never calls it pays.

Targets of issue 16: ``install()`` itself under 5 ms; a process that never calls it pays
nothing. Each measurement runs in a fresh interpreter:

- ``install()``: its wall time, then that of the first ``import joblib`` after it;
- never called: the only code joblib-rs runs in such a process is the
  ``joblib_rs_install.pth`` line, at interpreter start; its time with ``JOBLIB_RS_INSTALL``
  unset is measured (``timeit`` of that very line), and the process is checked to have no
  import hook and no ``joblib`` module.

scikit-learn's speed on the two libraries is ``bench_sklearn_gridsearch.py``.

Usage: ``python benchmarks/bench_install.py [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

INSTALL_COST = r"""
import time, joblib_rs
start = time.perf_counter(); joblib_rs.install(); mid = time.perf_counter()
import joblib
end = time.perf_counter()
print(mid - start, end - mid)
"""

NEVER_CALLED = r"""
import sys, timeit
line = open(sys.argv[1]).read()
code = compile(line, "joblib_rs_install.pth", "exec")
number = 20000
seconds = min(timeit.repeat(lambda: exec(code, {}), number=number, repeat=5)) / number
hooked = [type(f).__name__ for f in sys.meta_path if "joblib" in type(f).__name__.lower()]
print(seconds, len(hooked), "joblib" in sys.modules)
"""


def _run(code: str, *args: str) -> list[str]:
    env = dict(os.environ)
    env.pop("JOBLIB_RS_INSTALL", None)
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    )
    return out.stdout.strip().splitlines()[-1].split()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    costs = [[float(v) for v in _run(INSTALL_COST)] for _ in range(opts.repeat)]
    install = statistics.median(c[0] for c in costs)
    first_import = statistics.median(c[1] for c in costs)
    print(f"load average {os.getloadavg()[0]:.1f}, median of {opts.repeat} fresh interpreters:")
    print(f"  install():                      {install * 1e3:6.3f} ms  (target < 5 ms)")
    print(f"  then the first `import joblib`: {first_import * 1e3:6.3f} ms")
    pth = Path(__file__).resolve().parent.parent / "python" / "joblib_rs_install.pth"
    seconds, hooks, imported = _run(NEVER_CALLED, str(pth))
    print(
        f"  never called: the .pth line costs {float(seconds) * 1e6:.2f} µs at start-up; "
        f"import hooks: {hooks}, joblib imported: {imported}"
    )


if __name__ == "__main__":
    main()
