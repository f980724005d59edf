"""Runs every side-by-side benchmark (``bench_*.py`` beside this file), one process each.

    python benchmarks/run.py [--quick] [--only hash,persist] [--json results.json] [ARGS...]

Other arguments (``--quick``, ``--repeat N``) are passed on to each script. With ``--json``,
each script writes its rows to a temporary file and they are gathered into one file, in one
schema, which ``benchmarks/chart.py`` draws::

    {"machine": {...}, "rows": [{"benchmark": "hash", "workload": "...",
                                 "joblib_s": 1.2, "joblib_rs_s": 0.1, "ratio": 12.0}, ...]}
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

here = pathlib.Path(__file__).resolve().parent


def normalise(benchmark: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of one script in the common schema (the scripts write three shapes)."""
    out = []

    def add(workload: str, joblib_s: float | None, joblib_rs_s: float) -> None:
        workload = workload.strip()
        if workload.startswith("vs ") and out:  # a variant of the previous row
            workload = f"{out[-1]['workload']} {workload}"
        if joblib_s is not None:
            out.append(
                {
                    "benchmark": benchmark,
                    "workload": workload,
                    "joblib_s": joblib_s,
                    "joblib_rs_s": joblib_rs_s,
                    "ratio": joblib_s / joblib_rs_s,
                }
            )

    for row in rows:
        if "joblib dump s" in row:  # bench_persist: dump and load of one workload
            for op in ("dump", "load"):
                add(f"{op} {row['workload']}", row[f"joblib {op} s"], row[f"joblib_rs {op} s"])
        elif "joblib_s" in row:  # bench_parallel
            add(row["workload"], row["joblib_s"], row["joblib_rs_s"])
        else:  # _common.Row
            add(row["name"], row["joblib"], row["joblib_rs"])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="gather every script's rows into this JSON file")
    p.add_argument("--only", default="", help="comma-separated script names (hash,persist,...)")
    args, passed_on = p.parse_known_args()
    only = {f"bench_{name}.py" for name in args.only.split(",") if name}
    status = 0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for script in sorted(here.glob("bench_*.py")):
            if only and script.name not in only:
                continue
            print(f"=== {script.name}", flush=True)
            out = pathlib.Path(tmp, script.stem + ".json")
            extra = ["--json", str(out)] if args.json else []
            start = time.perf_counter()
            code = subprocess.run(
                [sys.executable, str(script), *passed_on, *extra], cwd=here
            ).returncode
            print(
                f"=== {script.name}: {time.perf_counter() - start:.0f} s, exit {code}", flush=True
            )
            status |= code
            if args.json and out.exists():
                rows += normalise(script.stem.removeprefix("bench_"), json.loads(out.read_text()))
    if args.json:
        import joblib

        import joblib_rs

        machine = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "joblib": joblib.__version__,
            "joblib_rs": joblib_rs.__version__,
            "arguments": passed_on,
            "date": time.strftime("%Y-%m-%d"),
        }
        pathlib.Path(args.json).write_text(
            json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n"
        )
        print(f"wrote {len(rows)} rows to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
