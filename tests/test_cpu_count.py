"""cpu_count: affinity, cgroup quotas (v1 and v2), LOKY_MAX_CPU_COUNT, physical cores."""

import os
import subprocess
import sys

import pytest

import joblib_rs
from joblib_rs import _cpu


def test_cpu_count_is_a_positive_int_bounded_by_the_machine():
    n = joblib_rs.cpu_count()
    assert isinstance(n, int)
    assert 1 <= n <= os.cpu_count()
    assert 1 <= joblib_rs.cpu_count(only_physical_cores=True) <= n


def test_cpu_count_matches_the_affinity_mask():
    assert joblib_rs.cpu_count() <= len(os.sched_getaffinity(0))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_cpu_count_follows_a_restricted_affinity_in_a_fresh_process():
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "import joblib_rs; print(joblib_rs.cpu_count(), joblib_rs.cpu_count(True))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["1", "1"]


def test_loky_max_cpu_count_caps_the_result(monkeypatch):
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")
    assert joblib_rs.cpu_count() == 1
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "0.5")
    assert joblib_rs.cpu_count() == 1
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "not a number")
    assert joblib_rs.cpu_count() >= 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [("150000 100000\n", 2), ("50000 100000\n", 1), ("400000 100000\n", 4)],
)
def test_cgroup_v2_quota_rounds_up(tmp_path, content, expected):
    (tmp_path / "cpu.max").write_text(content)
    assert _cpu._cgroup_count(tmp_path) == expected


def test_cgroup_v2_without_limit(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cpu._cgroup_count(tmp_path) == os.cpu_count()


def test_cgroup_v1_quota(tmp_path):
    folder = tmp_path / "cpu,cpuacct"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text("250000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    assert _cpu._cgroup_count(tmp_path) == 3
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cpu._cgroup_count(tmp_path) == os.cpu_count()


def test_no_cgroup_files_means_no_limit(tmp_path):
    assert _cpu._cgroup_count(tmp_path) == os.cpu_count()


def test_physical_cores_from_cpuinfo():
    physical = _cpu._physical_cores()
    if physical is not None:
        assert 1 <= physical <= os.cpu_count()
