"""Process backends, nested calls and the reusable worker threads."""

import os
import threading
import time
import warnings

import pytest

from joblib_rs import Parallel, delayed, parallel_config
from joblib_rs._parallel_backends import (
    AutoBatchingMixin,
    LokyBackend,
    SequentialBackend,
    ThreadingBackend,
)
from joblib_rs._threads import lease_threads
from joblib_rs.parallel import get_active_backend

WAIT = 30

_initialized_value = None


def _set_value(value):
    global _initialized_value
    _initialized_value = value


def _get_value(_):
    return _initialized_value


def _env(name):
    return os.environ.get(name)


def _pid(_):
    return os.getpid()


def _active_backend_and_n_jobs():
    backend, n_jobs = get_active_backend()
    return type(backend).__name__, backend.nesting_level, n_jobs


def _nested_process_call(_):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pids = Parallel(n_jobs=2, backend="multiprocessing")(
            delayed(os.getpid)() for _ in range(3)
        )
    return len(set(pids)), [str(w.message) for w in caught]


def _inner_parallel(i):
    return sum(Parallel(n_jobs=2)(delayed(abs)(-j) for j in range(i)))


# ----------------------------------------------------------------------------- processes


@pytest.mark.parametrize("backend", ["multiprocessing", "loky"])
def test_process_backends_run_in_other_processes(backend):
    pids = Parallel(n_jobs=2, backend=backend, batch_size=1)(delayed(_pid)(i) for i in range(8))
    assert os.getpid() not in pids


@pytest.mark.parametrize("backend", ["multiprocessing", "loky"])
def test_lambdas_and_closures_travel_with_cloudpickle(backend):
    offset = 10
    out = Parallel(n_jobs=2, backend=backend)(delayed(lambda x: x + offset)(i) for i in range(6))
    assert out == [10, 11, 12, 13, 14, 15]


@pytest.mark.parametrize("backend", ["multiprocessing", "loky"])
def test_initializer_passes_through_backend_kwargs(backend):
    out = Parallel(n_jobs=2, backend=backend, initializer=_set_value, initargs=(42,))(
        delayed(_get_value)(i) for i in range(4)
    )
    assert out == [42] * 4


def test_initializer_through_parallel_config():
    with parallel_config(
        backend="multiprocessing", n_jobs=2, initializer=_set_value, initargs=(7,)
    ):
        out = Parallel()(delayed(_get_value)(i) for i in range(3))
    assert out == [7, 7, 7]


def test_unknown_pool_option_is_named():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['workers'\]"):
        Parallel(n_jobs=2, backend="multiprocessing", workers=3)([delayed(abs)(1)])


def test_multiprocessing_context_as_backend():
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = Parallel(n_jobs=2, backend=ctx)(delayed(abs)(-i) for i in range(4))
    assert out == [0, 1, 2, 3]


def test_loky_limits_blas_threads_in_workers():
    with parallel_config(backend="loky", n_jobs=2, inner_max_num_threads=3):
        out = Parallel()(delayed(_env)("OMP_NUM_THREADS") for _ in range(2))
    assert out == ["3", "3"]


def test_loky_rejects_timeout_passed_to_configure():
    backend = LokyBackend()
    with pytest.raises(ValueError, match="idle_worker_timeout"):
        backend.configure(n_jobs=2, parallel=None, timeout=1)


def test_auto_batching_in_processes_keeps_results():
    p = Parallel(n_jobs=2, backend="loky")
    assert p(delayed(abs)(-i) for i in range(3000)) == list(range(3000))
    assert p.n_dispatched_batches < 3000


# ----------------------------------------------------------------------------- nesting


def test_nested_calls_use_threads_then_sequential():
    def outer(_):
        level1 = _active_backend_and_n_jobs()
        inner = Parallel(n_jobs=2)(delayed(_active_backend_and_n_jobs)() for _ in range(2))
        return level1, inner

    results = Parallel(n_jobs=2, backend="threading")(delayed(outer)(i) for i in range(2))
    for level1, inner in results:
        assert level1 == ("ThreadingBackend", 1, None)
        assert inner == [("SequentialBackend", 2, None)] * 2


def test_inner_default_parallel_is_sequential_inside_workers():
    def outer(_):
        p = Parallel()
        return p.n_jobs, type(p._backend).__name__

    out = Parallel(n_jobs=2, backend="threading")(delayed(outer)(i) for i in range(2))
    assert out == [(1, "ThreadingBackend")] * 2


