"""joblib 1.6's backend API surface and environment switches, with real workers.

``configure``'s signature for subclasses, ``PoolManagerMixin``, ``get_status``,
``MAYBE_AVAILABLE_BACKENDS``, ``DEFAULT_MP_CONTEXT``, ``JOBLIB_MULTIPROCESSING=0``,
``LOKY_PICKLER=<module>`` and ``multiprocessing.Manager`` proxies in pool workers.
"""

import multiprocessing
import os
import subprocess
import sys
import textwrap
from multiprocessing.pool import ThreadPool

import pytest

from joblib_rs import Parallel, delayed, parallel_config, register_parallel_backend
from joblib_rs import parallel as parallel_module
from joblib_rs._parallel_backends import (
    LokyBackend,
    MultiprocessingBackend,
    ParallelBackendBase,
    PoolManagerMixin,
    ThreadingBackend,
)

WAIT = 60


def _square(x):
    return x * x


def _pid(_):
    return os.getpid()


@pytest.mark.parametrize("base", [LokyBackend, MultiprocessingBackend, ThreadingBackend])
def test_subclasses_pass_joblib_16_configure_arguments_positionally(base):
    seen = []

    class Custom(base):
        def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **kw):
            seen.append((prefer, require))
            return super().configure(n_jobs, parallel, prefer, require, **kw)

    register_parallel_backend("custom-configure", Custom)
    try:
        with parallel_config(backend="custom-configure"):
            out = Parallel(n_jobs=2)(delayed(_square)(i) for i in range(6))
    finally:
        del parallel_module.BACKENDS["custom-configure"]
    assert out == [0, 1, 4, 9, 16, 25]
    assert seen and seen[0] == (None, None)


def test_base_configure_accepts_unknown_keywords():
    class Minimal(ParallelBackendBase):
        def effective_n_jobs(self, n_jobs):
            return 1

    assert Minimal().configure(2, None, "threads", None, anything=1) == 1


class ThreadPoolBackend(PoolManagerMixin, ParallelBackendBase):
    """joblib's pre-1.0 style: a multiprocessing-like pool in self._pool."""

    supports_retrieve_callback = True
    uses_threads = True

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **kw):
        n_jobs = self.effective_n_jobs(n_jobs)
        self.parallel = parallel
        self._pool = ThreadPool(n_jobs)
        return n_jobs


def test_pool_manager_mixin_backend_runs_and_reports_errors():
    backend = ThreadPoolBackend()
    with parallel_config(backend=backend):
        assert Parallel(n_jobs=2)(delayed(_square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
        with pytest.raises(ZeroDivisionError):
            Parallel(n_jobs=2)(delayed(divmod)(1, i) for i in [1, 0, 2])
    assert backend._pool is None  # terminated after the call


def test_batch_completion_callback_get_status_times_out_pending_batches():
    from joblib_rs._call import ParallelCall
    from joblib_rs.parallel import TASK_DONE, TASK_ERROR, TASK_PENDING, BatchCompletionCallBack

    call = ParallelCall(Parallel(n_jobs=2, backend="threading"), None)
    tracker = BatchCompletionCallBack(0.0, 1, call)
    assert tracker.get_status(None) == TASK_PENDING
    assert tracker.get_status(3600) == TASK_PENDING  # starts the clock
    assert tracker.get_status(-1) == TASK_ERROR
    with pytest.raises(TimeoutError):
        tracker.get_result(None)
    finished = BatchCompletionCallBack(0.0, 1, call)
    finished._register_outcome(TASK_DONE, [1])
    assert finished.get_status(-1) == TASK_DONE


def test_module_level_names_of_joblib_16():
    assert parallel_module.MAYBE_AVAILABLE_BACKENDS == {"multiprocessing", "loky"}
    assert parallel_module.DEFAULT_MP_CONTEXT is None  # JOBLIB_START_METHOD unset


def _run_script(code, **env):
    full_env = {**os.environ, **env}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        env=full_env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


def test_joblib_multiprocessing_0_runs_every_call_sequentially():
    lines = _run_script(
        """
        import os, threading, warnings
        import joblib_rs as joblib
        from joblib_rs import parallel

        p = joblib.Parallel(n_jobs=2)
        where = p(joblib.delayed(lambda i: (os.getpid(), threading.get_ident()))(i)
                  for i in range(4))
        print(set(where) == {(os.getpid(), threading.get_ident())})
        print(type(p._backend).__name__, parallel.DEFAULT_BACKEND)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = joblib.Parallel(n_jobs=2, backend="loky")(
                joblib.delayed(os.getpid)() for _ in range(3))
        print(set(out) == {os.getpid()}, any("not available" in str(w.message) for w in caught))
        """,
        JOBLIB_MULTIPROCESSING="0",
    )
    assert lines == ["True", "SequentialBackend threading", "True True"]


def test_loky_pickler_names_the_module_whose_pickler_sends_tasks(tmp_path, monkeypatch):
    module = tmp_path / "counting_pickler.py"
    module.write_text(
        textwrap.dedent(
            """
            import pickle

            CREATED = []


            class Pickler(pickle.Pickler):
                def __init__(self, file, protocol=None, **kwargs):
                    super().__init__(file, protocol, **kwargs)
                    CREATED.append(protocol)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LOKY_PICKLER", "counting_pickler")
    import counting_pickler

    out = Parallel(n_jobs=2, batch_size=1)(delayed(_square)(i) for i in range(4))
    assert out == [0, 1, 4, 9]
    assert len(counting_pickler.CREATED) == 4  # one pickler per task sent
    # The standard pickler cannot send a lambda: the module's pickler really is the one used.
    with pytest.raises(Exception, match="pickle"):
        Parallel(n_jobs=2)(delayed(lambda x: x)(i) for i in range(2))


def test_loky_pickler_naming_a_missing_module_fails_clearly(monkeypatch):
    monkeypatch.setenv("LOKY_PICKLER", "no_such_pickler_module_here")
    with pytest.raises(Exception, match="LOKY_PICKLER"):
        Parallel(n_jobs=2)(delayed(_square)(i) for i in range(2))


def _use_proxies(i, shared, items, lock):
    with lock:
        shared[i] = os.getpid()
    items.put(i)
    return i


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_manager_proxies_work_in_workers(backend):
    with multiprocessing.Manager() as manager:
        shared, items, lock = manager.dict(), manager.Queue(), manager.Lock()
        out = Parallel(n_jobs=2, backend=backend)(
            delayed(_use_proxies)(i, shared, items, lock) for i in range(6)
        )
        assert out == list(range(6))
        assert sorted(shared.keys()) == list(range(6))
        assert os.getpid() not in set(shared.values())
        assert sorted(items.get(timeout=WAIT) for _ in range(6)) == list(range(6))


def test_aborting_flag_after_closing_a_generator():
    import gc
    import threading

    release = threading.Event()
    parallel = Parallel(2, backend="threading", return_as="generator")
    assert not parallel._aborting
    gen = parallel(delayed(release.wait)(30) for _ in range(6))
    # Dispatching starts with the call; closing the generator before reading aborts it.
    with pytest.warns(UserWarning):
        gen.close()
    del gen
    gc.collect()
    release.set()
    assert parallel._aborting
    done = Parallel(2, backend="threading")(delayed(abs)(-i) for i in range(3))
    assert done == [0, 1, 2]
