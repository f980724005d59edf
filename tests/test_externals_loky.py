"""``joblib_rs.externals.loky``: loky's executor API on joblib-rs's Rust process pool."""

from __future__ import annotations

import os
import signal
import time
from fractions import Fraction

import pytest

import joblib_rs
from joblib_rs.externals import cloudpickle as vendored_cloudpickle
from joblib_rs.externals.loky import (
    ProcessPoolExecutor,
    TerminatedWorkerError,
    cpu_count,
    get_reusable_executor,
    set_loky_pickler,
)


def _pid(_: object = None) -> int:
    return os.getpid()


def _square(x: int) -> int:
    return x * x


def _getenv(name: str) -> str | None:
    return os.environ.get(name)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_submit_map_and_reuse() -> None:
    executor = get_reusable_executor(max_workers=2)
    assert executor.submit(_square, 7).result(timeout=60) == 49
    assert list(executor.map(_square, range(5), timeout=60)) == [0, 1, 4, 9, 16]
    pids = {executor.submit(_pid).result(timeout=60) for _ in range(20)}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    again = get_reusable_executor(max_workers=2)
    assert again is executor
    assert {again.submit(_pid).result(timeout=60) for _ in range(20)} <= pids | set()
    other = get_reusable_executor(max_workers=1)
    assert other is not executor
    assert other.submit(_square, 3).result(timeout=60) == 9
    other.shutdown()


def test_parallel_and_the_executor_share_workers() -> None:
    joblib_rs.Parallel(n_jobs=2)(joblib_rs.delayed(_pid)() for _ in range(4))
    executor = get_reusable_executor(reuse=True)
    assert executor is get_reusable_executor(reuse=True)
    assert executor.submit(_square, 4).result(timeout=60) == 16


def test_idle_timeout_stops_the_workers() -> None:
    executor = get_reusable_executor(max_workers=2, timeout=0.5)
    pid = executor.submit(_pid).result(timeout=60)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    # The executor keeps working: a new pool is started on demand.
    assert executor.submit(_square, 5).result(timeout=60) == 25


def test_a_killed_worker_fails_its_future_and_the_next_submit_works() -> None:
    executor = get_reusable_executor(max_workers=2)
    with pytest.raises(TerminatedWorkerError):
        executor.submit(_die).result(timeout=60)
    executor = get_reusable_executor(max_workers=2)
    assert executor.submit(_square, 6).result(timeout=60) == 36


def test_shutdown_and_kill_workers() -> None:
    executor = get_reusable_executor(max_workers=2)
    pid = executor.submit(_pid).result(timeout=60)
    executor.shutdown(wait=True, kill_workers=True)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    with pytest.raises(RuntimeError):
        executor.submit(_square, 1)
    assert get_reusable_executor(max_workers=2) is not executor


def _negated(value: Fraction) -> tuple:
    return Fraction, (-value.numerator, value.denominator)


def _square_plus_one(value: Fraction) -> Fraction:
    return value * value + 1


def test_private_executor_environment_and_arguments() -> None:
    with ProcessPoolExecutor(max_workers=1, env={"JRS_EXAMPLE": "42"}) as executor:
        assert executor.submit(_getenv, "JRS_EXAMPLE").result(timeout=60) == "42"
    with pytest.raises(ValueError, match="max_workers"):
        ProcessPoolExecutor(max_workers=0)
    # Reducer tables apply to what travels: here a Fraction goes as its negation.
    with ProcessPoolExecutor(max_workers=1, job_reducers={Fraction: _negated}) as executor:
        assert executor.submit(_square_plus_one, Fraction(3)).result(timeout=60) == 10
    with ProcessPoolExecutor(max_workers=1, result_reducers={Fraction: _negated}) as executor:
        assert executor.submit(_square_plus_one, Fraction(3)).result(timeout=60) == -10


def test_set_loky_pickler_and_names() -> None:
    try:
        set_loky_pickler("pickle")
        assert os.environ["LOKY_PICKLER"] == "pickle"
        with pytest.raises(ImportError):
            set_loky_pickler("no_such_pickler_module")
    finally:
        set_loky_pickler()
    assert "LOKY_PICKLER" not in os.environ
    assert cpu_count() == joblib_rs.cpu_count()
    assert vendored_cloudpickle.dumps is __import__("cloudpickle").dumps