def test_nested_threads_do_not_deadlock():
    def outer(i):
        return sum(
            Parallel(n_jobs=2, backend="threading", batch_size=1)(
                delayed(abs)(-j) for j in range(i)
            )
        )

    out = Parallel(n_jobs=2, backend="threading", batch_size=1)(
        delayed(outer)(i) for i in range(20)
    )
    assert out == [i * (i - 1) // 2 for i in range(20)]


def test_nested_inside_processes_runs_on_threads():
    out = Parallel(n_jobs=2, backend="loky")(delayed(_inner_parallel)(i) for i in range(5))
    assert out == [i * (i - 1) // 2 for i in range(5)]


def test_process_pool_inside_a_worker_process_falls_back_to_one_job():
    out = Parallel(n_jobs=2, backend="multiprocessing")(
        delayed(_nested_process_call)(i) for i in range(2)
    )
    for n_pids, messages in out:
        assert n_pids == 1
        assert messages == [
            "Multiprocessing-backed parallel loops cannot be nested, setting n_jobs=1"
        ]


def test_multiprocessing_inside_a_loky_worker_falls_back_with_a_warning():
    out = Parallel(n_jobs=2, backend="loky")(delayed(_nested_process_call)(i) for i in range(2))
    for n_pids, messages in out:
        assert n_pids == 1
        assert messages == [
            "Multiprocessing-backed parallel loops cannot be nested, below loky, setting n_jobs=1"
        ]


def test_process_backend_below_threads_falls_back_with_a_warning():
    def outer(_):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pids = Parallel(n_jobs=2, backend="loky")(delayed(os.getpid)() for _ in range(2))
        return set(pids), [str(w.message) for w in caught]

    for pids, messages in Parallel(n_jobs=2, backend="threading")(
        delayed(outer)(i) for i in range(2)
    ):
        assert pids == {os.getpid()}
        assert messages == [
            "Loky-backed parallel loops cannot be nested below threads, setting n_jobs=1"
        ]


# ----------------------------------------------------------------------------- batching policy


def test_auto_batching_policy():
    class Policy(AutoBatchingMixin, SequentialBackend):
        MIN_IDEAL_BATCH_DURATION = 0.2
        MAX_IDEAL_BATCH_DURATION = 2.0

    policy = Policy()
    assert policy.compute_batch_size() == 1
    policy.batch_completed(1, 0.01)  # far too fast: grow, at most doubling
    assert policy.compute_batch_size() == 2
    policy.batch_completed(2, 0.15)
    assert policy.compute_batch_size() == 4  # min(2 * 2, int(2 * 0.2 / 0.15) * 2)
    policy.batch_completed(4, 10.0)  # far too slow: shrink at once
    assert policy.compute_batch_size() == 1
    policy.batch_completed(8, 0.001)  # a stale size is ignored
    assert policy.compute_batch_size() == 1
    policy.reset_batch_stats()
    assert policy._effective_batch_size == 1


# ----------------------------------------------------------------------------- worker threads


def test_thread_lease_runs_work_and_reports_errors():
    lease = lease_threads(2)
    results = []
    done = threading.Semaphore(0)

    def callback(out):
        results.append(out)
        done.release()

    lease.submit(lambda: 5, callback)
    lease.submit(lambda: 1 / 0, callback)
    assert done.acquire(timeout=WAIT)
    assert done.acquire(timeout=WAIT)
    lease.release()
    by_ok = dict(results)
    assert by_ok[True] == 5
    assert isinstance(by_ok[False], ZeroDivisionError)


def test_closed_lease_is_not_reused_and_drops_queued_work():
    gate = threading.Event()
    ran = []
    lease = lease_threads(1)
    lease.submit(lambda: gate.wait(WAIT), None)
    lease.submit(lambda: ran.append(1), None)
    lease.close()
    gate.set()
    for t in lease._threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert ran == []
    assert lease_threads(1) is not lease


def test_threading_backend_releases_threads_after_a_call():
    backend = ThreadingBackend()
    Parallel(n_jobs=2, backend=backend)(delayed(abs)(i) for i in range(10))
    assert backend._lease is None


def test_fork_child_does_not_reuse_parent_threads():
    # Warm the idle registry, then fork: the child must start its own threads.
    Parallel(n_jobs=2, backend="threading")(delayed(abs)(i) for i in range(4))
    out = Parallel(n_jobs=2, backend="multiprocessing")(
        delayed(_threaded_sum_in_child)(i) for i in range(2)
    )
    assert out == [6, 6]


def _threaded_sum_in_child(_):
    with parallel_config(backend="threading", n_jobs=2):
        # Inside a worker process: the nested default is threads at nesting level 1.
        return sum(Parallel(n_jobs=2, backend="threading")(delayed(abs)(i) for i in range(4)))


# ----------------------------------------------------------------------------- loky pool reuse


def _pids_of_two_workers(backend="loky", **kwargs):
    # batch_size=1 and a barrier-free short sleep-free task: collect pids over many tasks.
    return set(
        Parallel(n_jobs=2, backend=backend, batch_size=1, **kwargs)(
            delayed(_pid)(i) for i in range(40)
        )
    )


def test_loky_keeps_its_worker_processes_between_calls():
    from joblib_rs._parallel_backends import _reusable_pool

    first = _pids_of_two_workers()
    pool_pids = set(_reusable_pool._pool.pids)
    # A fast worker may take every tiny task of a call: compare with the pool's own workers.
    assert first <= pool_pids
    second = _pids_of_two_workers()
    assert second <= pool_pids
    assert set(_reusable_pool._pool.pids) == pool_pids
    # The legacy multiprocessing backend starts a new pool for every call, as joblib's does.
    assert not (_pids_of_two_workers("multiprocessing") & first)


def test_loky_pool_is_replaced_after_an_error():
    before = _pids_of_two_workers()
    with pytest.raises(ZeroDivisionError):
        Parallel(n_jobs=2, backend="loky")(delayed(divmod)(1, i) for i in [1, 0, 2])
    after = _pids_of_two_workers()
    assert not (before & after)


def test_loky_pool_stops_after_the_idle_timeout():
    from joblib_rs._parallel_backends import _reusable_pool

    _pids_of_two_workers(idle_worker_timeout=0.1)
    assert _reusable_pool._pool is not None
    deadline = time.monotonic() + WAIT
    while _reusable_pool._pool is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _reusable_pool._pool is None
    # A later call starts a fresh pool.
    assert len(_pids_of_two_workers()) >= 1


def test_concurrent_loky_calls_each_get_workers():
    results = {}

    def run(name):
        results[name] = Parallel(n_jobs=2, backend="loky")(delayed(abs)(-i) for i in range(50))

    # A loky call from a non-main thread at nesting level 0 is allowed, as in joblib.
    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert results == {0: list(range(50)), 1: list(range(50))}


def test_unpicklable_argument_is_reported_in_the_caller():
    import pickle

    with pytest.raises(pickle.PicklingError, match="Could not pickle the task") as info:
        Parallel(n_jobs=2, backend="multiprocessing", batch_size=1)(
            delayed(abs)(threading.Lock()) for _ in range(5)
        )
    assert "cannot pickle '_thread.lock' object" in str(info.value.__cause__)
    # The backend is usable again afterwards.
    assert Parallel(n_jobs=2, backend="loky")(delayed(abs)(-i) for i in range(3)) == [0, 1, 2]


def test_results_from_processes_keep_numpy_byte_order():
    np = pytest.importorskip("numpy")
    x = np.arange(6).reshape((2, 3)).view(">i4")
    out = Parallel(n_jobs=2, backend="loky")(delayed(_identity)(x) for _ in range(3))
    for y in out:
        assert y.dtype.byteorder == ">"
        np.testing.assert_array_equal(x, y)


def _identity(x):
    return x


def test_default_multiprocessing_context_is_passed_to_backends():
    import multiprocessing

    p = Parallel(n_jobs=2, backend="multiprocessing")
    assert p._backend_kwargs["context"].get_start_method() == multiprocessing.get_start_method()


def test_thread_job_get_waits_for_the_outcome():
    lease = lease_threads(1)
    gate = threading.Event()
    job = lease.submit(lambda: gate.wait(WAIT) and "done", None)
    with pytest.raises(TimeoutError):
        job.get(timeout=0.01)
    gate.set()
    assert job.get(timeout=WAIT) == "done"
    failing = lease.submit(lambda: 1 / 0, None)
    with pytest.raises(ZeroDivisionError):
        failing.get(timeout=WAIT)
    lease.release()


def test_threading_subclass_without_retrieve_callback():
    from joblib_rs import parallel as parallel_module
    from joblib_rs import register_parallel_backend

    class PlainThreads(ThreadingBackend):
        supports_retrieve_callback = False

    register_parallel_backend("plain-threads", PlainThreads)
    try:
        out = Parallel(n_jobs=2, backend="plain-threads")(delayed(abs)(-i) for i in range(30))
        assert out == list(range(30))
        with pytest.raises(ZeroDivisionError):
            Parallel(n_jobs=2, backend="plain-threads")(delayed(divmod)(1, i) for i in [1, 0])
    finally:
        del parallel_module.BACKENDS["plain-threads"]


def _interrupt_parent_on_first(i):
    import signal
    import time

    if i == 0:
        os.kill(os.getppid(), signal.SIGINT)
    time.sleep(0.05)
    return i


# CPython reports (and drops) a KeyboardInterrupt raised inside a weakref callback as
# "unraisable"; joblib_rs records it and raises it again from the call (_interrupts.py), so
# the report is expected whenever the signal lands there.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_keyboard_interrupt_stops_process_workers(backend):
    import multiprocessing

    # Idle workers kept by earlier 'loky' calls may exist; the interrupted call may reuse them.
    before = set(multiprocessing.active_children()) | _rust_pool_workers()
    with pytest.raises(KeyboardInterrupt):
        Parallel(n_jobs=2, backend=backend, batch_size=1)(
            delayed(_interrupt_parent_on_first)(i) for i in range(500)
        )
    # The workers of the interrupted call were killed, not left running the remaining tasks
    # ('loky' workers are not multiprocessing children: they are found through /proc).
    assert set(multiprocessing.active_children()) <= before
    if backend == "loky":
        # The interrupted call's pool (possibly the idle one it reused) is gone entirely.
        deadline = time.monotonic() + 20
        while _rust_pool_workers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _rust_pool_workers()
    assert Parallel(n_jobs=2, backend=backend)(delayed(abs)(-i) for i in range(3)) == [0, 1, 2]


def _rust_pool_workers() -> set[int]:
    """Live children of this process running the joblib-rs worker."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == os.getpid() and b"joblib_rs._worker" in cmdline:
            found.add(int(entry))
    return found


def test_joblib_start_method_environment_variable(monkeypatch):
    from joblib_rs._parallel_backends import default_mp_context

    monkeypatch.setenv("JOBLIB_START_METHOD", "spawn")
    assert default_mp_context().get_start_method() == "spawn"
    p = Parallel(n_jobs=2, backend="multiprocessing")
    assert p._backend_kwargs["context"].get_start_method() == "spawn"
    assert p(delayed(abs)(-i) for i in range(3)) == [0, 1, 2]


def test_idle_threads_are_bounded():
    from joblib_rs import _threads

    leases = [lease_threads(3) for _ in range(4)]
    for lease in leases:
        lease.release()
    # At most two idle leases of one size are kept; the others are closed.
    kept = [lease for lease in leases if not lease._closed]
    assert len(kept) <= _threads._MAX_IDLE_PER_SIZE
    assert sum(size * len(idle) for size, idle in _threads._idle.items()) <= (
        _threads._MAX_IDLE_THREADS
    )


def _is_memmap(array):
    import numpy as np

    return isinstance(array, np.memmap)


def test_multiprocessing_memmaps_large_arguments(tmp_path):
    np = pytest.importorskip("numpy")
    p = Parallel(n_jobs=2, backend="multiprocessing", max_nbytes=1e6, temp_folder=str(tmp_path))
    assert p(delayed(_is_memmap)(np.ones(int(i))) for i in [1e2, 1e4, 1e6]) == [
        False,
        False,
        True,
    ]
    # The call's shared-memory files are gone when it ends.
    assert list(tmp_path.iterdir()) == []
    big = np.arange(300_000, dtype=np.float64)
    out = Parallel(n_jobs=2, backend="multiprocessing", max_nbytes=None)(
        delayed(_is_memmap)(a) for a in [big, big[:10]]
    )
    assert out == [False, False]


def test_multiprocessing_large_results_come_back_intact(tmp_path):
    np = pytest.importorskip("numpy")
    out = Parallel(
        n_jobs=2, backend="multiprocessing", max_nbytes="1K", temp_folder=str(tmp_path)
    )(delayed(np.full)(100_000, i, dtype=np.int64) for i in range(4))
    for i, array in enumerate(out):
        assert array.shape == (100_000,)
        assert (array == i).all()
    assert list(tmp_path.iterdir()) == []
