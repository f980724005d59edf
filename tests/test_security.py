"""Attack tests of ``load(..., allowed=...)``: hostile files must be refused, harmlessly.

Every case of ``hostile_pickles.CASES`` (code execution, file writes, memory corruption,
allow-list bypasses, process-wide tampering), in every protocol 0-5 and every carrier
``load`` reads, is loaded in a fresh interpreter under ``sys.addaudithook``
(``security_child.py``). A load passes only if it raised, no watched audit event (open,
os.system, subprocess.Popen, exec, compile, import, ctypes...) happened during it, the
process was not tampered with and no file was written. The fuzz test feeds mutated and
random pickles to ``allowed="safe"`` the same way (``fuzz_safe_load.py``).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hostile_pickles import CARRIERS, CASES, HARMLESS, PROTOCOLS

import joblib_rs

HERE = Path(__file__).parent


def _run_child(tmp_path: Path, *args: str) -> list[dict[str, object]]:
    env = dict(os.environ, PYTHONPATH=str(HERE))
    proc = subprocess.run(
        [sys.executable, str(HERE / "security_child.py"), str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_pickle_is_refused_in_every_carrier(tmp_path: Path, case: str) -> None:
    reports = _run_child(tmp_path, case)
    assert len(reports) == len(PROTOCOLS) * len(CARRIERS)
    for r in reports:
        where = f"{case} / protocol {r['proto']} / {r['carrier']}"
        assert r["events"] == [], f"{where}: audit events during load: {r['events']}"
        assert not r["tampered"], f"{where}: the process was tampered with"
        assert not r["target_exists"], f"{where}: a file was written"
        if case not in HARMLESS:
            assert r["raised"] is not None, f"{where}: load succeeded"
            assert r["raised"][0] in ("UnpicklingError", "CorruptFileError"), (where, r)


def test_audit_hook_sees_an_unrestricted_attack(tmp_path: Path) -> None:
    """The control: the same harness records os.system when nothing restricts the load."""
    reports = _run_child(tmp_path, "--control")
    assert [e[0] for e in reports[0]["events"]].count("os.system") == 1


def test_refusals_name_the_global_and_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "f.pkl"
    path.write_bytes(pickle.dumps(os.system))
    with pytest.raises(pickle.UnpicklingError, match=r"'posix\.system' is forbidden.*safe set"):
        joblib_rs.load(path, allowed="safe")
    with pytest.raises(pickle.UnpicklingError, match=r"wildcard 'posix\.\*' allows classes only"):
        joblib_rs.load(path, allowed=["safe", "posix.*"])


def test_allowed_entries_are_validated() -> None:
    for bad in ["os.*.system", "os.sys*", "__builtins__.eval", "os", "a.__dict__"]:
        with pytest.raises(ValueError, match="allowed entry"):
            joblib_rs.load(HERE / "hostile_pickles.py", allowed=["safe", bad])
    with pytest.raises(TypeError):
        joblib_rs.load(HERE / "hostile_pickles.py", allowed=3)  # type: ignore[arg-type]


def test_fuzzed_pickles_fail_cleanly(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(HERE))
    proc = subprocess.run(
        [sys.executable, str(HERE / "fuzz_safe_load.py"), "--examples", "3000", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["examples"] == 3000 and summary["bad"] == [], summary


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


class WithSetstate:
    def __init__(self) -> None:
        self.v = 1

    def __setstate__(self, state: dict[str, int]) -> None:
        self.v = state["v"] * 10


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_user_classes_load_with_exact_and_package_entries(tmp_path: Path, proto: int) -> None:
    path = tmp_path / "p.pkl"
    value = {"p": Point(1, 2), "s": WithSetstate(), "arr": np.arange(3)}
    path.write_bytes(pickle.dumps(value, protocol=proto))
    mod = Point.__module__
    for allowed in (["safe", f"{mod}.Point", f"{mod}.WithSetstate"], ["safe", f"{mod}.*"]):
        out = joblib_rs.load(path, allowed=allowed)
        assert (out["p"].x, out["p"].y, out["s"].v) == (1, 2, 10)
    with pytest.raises(pickle.UnpicklingError, match=f"{mod}.WithSetstate"):
        joblib_rs.load(path, allowed=["safe", f"{mod}.Point"])


def test_sklearn_model_loads_with_safe_and_sklearn(tmp_path: Path) -> None:
    sklearn = pytest.importorskip("sklearn")
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x, y = rng.random((60, 4)), rng.integers(0, 2, 60)
    models = [
        make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y),
        RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y),
    ]
    import joblib

    for i, model in enumerate(models):
        for writer in (joblib_rs.dump, joblib.dump):
            path = tmp_path / f"m{i}-{writer.__module__}.pkl"
            writer(model, path)
            with pytest.raises(pickle.UnpicklingError, match="sklearn"):
                joblib_rs.load(path, allowed="safe")
            loaded = joblib_rs.load(path, allowed=["safe", "sklearn.*"])
            np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert sklearn.__version__


def _honest_values() -> dict[str, object]:
    import collections
    import datetime
    import decimal
    import fractions

    tz = datetime.timezone(datetime.timedelta(hours=1), "X")
    return {
        "set": {1, 2},
        "frozenset": frozenset([1]),
        "range": range(1, 5, 2),
        "bytes": b"ab\x00\xff",
        "bytearray": bytearray(b"xy"),
        "complex": 1 + 2j,
        "datetime": datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=tz),
        "date": datetime.date(2020, 1, 2),
        "timedelta": datetime.timedelta(1, 2, 3),
        "time": datetime.time(1, 2, 3),
        "decimal": decimal.Decimal("1.5"),
        "fraction": fractions.Fraction(1, 3),
        "counter": collections.Counter("aab"),
        "ordered": collections.OrderedDict(a=1),
        "defaultdict": collections.defaultdict(list, a=[1]),
        "deque": collections.deque([1, 2], maxlen=5),
        "slice": slice(1, 2, None),
        "big ints": [2**100, -(2**70)],
        "text": "é\ud800x",
        "nested": [[1, (2, 3)], {"a": {1, 2}}],
        "array big-endian": np.arange(3, dtype=">i4"),
        "array fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "array empty": np.empty((0, 3)),
        "array 0-d": np.array(5),
        "array unicode": np.array(["ab"], dtype="U3"),
        "array structured": np.zeros(3, dtype=[("a", "<i8"), ("b", "U3"), ("c", ("f4", (2,)))]),
        "array datetime64": np.arange(3).astype("M8[D]"),
        "scalar": np.float32(1.5),
        "dtype structured": np.dtype([("a", "<i8"), ("b", "U3")]),
        "dtype datetime": np.dtype("M8[ns]"),
        "dtype subarray": np.dtype(("<f8", (2, 3))),
        "scalar type": np.float64,
    }


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return (
            type(a) is type(b)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.flags.f_contiguous == b.flags.f_contiguous
            and np.array_equal(a, b)
        )
    if type(a) is not type(b) or a != b:
        return False
    if hasattr(a, "default_factory"):
        return a.default_factory is b.default_factory  # type: ignore[attr-defined]
    if hasattr(a, "maxlen"):
        return a.maxlen == b.maxlen  # type: ignore[attr-defined]
    return True


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_plain_pickles_of_every_protocol_load_unchanged_under_safe(
    tmp_path: Path, proto: int
) -> None:
    for name, value in _honest_values().items():
        path = tmp_path / "v.pkl"
        path.write_bytes(pickle.dumps(value, protocol=proto))
        expected = pickle.loads(path.read_bytes())
        got = joblib_rs.load(path, allowed="safe")
        assert _same(expected, got), (name, proto, got)


@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_dumped_data_loads_unchanged_under_safe(tmp_path: Path, mmap_mode: str | None) -> None:
    import joblib

    values = _honest_values()
    for writer, path in ((joblib_rs.dump, tmp_path / "v.jrs"), (joblib.dump, tmp_path / "v.pkl")):
        writer(values, path)
        got = joblib_rs.load(path, mmap_mode=mmap_mode, allowed="safe")
        expected = joblib_rs.load(path, mmap_mode=mmap_mode)
        for name in values:
            if isinstance(expected[name], np.ndarray):
                np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(expected[name]))
                assert got[name].dtype == expected[name].dtype, name
                assert type(got[name]) is type(expected[name]), name
            else:
                assert _same(expected[name], got[name]), (name, writer)
