"""Run joblib's own test suite on joblib and on joblib-rs; write ``docs/compatibility.md``.

Every ``test_*.py`` file of the installed joblib's ``joblib/test`` folder is run twice, each in
its own pytest process: once on the real joblib, once with ``joblib`` resolving to joblib-rs
(the aliasing package in ``tests/compat/alias`` is put first on ``PYTHONPATH``, so worker
processes get it too; ``joblib.test`` and ``joblib.testing`` still come from joblib's files).
The results of both runs are compared test by test, and each test that passes on joblib but not
on joblib-rs is given a reason from ``failure_reasons.py`` (a deliberate difference, or a bug
and who owns its fix).

Usage::

    python tests/compat/run_joblib_suite.py [--files test_hashing test_disk ...]
        [--reuse-joblib] [--timeout 120] [--jobs 1] [--out target/compat]

``--reuse-joblib`` keeps the joblib results of a previous run (they only change with joblib's
version). Not part of ``make test``: it takes several minutes (``make compat``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from failure_reasons import classify  # noqa: E402

ALIAS_DIR = HERE / "alias"
PLUGIN_DIR = HERE / "plugin"
#: Test-only packages for the suite (not installed in the venv, see the Makefile).
EXTRA_SITE = ROOT / "target" / "compat" / "site"
LIBS = ("joblib", "joblib_rs")


def joblib_test_dir() -> Path:
    """The ``test`` folder of the real, installed joblib."""
    code = "import joblib, os; print(os.path.dirname(joblib.__file__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()) / "test"


def _env(lib: str) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(PLUGIN_DIR)]
    if EXTRA_SITE.is_dir():
        paths.append(str(EXTRA_SITE))  # pytest-asyncio, installed there by `make compat`
    if lib == "joblib_rs":
        paths.insert(0, str(ALIAS_DIR))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["JOBLIB_SUITE_EXPECT"] = lib
    return env


def run_file(lib: str, module: str, out: Path, timeout: int) -> dict[str, Any]:
    """Run one test file of joblib's on ``lib``; return its per-test outcomes."""
    xml = out / lib / f"{module}.xml"
    log = out / lib / f"{module}.log"
    xml.parent.mkdir(parents=True, exist_ok=True)
    ini = out / "pytest.ini"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        f"joblib.test.{module}",
        "--import-mode=importlib",
        "-c",
        str(ini),
        "--rootdir",
        str(out),
        "-p",
        "no:cacheprovider",
        "-p",
        "joblib_suite_plugin",
        f"--timeout={timeout}",
        f"--junitxml={xml}",
        "-q",
        "-rN",
    ]
    if xml.exists():
        xml.unlink()
    start = time.monotonic()
    try:
        with open(log, "w") as fh:
            proc = subprocess.run(
                cmd,
                env=_env(lib),
                cwd=out,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout * 20,
            )
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = -1
    result: dict[str, Any] = {
        "exit_code": code,
        "seconds": round(time.monotonic() - start, 1),
        "tests": {},
    }
    if xml.exists():
        result["tests"] = parse_junit(xml)
    return result


