"""Run scikit-learn's own tests that exercise joblib, on joblib and under joblib_rs.install().

Each module is run twice, each time in its own pytest process: once as installed (the real
joblib), once with ``JOBLIB_RS_INSTALL=1`` (the ``joblib_rs_install.pth`` hook installs
joblib-rs at interpreter start, in pytest and in every worker). Results are compared test
by test and the side-by-side table is written between the ``sklearn-suite`` markers of
``docs/compatibility.md``.

Usage::

    python tests/compat/run_sklearn_suite.py [--modules sklearn.utils.tests.test_parallel ...]
        [--timeout 900] [--out target/compat/sklearn] [--no-doc]

Not part of ``make test`` (several minutes): ``make compat`` runs it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DOC = ROOT / "docs" / "compatibility.md"
START, END = "<!-- sklearn-suite:start -->", "<!-- sklearn-suite:end -->"

MODULES = (
    "sklearn.utils.tests.test_parallel",
    "sklearn.tests.test_pipeline",
    "sklearn.model_selection.tests.test_validation",
    "sklearn.model_selection.tests.test_search",
    "sklearn.ensemble.tests.test_forest",
    "sklearn.ensemble.tests.test_bagging",
    "sklearn.inspection.tests.test_permutation_importance",
)
LIBS = ("joblib", "joblib_rs")


def _env(lib: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("JOBLIB_RS_INSTALL", None)
    if lib == "joblib_rs":
        env["JOBLIB_RS_INSTALL"] = "1"
    return env


def _which_library(lib: str) -> str:
    """The module scikit-learn's Parallel really subclasses in this environment."""
    code = "from sklearn.utils.parallel import Parallel; print(Parallel.__mro__[1].__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(lib), check=True
    )
    return out.stdout.strip()


def _run(module: str, lib: str, out: Path, timeout: int) -> tuple[dict[str, str], float]:
    xml = out / f"{module}.{lib}.xml"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            module,
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            "-q",
            f"--timeout={timeout}",
            f"--junitxml={xml}",
        ],
        capture_output=True,
        text=True,
        env=_env(lib),
        cwd=out,
    )
    elapsed = time.perf_counter() - started
    results: dict[str, str] = {}
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    msg = (child.get("message") or "").splitlines()
                    outcome = f"failed: {msg[0][:160] if msg else child.tag}"
                elif child.tag == "skipped":
                    outcome = "skipped"
            results[name] = outcome
    return results, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="*", default=list(MODULES))
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "compat" / "sklearn")
    parser.add_argument("--no-doc", action="store_true")
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    ran = {lib: _which_library(lib) for lib in LIBS}
    if not ran["joblib_rs"].startswith("joblib_rs") or ran["joblib"].startswith("joblib_rs"):
        print(f"the runs would not compare the two libraries: {ran}", file=sys.stderr)
        return 1
    rows = []
    differences: list[str] = []
    for module in opts.modules:
        res = {}
        secs = {}
        for lib in LIBS:
            res[lib], secs[lib] = _run(module, lib, opts.out, opts.timeout)
        counts = {
            lib: (
                sum(v == "passed" for v in r.values()),
                sum(v.startswith("failed") for v in r.values()),
                sum(v == "skipped" for v in r.values()),
            )
            for lib, r in res.items()
        }
        rows.append((module, counts, secs))
        for name, outcome in sorted(res["joblib"].items()):
            other = res["joblib_rs"].get(name, "missing")
            if outcome == "passed" and other != "passed":
                differences.append(f"- `{module}` `{name.split('::')[-1]}`: {other}")
        print(module, counts, {k: round(v) for k, v in secs.items()}, flush=True)
    lines = [
        START,
        "## scikit-learn's own tests, under `joblib_rs.install()`",
        "",
        "`make compat` (`tests/compat/run_sklearn_suite.py`) runs scikit-learn's test modules",
        "that exercise joblib twice: on the real joblib, and with `JOBLIB_RS_INSTALL=1` (every",
        f"process binds `import joblib` to joblib-rs; checked: scikit-learn's `Parallel` "
        f"subclassed `{ran['joblib_rs']}`).",
        "",
        "| module | joblib: passed / failed / skipped | joblib-rs: passed / failed / skipped "
        "| time joblib / joblib-rs |",
        "|---|---|---|---|",
    ]
    for module, counts, secs in rows:
        j, r = counts["joblib"], counts["joblib_rs"]
        lines.append(
            f"| `{module}` | {j[0]} / {j[1]} / {j[2]} | {r[0]} / {r[1]} / {r[2]} "
            f"| {secs['joblib']:.0f} s / {secs['joblib_rs']:.0f} s |"
        )
    lines += ["", "Tests that pass on joblib but not on joblib-rs:", ""]
    lines += differences or ["- none"]
    lines += ["", END]
    text = "\n".join(lines) + "\n"
    print(text)
    if not opts.no_doc:
        doc = DOC.read_text() if DOC.exists() else "# Compatibility\n\n"
        if START in doc and END in doc:
            head, rest = doc.split(START, 1)
            doc = head + text.rstrip("\n") + rest.split(END, 1)[1]
        else:
            doc = doc.rstrip("\n") + "\n\n" + text
        DOC.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
