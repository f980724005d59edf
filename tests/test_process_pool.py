"""The Rust process pool through its Python client, with real worker processes."""

from __future__ import annotations

import ctypes
import functools
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

from joblib_rs import _process_pool
from joblib_rs._process_pool import ProcessPool
from joblib_rs.exceptions import RemoteTraceback, TerminatedWorkerError

from _processes import alive, wait_until

TIMEOUT = 60


@pytest.fixture
def pool():
    p = ProcessPool(2)
    yield p
    p.terminate()


def square(x):
    return x * x


class CustomError(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


def raise_custom():
    raise CustomError(42, "bad things")


def test_runs_functions_lambdas_and_closures(pool):
    offset = 10
    futures = [pool.submit(lambda i=i: square(i) + offset) for i in range(20)]
    assert [f.result(timeout=TIMEOUT) for f in futures] == [i * i + 10 for i in range(20)]


def test_both_workers_are_used(pool):
    futures = [pool.submit(lambda: (time.sleep(0.3), os.getpid())[1]) for _ in range(2)]
    pids = {f.result(timeout=TIMEOUT) for f in futures}
    assert pids == set(pool.pids)
    assert os.getpid() not in pids


def test_exception_keeps_type_attributes_and_remote_traceback(pool):
    future = pool.submit(raise_custom)
    with pytest.raises(CustomError) as excinfo:
        future.result(timeout=TIMEOUT)
    assert excinfo.value.code == 42
    assert excinfo.value.detail == "bad things"
    cause = excinfo.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "raise_custom" in str(cause)
    assert "CustomError" in str(cause)
    # The pool is still healthy.
    assert pool.submit(lambda: 5).result(timeout=TIMEOUT) == 5


def test_unpicklable_argument_raises_before_sending(pool):
    lock = threading.Lock()
    with pytest.raises(pickle.PicklingError) as excinfo:
        pool.submit(lambda: lock)
    assert "lock" in str(excinfo.value)
    assert pool.submit(lambda: "ok").result(timeout=TIMEOUT) == "ok"


def test_unpicklable_result_raises_in_parent_with_worker_traceback(pool):
    future = pool.submit(lambda: threading.Lock())
    with pytest.raises(pickle.PicklingError) as excinfo:
        future.result(timeout=TIMEOUT)
    assert "lock" in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, RemoteTraceback)


def _crash_cases():
    return {
        "exit": (lambda: os._exit(3), "exited with code 3"),
        "segfault": (lambda: ctypes.string_at(0), "SIGSEGV"),
        "abort": (lambda: os.abort(), "SIGABRT"),
        "sigkill-self": (lambda: os.kill(os.getpid(), signal.SIGKILL), "SIGKILL"),
    }


@pytest.mark.parametrize("case", sorted(_crash_cases()))
def test_a_dying_worker_fails_the_tasks_with_terminated_worker_error(case):
    crash, expected = _crash_cases()[case]
    p = ProcessPool(2)
    try:
        slow = p.submit(lambda: time.sleep(30))
        doomed = p.submit(crash)
        for future in (doomed, slow):
            with pytest.raises(TerminatedWorkerError) as excinfo:
                future.result(timeout=TIMEOUT)
            assert expected in str(excinfo.value)
            assert isinstance(excinfo.value, BrokenProcessPool)
        with pytest.raises(TerminatedWorkerError):
            p.submit(lambda: 1)
    finally:
        p.terminate()


def test_memory_error_in_worker_is_an_exception(pool):
    def exhaust():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))
        return bytearray(4 * 2**30)

    with pytest.raises(MemoryError):
        pool.submit(exhaust).result(timeout=TIMEOUT)


