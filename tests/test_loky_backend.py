"""The default 'loky' backend on the Rust process pool, through Parallel, with real crashes."""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from joblib_rs import Parallel, TerminatedWorkerError, delayed
from joblib_rs._parallel_backends import _reusable_pool

from _processes import alive, wait_until

TIMEOUT = 60


def whoami(_):
    time.sleep(0.05)
    return os.getpid(), os.getppid(), os.environ.get("JOBLIB_RS_WORKER")


def test_default_backend_runs_on_joblib_rs_workers():
    out = Parallel(n_jobs=2)(delayed(whoami)(i) for i in range(8))
    pids = {pid for pid, _, _ in out}
    assert os.getpid() not in pids
    assert len(pids) == 2
    assert {parent for _, parent, _ in out} == {os.getpid()}
    assert {flag for _, _, flag in out} == {"1"}


def test_pool_is_reused_between_calls():
    first = {p for p, _, _ in Parallel(n_jobs=2)(delayed(whoami)(i) for i in range(4))}
    second = {p for p, _, _ in Parallel(n_jobs=2)(delayed(whoami)(i) for i in range(4))}
    assert first == second


class ExitOnUnpickle:
    def __reduce__(self):
        return os._exit, (5,)


class FailOnPickle:
    def __reduce__(self):
        raise ValueError("this argument refuses to be pickled")


def _return_lock():
    return threading.Lock()


def _sigkill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def _identity(x):
    return x


CRASHES = {
    "exit-in-task": (delayed(os._exit)(3), TerminatedWorkerError, "exited with code 3"),
    "segfault-in-task": (delayed(ctypes.string_at)(0), TerminatedWorkerError, "SIGSEGV"),
    "sigkill-in-task": (delayed(_sigkill_self)(), TerminatedWorkerError, "SIGKILL"),
    "exit-at-unpickle": (
        delayed(_identity)(ExitOnUnpickle()),
        TerminatedWorkerError,
        "exited with code 5",
    ),
    "error-at-pickle": (
        delayed(_identity)(FailOnPickle()),
        pickle.PicklingError,
        "refuses to be pickled",
    ),
    "error-at-result-pickle": (delayed(_return_lock)(), pickle.PicklingError, "lock"),
}


@pytest.mark.parametrize("case", sorted(CRASHES))
def test_crashes_fail_the_call_clearly_and_the_next_call_works(case):
    task, error, message = CRASHES[case]
    tasks = [delayed(time.sleep)(0.01) for _ in range(3)] + [task]
    with pytest.raises(error, match=message):
        Parallel(n_jobs=2)(tasks)
    assert Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(10)) == list(range(10))


def test_kill_9_of_a_worker_from_outside():
    pids = {p for p, _, _ in Parallel(n_jobs=2)(delayed(whoami)(i) for i in range(4))}
    victim = min(pids)

    def killer():
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with pytest.raises(TerminatedWorkerError, match=rf"pid {victim}.*SIGKILL"):
            Parallel(n_jobs=2)(delayed(time.sleep)(5) for _ in range(4))
    finally:
        thread.join()
    assert wait_until(lambda: not any(alive(pid) for pid in pids))
    fresh = {p for p, _, _ in Parallel(n_jobs=2)(delayed(whoami)(i) for i in range(4))}
    assert fresh.isdisjoint(pids)


def test_a_worker_dying_while_idle_does_not_break_the_next_call():
    pids = {p for p, _, _ in Parallel(n_jobs=2)(delayed(whoami)(i) for i in range(4))}
    os.kill(min(pids), signal.SIGKILL)
    assert wait_until(lambda: getattr(_reusable_pool._pool, "broken", None) is not None)
    assert Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(6)) == list(range(6))


def test_timeout_kills_the_stuck_workers():
    pids = {p for p, _, _ in Parallel(n_jobs=2)(delayed(whoami)(i) for i in range(4))}
    with pytest.raises(TimeoutError):
        Parallel(n_jobs=2, timeout=1)(delayed(time.sleep)(30) for _ in range(4))
    assert wait_until(lambda: not any(alive(pid) for pid in pids))
    assert Parallel(n_jobs=2)(delayed(abs)(-1) for _ in range(2)) == [1, 1]


def test_exceptions_keep_their_type_and_worker_traceback():
    with pytest.raises(ZeroDivisionError) as excinfo:
        Parallel(n_jobs=2)(delayed(divmod)(1, i) for i in [1, 2, 0, 3])
    assert "divmod" in str(excinfo.value.__cause__) or "ZeroDivisionError" in str(
        excinfo.value.__cause__
    )


def test_lambdas_and_closures_travel():
    base = 100
    out = Parallel(n_jobs=2)(delayed(lambda x: x + base)(i) for i in range(5))
    assert out == [100, 101, 102, 103, 104]


def test_ctrl_c_stops_the_call_promptly_and_leaves_no_worker(tmp_path):
    pid_file = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, time
        from joblib_rs import Parallel, delayed

        def work(i):
            open({str(pid_file)!r}, "a").write(f"{{os.getpid()}}\\n")
            time.sleep(60)

        try:
            Parallel(n_jobs=2)(delayed(work)(i) for i in range(8))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: pid_file.exists() and len(pid_file.read_text().split()) >= 2)
        pids = [int(p) for p in pid_file.read_text().split()]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert "interrupted" in out
        assert wait_until(lambda: not any(alive(pid) for pid in pids))
    finally:
        if proc.poll() is None:
            proc.kill()


def _append_to(shared, value):
    shared.append(value)
    return len(shared)


def test_multiprocessing_manager_proxies_work_in_workers():
    import multiprocessing

    with multiprocessing.Manager() as manager:
        shared = manager.list()
        Parallel(n_jobs=2)(delayed(_append_to)(shared, i) for i in range(6))
        assert sorted(shared) == list(range(6))


def _inner_loky_parents(_):
    return os.getpid(), set(
        Parallel(n_jobs=2, backend="loky")(delayed(os.getppid)() for _ in range(4))
    )


def test_explicit_loky_inside_a_loky_worker_starts_a_nested_pool():
    for outer_pid, inner_parents in Parallel(n_jobs=2)(
        delayed(_inner_loky_parents)(i) for i in range(2)
    ):
        assert inner_parents == {outer_pid}
