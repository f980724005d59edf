"""The 'dask' backend on a real dask.distributed LocalCluster (2 worker processes, 1 thread each).

The cluster starts once for the module. Functions used as tasks live at module level: the
workers are spawned interpreters that import this module by name (multiprocessing's spawn
passes sys.path on), which also lets worker-side counters be read back with ``client.run``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest

distributed = pytest.importorskip("distributed")

from distributed import Client, LocalCluster, get_worker  # noqa: E402

import joblib_rs  # noqa: E402
from joblib_rs import Parallel, delayed, parallel_backend, parallel_config  # noqa: E402
from joblib_rs._dask import DaskDistributedBackend  # noqa: E402
from joblib_rs.parallel import get_active_backend  # noqa: E402

pytestmark = pytest.mark.timeout(120)

N_WORKERS = 2


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=N_WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster) as client:
        yield client


@pytest.fixture(autouse=True)
def _reset_worker_counters(request):
    if "client" in request.fixturenames:
        request.getfixturevalue("client").run(_reset_unpickle_count)


# ---------------------------------------------------------------------------- task functions


def slow_identity(i, delay=0.0):
    time.sleep(delay)
    return i


def where(i):
    """``(i, worker address, process id)`` of the worker that ran the task."""
    time.sleep(0.01)  # long enough for the scheduler to use both workers
    return i, get_worker().address, os.getpid()


def fail_on(i, bad, marker_dir=None, delay=0.0):
    if marker_dir is not None:
        with open(os.path.join(marker_dir, f"started-{i}"), "w"):
            pass
    if i == bad:
        raise KeyError(f"task {i} failed on purpose")
    time.sleep(delay)
    return i


class CustomError(Exception):
    """A user-defined exception type: it must come back as itself."""


def raise_custom(i):
    raise CustomError(f"custom {i}")


# Counts, in each worker process, how many times a Payload was unpickled there: scattering
# unpickles it once per worker, sending it inside each task once per task.
_UNPICKLE_COUNT = [0]


def _reset_unpickle_count():
    _UNPICKLE_COUNT[0] = 0


def _unpickle_count():
    return _UNPICKLE_COUNT[0]


def _rebuild_payload(data):
    _UNPICKLE_COUNT[0] += 1
    return Payload(data)


class Payload:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self):
        return _rebuild_payload, (self.data,)

    def __sizeof__(self):
        return len(self.data)


def payload_len(payload, i):
    return len(payload.data) + i


def unpickles_on_workers(client) -> int:
    return sum(client.run(_unpickle_count).values())


def active_backend_name(i):
    backend, _ = get_active_backend()
    return type(backend).__name__


def inner_task(j, log_dir):
    """Record when it ran, for the overlap check of the nested test."""
    start = time.time()
    time.sleep(0.05)
    name = f"{os.getpid()}-{threading.get_ident()}-{j}"
    with open(os.path.join(log_dir, name), "w") as f:
        f.write(f"{start} {time.time()}")
    return get_worker().address


def outer_task(i, log_dir):
    backend, _ = get_active_backend()
    inner = Parallel()(delayed(inner_task)(f"{i}.{j}", log_dir) for j in range(3))
    return type(backend).__name__, inner


def _square_logged(x, log_dir):
    # One file per real execution: the cache's hits leave no trace.
    with open(os.path.join(log_dir, f"{x}-{os.getpid()}-{threading.get_ident()}"), "w"):
        pass
    time.sleep(0.05)
    return x * x


def cached_square(location, x, log_dir):
    """Call ``_square_logged`` through a Memory on ``location``, from a dask task."""
    from joblib_rs.memory import Memory

    square = Memory(location, verbose=0).cache(_square_logged, ignore=["log_dir"])
    return square(x, log_dir), get_worker().address


# ---------------------------------------------------------------------------- tests


def test_manual_example_processes_false(client, capsys):
    # The manual's §2.6 example, as written (only the import is joblib_rs's).
    code_client = Client(processes=False)
    try:
        import time as time_module

        import joblib_rs as joblib

        def long_running_function(i):
            time_module.sleep(0.1)
            return i

        with joblib.parallel_backend("dask"):
            out = joblib.Parallel(verbose=100)(
                joblib.delayed(long_running_function)(i) for i in range(10)
            )
        n_threads = sum(code_client.nthreads().values())
    finally:
        code_client.close()
    assert out == list(range(10))
    # verbose above 50 prints to stdout, as joblib does.
    err = capsys.readouterr().out
    assert (
        f"[Parallel(n_jobs=-1)]: Using backend DaskDistributedBackend with {n_threads} "
        "concurrent workers." in err
    )
    # joblib 1.x pads the counts ("Done  10 out of  10"); the 0.13 manual did not.
    assert re.search(
        r"\[Parallel\(n_jobs=-1\)\]: Done +10 out of +10 \| elapsed: .*finished\n$", err
    )
    # Closing that client makes the module's client the one in scope again.
    assert distributed.get_client() is client


def test_manual_example_with_scheduler_address(cluster, capsys):
    # The same example on a "remote" scheduler: only the address changes.
    with Client(cluster.scheduler_address):
        with parallel_backend("dask"):
            out = Parallel(verbose=10)(delayed(slow_identity)(i, 0.05) for i in range(10))
    assert out == list(range(10))
    err = capsys.readouterr().err
    assert f"Using backend DaskDistributedBackend with {N_WORKERS} concurrent workers." in err
    assert re.search(r"Done +10 out of +10 \| elapsed: .*finished", err)


def test_results_in_order_on_both_workers(client):
    with parallel_config(backend="dask"):
        out = Parallel(batch_size=1)(delayed(where)(i) for i in range(24))
    assert [i for i, _, _ in out] == list(range(24))
    assert {address for _, address, _ in out} == set(client.nthreads())
    # Worker processes, not the caller.
    assert os.getpid() not in {pid for _, _, pid in out}


def test_backend_instance_and_explicit_client(client):
    backend = DaskDistributedBackend(client=client)
    out = Parallel(backend=backend)(delayed(slow_identity)(i) for i in range(7))
    assert out == list(range(7))
    assert backend.effective_n_jobs(1) == N_WORKERS
    assert Parallel(backend="dask")(delayed(abs)(-i) for i in range(3)) == [0, 1, 2]


def test_effective_n_jobs_is_cluster_size(client):
    with parallel_config(backend="dask"):
        assert joblib_rs.effective_n_jobs() == N_WORKERS
        # n_jobs is ignored: the cluster decides.
        assert joblib_rs.effective_n_jobs(7) == N_WORKERS


def test_lambdas_and_closures_travel(client):
    offset = 10
    with parallel_config(backend="dask"):
        out = Parallel()(delayed(lambda x: x + offset)(i) for i in range(5))
    assert out == [10, 11, 12, 13, 14]


def test_return_as_generator(client):
    with parallel_config(backend="dask"):
        gen = Parallel(return_as="generator", batch_size=1)(
            delayed(slow_identity)(i, 0.01 * (5 - i)) for i in range(6)
        )
        assert not isinstance(gen, list)
        assert list(gen) == list(range(6))
        unordered = Parallel(return_as="generator_unordered", batch_size=1)(
            delayed(slow_identity)(i, 0.2 if i == 0 else 0.0) for i in range(6)
        )
        got = list(unordered)
    assert sorted(got) == list(range(6))


def test_closing_a_generator_early_cancels_the_rest(client, tmp_path):
    with parallel_config(backend="dask"):
        gen = Parallel(return_as="generator", batch_size=1, pre_dispatch="all")(
            delayed(fail_on)(i, -1, str(tmp_path), 0.3) for i in range(20)
        )
        assert next(gen) == 0
        with pytest.warns(UserWarning, match="have been cancelled"):
            gen.close()
    _wait_until(lambda: not _call_keys(client, "batch_of_fail_on"), "the tasks are dropped")
    _wait_until(lambda: not any(client.processing().values()), "the cluster is idle")
    # 20 tasks of 0.3 s on 2 workers would take 3 s: most never started.
    assert len(os.listdir(tmp_path)) < 10


def test_exception_type_and_worker_traceback(client):
    with parallel_config(backend="dask"):
        with pytest.raises(CustomError, match="custom 3") as info:
            Parallel(batch_size=1)(delayed(raise_custom)(i) for i in [3])
        with pytest.raises(KeyError, match="task 2 failed on purpose") as key_info:
            Parallel()(delayed(fail_on)(i, 2) for i in range(5))
    # The worker's traceback travels as the cause, naming the failing function.
    assert "raise_custom" in str(info.value.__cause__)
    assert "fail_on" in str(key_info.value.__cause__)


def _scheduler_keys(dask_scheduler):
    return [str(key) for key in dask_scheduler.tasks]


def _wait_until(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


def _call_keys(client, prefix):
    return [k for k in client.run_on_scheduler(_scheduler_keys) if k.startswith(prefix)]


def test_error_cancels_remaining_tasks(client, tmp_path):
    n_tasks = 40
    with parallel_config(backend="dask"):
        with pytest.raises(KeyError):
            Parallel(batch_size=1, pre_dispatch="all")(
                delayed(fail_on)(i, 0, str(tmp_path), 0.25) for i in range(n_tasks)
            )
    # The scheduler drops the call's tasks (cancellation is asynchronous in dask)...
    _wait_until(lambda: not _call_keys(client, "batch_of_fail_on"), "the tasks are dropped")
    _wait_until(lambda: not any(client.processing().values()), "the cluster is idle")
    # ...so most of them never started: the two workers would have run all 40 in ~5 s.
    started = len(os.listdir(tmp_path))
    assert started < n_tasks // 2


def test_timeout_raises_and_cancels(client):
    with parallel_config(backend="dask"):
        with pytest.raises(TimeoutError):
            Parallel(timeout=0.5, batch_size=1)(delayed(slow_identity)(i, 1.5) for i in range(4))
    _wait_until(lambda: not _call_keys(client, "batch_of_slow_identity"), "the tasks are dropped")
    # Running tasks cannot be interrupted: let them end before the next test.
    _wait_until(lambda: not any(client.processing().values()), "the cluster is idle")


def test_scatter_sends_objects_once_per_worker(client):
    payload = Payload(b"x" * 1000)
    with parallel_backend("dask", scatter=[payload]) as (backend, n_jobs):
        assert n_jobs == -1
        assert isinstance(backend, DaskDistributedBackend)
        out = Parallel(batch_size=1)(delayed(payload_len)(payload, i) for i in range(12))
    assert out == [1000 + i for i in range(12)]
    # Broadcast to each worker, instead of sent with each of the 12 tasks. (Under load, dask
    # may deliver a worker a second copy when a task's own fetch races the broadcast.)
    assert N_WORKERS <= unpickles_on_workers(client) <= 2 * N_WORKERS


def test_big_arguments_are_scattered_automatically(client):
    big = Payload(b"y" * 2_000_000)  # above the default max_nbytes of 1M
    with parallel_config(backend="dask"):
        out = Parallel(batch_size=1)(delayed(payload_len)(big, i) for i in range(12))
    assert out == [2_000_000 + i for i in range(12)]
    # Sent to one worker, copied by dask to the other as needed: not with each of the 12 tasks.
    assert 1 <= unpickles_on_workers(client) <= 2 * N_WORKERS


def test_max_nbytes_sets_the_scatter_threshold(client):
    big = Payload(b"z" * 2_000_000)
    with parallel_config(backend="dask", max_nbytes=None):
        Parallel(batch_size=1)(delayed(payload_len)(big, i) for i in range(6))
    # No scattering: each task carried its own copy.
    assert unpickles_on_workers(client) == 6
    client.run(_reset_unpickle_count)
    small = Payload(b"s" * 2000)
    with parallel_config(backend="dask", max_nbytes="1K"):
        Parallel(batch_size=1)(delayed(payload_len)(small, i) for i in range(6))
    assert 1 <= unpickles_on_workers(client) <= 2 * N_WORKERS < 6


def test_nested_parallel_runs_on_dask_without_oversubscription(client, tmp_path):
    # 4 outer tasks on 2 threads, each waiting on 3 inner tasks: without seceding, the two
    # running outer tasks would block both threads and the inner tasks would never run.
    with parallel_config(backend="dask"):
        out = Parallel(batch_size=1)(delayed(outer_task)(i, str(tmp_path)) for i in range(4))
    assert [name for name, _ in out] == ["DaskDistributedBackend"] * 4
    assert all(len(inner) == 3 for _, inner in out)
    workers = set(client.nthreads())
    assert {address for _, inner in out for address in inner} <= workers
    # Never more inner tasks running at once than the cluster has threads.
    intervals = []
    for name in os.listdir(tmp_path):
        start, end = map(float, (tmp_path / name).read_text().split())
        intervals.append((start, end))
    assert len(intervals) == 12
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= N_WORKERS


def test_submit_kwargs_reach_client_submit(client):
    # Keywords the backend does not know go to Client.submit: here, pin to one worker.
    first = sorted(client.nthreads())[0]
    with parallel_config(backend="dask", workers=[first], allow_other_workers=False):
        out = Parallel(batch_size=1)(delayed(where)(i) for i in range(8))
    assert {address for _, address, _ in out} == {first}


def test_scheduler_host_connects_a_client_of_its_own(cluster, client):
    backend = DaskDistributedBackend(scheduler_host=cluster.scheduler_address)
    try:
        assert backend.client is not client
        assert backend.client.scheduler.address == cluster.scheduler_address
        out = Parallel(backend=backend)(delayed(slow_identity)(i) for i in range(5))
    finally:
        backend.client.close()
    assert out == list(range(5))
    # Not made the default client: the one in scope is unchanged.
    assert distributed.get_client() is client


def test_scatter_must_be_list_or_tuple(client):
    with pytest.raises(TypeError, match="scatter must be a list/tuple, got `set`"):
        parallel_config(backend="dask", scatter={1, 2})


def test_wait_for_workers_timeout():
    with (
        LocalCluster(
            n_workers=0, processes=False, dashboard_address=":0", silence_logs=logging.ERROR
        ) as empty,
        Client(empty, set_as_default=False) as empty_client,
    ):
        backend = DaskDistributedBackend(client=empty_client, wait_for_workers_timeout=0.5)
        with pytest.raises(TimeoutError, match=r"has no worker after 0\.5 seconds") as info:
            Parallel(backend=backend)(delayed(abs)(i) for i in range(2))
    assert "wait_for_workers_timeout=10" in str(info.value)


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_client_in_scope_says_how_to_make_one():
    proc = _run_python(
        """
        import joblib_rs
        try:
            joblib_rs.parallel_config(backend="dask")
        except ValueError as exc:
            print(exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "To use Joblib with Dask first create a Dask Client" in proc.stdout
    assert "client = Client('scheduler-address:8786')" in proc.stdout


def test_without_dask_the_import_error_says_what_to_install():
    proc = _run_python(
        """
        import sys
        sys.modules["distributed"] = None  # as if dask.distributed were not installed
        import joblib_rs
        try:
            joblib_rs.parallel_config(backend="dask")
        except ImportError as exc:
            print(isinstance(exc, ValueError), exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    # joblib's message and type (ValueError), and an ImportError too.
    assert proc.stdout.startswith(
        "True You are trying to use 'dask' as a joblib parallel backend but dask is not "
        "installed. Please install dask to fix this error."
    )


def test_memory_shared_by_tasks_on_different_workers(client, tmp_path):
    location, log_dir = tmp_path / "cache", tmp_path / "log"
    log_dir.mkdir()
    xs = [0, 1, 2] * 4
    with parallel_config(backend="dask"):
        first = Parallel(batch_size=1)(
            delayed(cached_square)(str(location), x, str(log_dir)) for x in xs
        )
        assert [value for value, _ in first] == [x * x for x in xs]
        # Both workers took part, yet each value was computed once: the others waited for
        # the entry's lock and loaded the result.
        assert {address for _, address in first} == set(client.nthreads())
        assert sorted(name.split("-")[0] for name in os.listdir(log_dir)) == ["0", "1", "2"]
        again = Parallel(batch_size=1)(
            delayed(cached_square)(str(location), x, str(log_dir)) for x in xs
        )
    assert [value for value, _ in again] == [x * x for x in xs]
    assert len(os.listdir(log_dir)) == 3


def _process_backend_inside_a_dask_task(backend):
    import warnings

    from joblib_rs import Parallel, delayed

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = Parallel(n_jobs=2, backend=backend)(delayed(abs)(-i) for i in range(3))
    return out, [str(w.message) for w in record]


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_process_backends_inside_a_daemonic_dask_worker_name_the_dask_setting(client, backend):
    from joblib_rs._parallel_backends import inside_dask_worker

    assert not inside_dask_worker()
    task = client.submit(_process_backend_inside_a_dask_task, backend, pure=False)
    out, messages = task.result()
    assert out == [0, 1, 2]
    assert len(messages) == 1 and "distributed.worker.daemon" in messages[0]


def _inc(x):
    return x + 1


def test_batch_names_and_runs_its_calls(client):
    from joblib_rs import delayed
    from joblib_rs._dask import Batch, is_weakrefable

    tasks = [delayed(_inc)(i) for i in range(4)]
    assert repr(Batch(tasks)) == "batch_of__inc_4_calls"
    mixed = [delayed(abs)(i) if i % 2 else delayed(_inc)(i) for i in range(4)]
    assert repr(Batch(mixed)) == "mixed_batch_of__inc_4_calls"
    assert client.submit(Batch(mixed), mixed, pure=False).result() == [1, 1, 3, 3]
    assert is_weakrefable(Batch) and not is_weakrefable(1)