def test_workers_get_thread_limits_cwd_and_sys_path(tmp_path, monkeypatch):
    module = tmp_path / "only_here_module.py"
    module.write_text("VALUE = 'imported from the parent sys.path'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    env = _process_pool.worker_environment(2)
    p = ProcessPool(2, env=env)
    try:

        def probe():
            import only_here_module

            return (
                os.environ.get("OMP_NUM_THREADS"),
                os.environ.get("MKL_NUM_THREADS"),
                os.getcwd(),
                only_here_module.VALUE,
            )

        omp, mkl, cwd, value = p.submit(probe).result(timeout=TIMEOUT)
    finally:
        p.terminate()
    assert omp == str(max(len(os.sched_getaffinity(0)) // 2, 1))
    assert mkl == "7"  # the user's setting wins
    assert cwd == str(tmp_path)
    assert value == "imported from the parent sys.path"


def test_workers_have_different_random_states(pool):
    def draw():
        import random

        time.sleep(0.2)
        return os.getpid(), random.random()

    results = dict(f.result(timeout=TIMEOUT) for f in [pool.submit(draw) for _ in range(2)])
    assert len(results) == 2
    assert len(set(results.values())) == 2


def test_workers_never_outlive_a_killed_parent(tmp_path):
    pid_file = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import time
        from joblib_rs._process_pool import ProcessPool
        p = ProcessPool(2)
        futures = [p.submit(lambda: time.sleep(60)) for _ in range(2)]
        open({str(pid_file)!r}, "w").write(" ".join(map(str, p.pids)))
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
        pids = [int(x) for x in pid_file.read_text().split()]
        assert all(alive(pid) for pid in pids)
        parent.kill()
        parent.wait(timeout=TIMEOUT)
        assert wait_until(lambda: not any(alive(pid) for pid in pids))
    finally:
        if parent.poll() is None:
            parent.kill()


def test_terminate_fails_pending_futures_and_kills_workers():
    p = ProcessPool(2)
    pids = p.pids
    futures = [p.submit(lambda: time.sleep(60)) for _ in range(4)]
    p.terminate()
    for future in futures:
        with pytest.raises(RuntimeError, match="terminated"):
            future.result(timeout=TIMEOUT)
    assert wait_until(lambda: not any(alive(pid) for pid in pids))


def test_initializer_runs_in_each_worker():
    def setup(tag):
        import builtins

        builtins._joblib_rs_test_tag = (tag, os.getpid())

    p = ProcessPool(2, initializer=setup, initargs=("configured",))
    try:

        def read_tag():
            import builtins

            time.sleep(0.2)
            return builtins._joblib_rs_test_tag

        tags = [f.result(timeout=TIMEOUT) for f in [p.submit(read_tag) for _ in range(2)]]
        pids = set(p.pids)
    finally:
        p.terminate()
    assert {tag for tag, _ in tags} == {"configured"}
    assert {pid for _, pid in tags} == pids


def test_events_cross_the_boundary_as_typed_values():
    from joblib_rs import _core, _task_pickle, _worker

    kinds = _core.POOL_FRAME_KINDS
    assert kinds == {"INIT": 1, "TASK": 2, "SHUTDOWN": 3, "READY": 10, "DONE": 11, "FAILED": 12}
    assert (_worker.INIT, _worker.TASK, _worker.DONE) == (1, 2, 11)
    init = pickle.dumps({"sys_path": list(sys.path), "array_policy": None})
    raw = _core.ProcessPool(1, sys.executable, ["-m", "joblib_rs._worker"], [], os.getcwd(), init)
    try:
        ready = raw.next_event(TIMEOUT)
        assert ready.kind == _core.PoolEvent.READY and ready.ident == raw.pids[0]
        assert ready.payload is None and ready.exit_how is None
        task_id = raw.submit(_task_pickle.dumps_task(functools.partial(pow, 2, 10)))
        done = raw.next_event(TIMEOUT)
        assert (done.kind, done.ident) == (_core.PoolEvent.DONE, task_id)
        assert _task_pickle.loads_result(done.payload) == 1024
    finally:
        raw.terminate()


def test_workers_carry_loky_names_and_the_parent_authkey_once_they_import_multiprocessing():
    import multiprocessing

    def identity() -> tuple[bool, str, bytes]:  # local: travels by value
        import sys

        imported_before = "multiprocessing" in sys.modules
        import multiprocessing

        process = multiprocessing.current_process()
        return imported_before, process.name, bytes(process.authkey)

    p = ProcessPool(1)
    try:
        (pid,) = p.pids
        imported_before, name, authkey = p.submit(identity).result(timeout=TIMEOUT)
    finally:
        p.terminate()
    assert not imported_before  # a fresh worker does not import it for a plain task
    assert name == f"LokyProcess-{pid}"
    assert authkey == bytes(multiprocessing.current_process().authkey)
