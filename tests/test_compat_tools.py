"""The tools of tests/compat: the ``joblib`` alias package and the suite report helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

COMPAT = Path(__file__).parent / "compat"
sys.path.insert(0, str(COMPAT))

from failure_reasons import classify  # noqa: E402
from run_joblib_suite import parse_junit, summarize  # noqa: E402


def test_alias_package_serves_joblib_rs_and_joblibs_tests():
    pytest.importorskip("joblib")
    code = textwrap.dedent("""
        import os
        import joblib, joblib_rs
        import joblib.hashing, joblib.func_inspect, joblib.testing, joblib.test.common
        assert joblib is joblib_rs
        assert joblib.hashing is joblib_rs.hashing
        assert joblib.func_inspect.filter_args is joblib_rs.func_inspect.filter_args
        assert "joblib_rs" not in joblib.testing.__file__
        assert os.path.basename(os.path.dirname(joblib.test.common.__file__)) == "test"
        try:
            import joblib.no_such_module
        except ModuleNotFoundError as exc:
            print("missing:", exc.name)
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(COMPAT / "alias"), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "missing: joblib.no_such_module"


def test_classify_known_and_unknown_failures():
    module = classify(
        "test_parallel", "x::y", "E   ModuleNotFoundError: No module named 'joblib.externals'"
    )
    assert module.kind == "missing" and module.key == "module:joblib.externals"
    prefetch = classify(
        "test_parallel",
        "joblib.test.test_parallel::test_parallel_unordered_generator_returns_fastest_first"
        "[loky-2]",
        "assert False",
    )
    assert prefetch.kind == "difference" and "differences.md" in prefetch.detail
    name = classify(
        "test_x", "m::t", "ImportError: cannot import name 'Foo' from 'joblib_rs.memory'"
    )
    assert name.key == "name:memory.Foo" and name.owner == "memory/store engineer"
    other = classify("test_disk", "m::t", "AssertionError: assert 1 == 2")
    assert other.kind == "unclassified" and "assert 1 == 2" in other.title


def test_parse_junit_and_summarize(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="joblib.test.test_disk" name="test_a"/>'
        '<testcase classname="joblib.test.test_disk" name="test_b">'
        '<failure message="AssertionError: assert 1 == 2">E   assert 1 == 2</failure></testcase>'
        '<testcase classname="joblib.test.test_disk" name="test_c"><skipped message="no"/>'
        "</testcase></testsuite></testsuites>"
    )
    tests = parse_junit(xml)
    assert [t["outcome"] for t in tests.values()] == ["passed", "failed", "skipped"]
    passing = {n: {"outcome": "passed", "message": ""} for n in tests}
    results = {
        "joblib": {"test_disk": {"tests": passing, "exit_code": 0}},
        "joblib_rs": {"test_disk": {"tests": tests, "exit_code": 1}},
    }
    summary = summarize(results, ["test_disk"])
    row = summary["rows"][0]
    assert (row["tests"], row["joblib"], row["joblib_rs"], row["both"]) == (3, 3, 1, 1)
    assert sum(len(c["tests"]) for c in summary["causes"].values()) == 2