def parse_junit(path: Path) -> dict[str, dict[str, str]]:
    """``{test id: {"outcome": ..., "message": ...}}`` from a junit XML report."""
    tests: dict[str, dict[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "") + "\n" + (child.text or "")
                break
        if name in tests and tests[name]["outcome"] == "passed":
            # A teardown error comes as a second entry for a passed test.
            tests[name] = {"outcome": outcome, "message": message}
        else:
            tests.setdefault(name, {"outcome": outcome, "message": message})
    return tests


def _first_line(message: str) -> str:
    """The error line of a failure report (pytest's ``E   ...`` line when there is one)."""
    for line in message.splitlines():
        if line.startswith("E   "):
            return line[1:].strip()[:160]
    for line in message.splitlines():
        line = line.strip()
        if line:
            return line[:160]
    return ""


def summarize(results: dict[str, dict[str, Any]], modules: list[str]) -> dict[str, Any]:
    """Per-file counts and the classified reasons of joblib-rs's failures."""
    rows = []
    causes: dict[str, dict[str, Any]] = {}
    for module in modules:
        base = results["joblib"].get(module, {"tests": {}, "exit_code": None})
        ours = results["joblib_rs"].get(module, {"tests": {}, "exit_code": None})
        names = sorted(base["tests"] or ours["tests"])
        # A file that fails to collect reports one error entry, named after the module.
        collect_error = next(
            (
                t["message"]
                for n, t in ours["tests"].items()
                if n not in base["tests"] and t["outcome"] == "error"
            ),
            "",
        )

        def passed(run: dict[str, Any], name: str) -> bool:
            return run["tests"].get(name, {}).get("outcome") == "passed"

        collected_rs = not collect_error and ours["exit_code"] not in (2, 3, 4, -1)
        row = {
            "file": module,
            "tests": len(names),
            "joblib": sum(passed(base, n) for n in names),
            "joblib_rs": sum(passed(ours, n) for n in names),
            "both": sum(passed(base, n) and passed(ours, n) for n in names),
            "collects": collected_rs,
            "exit": (base["exit_code"], ours["exit_code"]),
        }
        rows.append(row)
        for name in names:
            if passed(base, name) and not passed(ours, name):
                entry = ours["tests"].get(name, {"outcome": "missing", "message": collect_error})
                reason = classify(module, name, entry["message"])
                key = reason.key
                cause = causes.setdefault(
                    key,
                    {"reason": reason, "tests": [], "example": _first_line(entry["message"])},
                )
                cause["tests"].append(f"{module}::{name.split('::', 1)[1]}")
    return {"rows": rows, "causes": causes}


def write_markdown(summary: dict[str, Any], path: Path, joblib_version: str) -> None:
    """``docs/compatibility.md``: the per-file table, then the causes of failure."""
    rows = summary["rows"]
    total = {k: sum(r[k] for r in rows) for k in ("tests", "joblib", "joblib_rs", "both")}
    share = 100.0 * total["both"] / max(total["joblib"], 1)
    in_collected = {
        k: sum(r[k] for r in rows if r["collects"]) for k in ("tests", "joblib", "both")
    }
    collected_share = 100.0 * in_collected["both"] / max(in_collected["joblib"], 1)
    expected = sum(
        len(c["tests"]) for c in summary["causes"].values() if c["reason"].kind == "difference"
    )
    expected_share = 100.0 * (total["both"] + expected) / max(total["joblib"], 1)
    lines = [
        "# joblib's own test suite on joblib-rs",
        "",
        f"Every test file of joblib {joblib_version}'s `joblib/test/` folder, run once on joblib "
        "and once with `import joblib` resolving to joblib-rs (`make compat`, which runs "
        "`tests/compat/run_joblib_suite.py`; `joblib.test` and `joblib.testing` stay "
        "joblib's own files, see `tests/compat/alias/`). This page is written by that script.",
        "",
        f"**{total['both']} of the {total['joblib']} tests that pass on joblib pass on "
        f"joblib-rs ({share:.1f}%).** Target: 97%.",
        "",
        f"- In the files that import on joblib-rs: {in_collected['both']} of "
        f"{in_collected['joblib']} ({collected_share:.1f}%).",
        f"- Counting the {expected} tests that fail by a documented, deliberate difference as "
        f"expected: {total['both'] + expected} of {total['joblib']} ({expected_share:.1f}%).",
        "",
        "| file | tests | pass on joblib | pass on joblib-rs | of joblib's passes |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        note = "" if r["collects"] else " (does not collect / crashed)"
        pct = f"{100.0 * r['both'] / r['joblib']:.0f}%" if r["joblib"] else "-"
        lines.append(
            f"| `{r['file']}`{note} | {r['tests']} | {r['joblib']} | {r['joblib_rs']} | {pct} |"
        )
    lines.append(
        f"| **total** | {total['tests']} | {total['joblib']} | {total['joblib_rs']} | "
        f"{share:.1f}% |"
    )
    lines += [
        "",
        "## Why tests that pass on joblib fail on joblib-rs",
        "",
        "Largest causes first. *Difference*: deliberate, documented in `docs/differences.md`. "
        "*Missing* / *bug*: to be done, by the owner named.",
        "",
    ]
    causes = sorted(summary["causes"].values(), key=lambda c: -len(c["tests"]))
    for cause in causes:
        reason = cause["reason"]
        lines.append(f"### {len(cause['tests'])} x {reason.title}")
        lines.append("")
        lines.append(f"- kind: {reason.kind}; owner: {reason.owner}")
        if reason.detail:
            lines.append(f"- {reason.detail}")
        if cause["example"]:
            example = cause["example"].replace("|", "\\|").replace("`", "'")
            lines.append(f"- example error: `{example}`")
        shown = cause["tests"][:8]
        more = len(cause["tests"]) - len(shown)
        lines.append(
            "- tests: "
            + ", ".join(f"`{t}`" for t in shown)
            + (f" and {more} more" if more else "")
        )
        lines.append("")
    lines += [
        "## Names joblib has and joblib-rs lacks",
        "",
        "From `tests/compat/missing_names.py` (public names, and the private ones known to be "
        "used outside joblib):",
        "",
        "| joblib module | missing in joblib-rs |",
        "| --- | --- |",
    ]
    from missing_names import report

    for module, missing in report().items():
        text = "the whole module" if missing is None else ", ".join(f"`{n}`" for n in missing)
        lines.append(f"| `{module}` | {text} |")
    # Keep the scikit-learn section that run_sklearn_suite.py maintains below this one.
    kept = ""
    if path.exists() and "<!-- sklearn-suite:start -->" in path.read_text():
        kept = "\n<!-- sklearn-suite:start -->" + path.read_text().split(
            "<!-- sklearn-suite:start -->", 1
        )[1]
    path.write_text("\n".join(lines).rstrip() + "\n" + kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="*", help="test modules (default: all)")
    parser.add_argument(
        "--reuse-joblib", action="store_true", help="keep the joblib results of a previous run"
    )
    parser.add_argument("--libs", nargs="*", choices=LIBS, help="run only these (default: both)")
    parser.add_argument("--no-doc", action="store_true", help="do not write the markdown page")
    parser.add_argument(
        "--report-only", action="store_true", help="write the page from the stored results"
    )
    parser.add_argument("--timeout", type=int, default=120, help="seconds per test")
    parser.add_argument("--jobs", type=int, default=1, help="files run at once")
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "compat")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "compatibility.md")
    args = parser.parse_args(argv)

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "pytest.ini").write_text("[pytest]\naddopts =\n")
    test_dir = joblib_test_dir()
    all_modules = sorted(p.stem for p in test_dir.glob("test_*.py"))
    modules = args.files or all_modules
    results_path = out / "results.json"
    results: dict[str, dict[str, Any]] = {lib: {} for lib in LIBS}
    if results_path.exists():
        results.update(json.loads(results_path.read_text()))
    libs = args.libs or (["joblib_rs"] if args.reuse_joblib else list(LIBS))
    if args.report_only:
        libs = []
    jobs = [(lib, m) for m in modules for lib in libs]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_file, lib, m, out, args.timeout): (lib, m) for lib, m in jobs}
        for future in concurrent.futures.as_completed(futures):
            lib, module = futures[future]
            res = future.result()
            results[lib][module] = res
            n_pass = sum(t["outcome"] == "passed" for t in res["tests"].values())
            print(
                f"{lib:9} {module:40} {n_pass:4}/{len(res['tests']):4} passed "
                f"(exit {res['exit_code']}, {res['seconds']}s)",
                flush=True,
            )
            results_path.write_text(json.dumps(results))
    if args.no_doc:
        return 0
    version = subprocess.run(
        [sys.executable, "-c", "import joblib; print(joblib.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    summary = summarize(results, all_modules if not args.files else modules)
    write_markdown(summary, args.doc, version)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
