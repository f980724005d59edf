"""parallel_config / parallel_backend, the backend registry, custom backends, effective_n_jobs."""

import concurrent.futures
import threading
import warnings
from multiprocessing.pool import ThreadPool

import pytest

import joblib_rs
from joblib_rs import (
    Parallel,
    ParallelBackendBase,
    delayed,
    effective_n_jobs,
    parallel_backend,
    parallel_config,
    register_parallel_backend,
)
from joblib_rs import parallel as parallel_module
from joblib_rs._parallel_backends import (
    LokyBackend,
    MultiprocessingBackend,
    SequentialBackend,
    ThreadingBackend,
)
from joblib_rs.parallel import get_active_backend


def square(x):
    return x * x


@pytest.fixture
def registry():
    """Restore the backend registry and default after a test that changes them."""
    backends = dict(parallel_module.BACKENDS)
    external = dict(parallel_module.EXTERNAL_BACKENDS)
    default = parallel_module.DEFAULT_BACKEND
    yield
    parallel_module.BACKENDS.clear()
    parallel_module.BACKENDS.update(backends)
    parallel_module.EXTERNAL_BACKENDS.clear()
    parallel_module.EXTERNAL_BACKENDS.update(external)
    parallel_module.DEFAULT_BACKEND = default


# ----------------------------------------------------------------------------- defaults


def test_default_backend_is_loky():
    backend, n_jobs = get_active_backend()
    assert isinstance(backend, LokyBackend)
    assert n_jobs is None
    assert parallel_module.DEFAULT_BACKEND == "loky"
    assert isinstance(Parallel()._backend, LokyBackend)
    assert Parallel().n_jobs == 1


def test_registry_names():
    assert {"loky", "threading", "multiprocessing", "sequential"} <= set(parallel_module.BACKENDS)
    assert "dask" in parallel_module.EXTERNAL_BACKENDS


# ----------------------------------------------------------------------------- parallel_config


def test_parallel_config_sets_backend_and_n_jobs():
    with parallel_config(backend="threading", n_jobs=2):
        p = Parallel()
        assert isinstance(p._backend, ThreadingBackend)
        assert p.n_jobs == 2
        assert p(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
    assert isinstance(Parallel()._backend, LokyBackend)


def test_explicit_parallel_arguments_win_over_the_context():
    with parallel_config(backend="threading", n_jobs=2, verbose=5):
        p = Parallel(n_jobs=3, backend="sequential", verbose=0)
        assert isinstance(p._backend, SequentialBackend)
        assert p.n_jobs == 3
        assert p.verbose == 0


def test_nested_configs_inherit_and_restore():
    with parallel_config(backend="threading", n_jobs=2):
        with parallel_config(verbose=7) as config:
            assert isinstance(config["backend"], ThreadingBackend)
            assert config["n_jobs"] == 2
            assert config["verbose"] == 7
        backend, n_jobs = get_active_backend()
        assert isinstance(backend, ThreadingBackend)
        assert n_jobs == 2
    assert isinstance(get_active_backend()[0], LokyBackend)


def test_parallel_config_as_a_global_setter():
    config = parallel_config(backend="threading", n_jobs=2)
    try:
        assert isinstance(Parallel()._backend, ThreadingBackend)
    finally:
        config.unregister()
    assert isinstance(Parallel()._backend, LokyBackend)


def test_config_is_per_thread():
    seen = []
    with parallel_config(backend="threading", n_jobs=2):
        t = threading.Thread(target=lambda: seen.append(type(get_active_backend()[0])))
        t.start()
        t.join(30)
    assert seen == [LokyBackend]


def test_parallel_backend_defaults_to_all_cpus_and_returns_backend_and_n_jobs():
    with parallel_backend("threading") as (backend, n_jobs):
        assert isinstance(backend, ThreadingBackend)
        assert n_jobs == -1
        assert Parallel().n_jobs == -1
        assert effective_n_jobs() == joblib_rs.cpu_count()
        out = Parallel()(delayed(square)(i) for i in range(5))
    assert out == [0, 1, 4, 9, 16]


def test_backend_instance_in_config():
    backend = ThreadingBackend()
    with parallel_config(backend=backend, n_jobs=2):
        assert Parallel()._backend is backend
        assert backend.nesting_level == 0


def test_unknown_backend_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"Invalid backend: nope, expected one of \[.*'loky'"):
        Parallel(backend="nope")
    with pytest.raises(ValueError, match="Invalid backend: nope"):
        parallel_config(backend="nope")


def test_backend_params_need_a_backend_name():
    with pytest.raises(ValueError, match="only supported when backend is not None"):
        parallel_config(endpoint="x")
    with pytest.raises(ValueError, match="only supported when backend is a string"):
        parallel_config(backend=ThreadingBackend(), endpoint="x")


def test_inner_max_num_threads_only_for_backends_that_support_it():
    with pytest.raises(AssertionError, match="ThreadingBackend does not accept"):
        parallel_config(backend="threading", inner_max_num_threads=2)
    with parallel_config(backend="loky", inner_max_num_threads=3) as config:
        assert config["backend"].inner_max_num_threads == 3


# ----------------------------------------------------------------------------- prefer / require


def test_prefer_threads_selects_threading():
    p = Parallel(n_jobs=2, prefer="threads")
    assert isinstance(p._backend, ThreadingBackend)
    assert p(delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


def test_prefer_is_ignored_for_an_explicit_context_backend():
    with parallel_config(backend="multiprocessing"):
        assert isinstance(Parallel(prefer="threads")._backend, MultiprocessingBackend)


def test_prefer_processes_turns_a_thread_default_into_processes():
    with parallel_config(prefer="processes"):
        assert isinstance(Parallel()._backend, LokyBackend)


def test_require_sharedmem_forces_threads_even_under_a_process_context(capsys):
    with parallel_config(backend="loky", n_jobs=2, verbose=10):
        p = Parallel(require="sharedmem")
    assert isinstance(p._backend, ThreadingBackend)
    # A forced thread backend does not inherit the context's n_jobs.
    assert p.n_jobs == 1
    assert "does not provide shared memory semantics" in capsys.readouterr().out


def test_require_sharedmem_with_an_explicit_process_backend_is_an_error():
    with pytest.raises(ValueError, match="does not support shared memory"):
        Parallel(backend="multiprocessing", require="sharedmem")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefer": "gpu"}, "prefer=gpu is not a valid backend hint"),
        ({"require": "disk"}, "require=disk is not a valid backend constraint"),
        ({"prefer": "processes", "require": "sharedmem"}, "inconsistent settings"),
    ],
)
def test_invalid_hints(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Parallel(**kwargs)


# ----------------------------------------------------------------------------- effective_n_jobs


def test_effective_n_jobs():
    n_cpus = joblib_rs.cpu_count()
    assert effective_n_jobs(1) == 1
    assert effective_n_jobs() == n_cpus
    assert effective_n_jobs(-2) == max(n_cpus - 1, 1)
    assert effective_n_jobs(None) == 1
    with parallel_config(backend="threading", n_jobs=3):
        assert effective_n_jobs(None) == 3
    with parallel_config(backend="sequential"):
        assert effective_n_jobs(4) == 1
    with pytest.raises(ValueError, match="n_jobs == 0"):
        effective_n_jobs(0)


# ----------------------------------------------------------------------------- custom backends


class ExecutorBackend(ParallelBackendBase):
    """A third-party style backend on concurrent.futures, recording the hooks it sees."""

    supports_retrieve_callback = True
    uses_threads = True
    supports_sharedmem = True

    def __init__(self, endpoint=None, api_key=None, **kwargs):
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.api_key = api_key
        self.calls = []
        self._executor = None

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        return 2 if n_jobs is None or n_jobs < 0 else n_jobs

    def configure(self, n_jobs=1, parallel=None, **backend_kwargs):
        self.calls.append(("configure", backend_kwargs.get("initial_value")))
        self.parallel = parallel
        n_jobs = self.effective_n_jobs(n_jobs)
        self._executor = concurrent.futures.ThreadPoolExecutor(n_jobs)
        return n_jobs

    def start_call(self):
        self.calls.append("start_call")

    def stop_call(self):
        self.calls.append("stop_call")

    def submit(self, func, callback=None):
        future = self._executor.submit(func)
        future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future):
        return future.result()

    def terminate(self):
        self.calls.append("terminate")
        self._executor.shutdown(wait=True)


def test_custom_backend_with_constructor_parameters(registry):
    created = []

    def factory(**kwargs):
        created.append(ExecutorBackend(**kwargs))
        return created[-1]

    register_parallel_backend("custom", factory)
    with parallel_backend("custom", endpoint="http://compute", api_key="42"):
        out = Parallel()(delayed(square)(i) for i in range(10))
    assert out == [i * i for i in range(10)]
    backend = created[0]
    assert (backend.endpoint, backend.api_key) == ("http://compute", "42")
    assert backend.calls == [("configure", None), "start_call", "stop_call", "terminate"]


def test_custom_backend_gets_backend_kwargs_and_errors(registry):
    register_parallel_backend("custom", ExecutorBackend)
    p = Parallel(n_jobs=2, backend="custom", initial_value=5)
    assert p(delayed(square)(i) for i in range(3)) == [0, 1, 4]
    assert p._backend.calls[0] == ("configure", 5)
    with pytest.raises(ZeroDivisionError):
        Parallel(n_jobs=2, backend="custom")(delayed(divmod)(1, i) for i in [1, 0, 2])
    gen = Parallel(n_jobs=2, backend="custom", return_as="generator")(
        delayed(square)(i) for i in range(4)
    )
    assert list(gen) == [0, 1, 4, 9]


class LegacyPoolBackend(ParallelBackendBase):
    """A backend without retrieve callback: results are fetched with ``.get()``."""

    uses_threads = True

    def effective_n_jobs(self, n_jobs):
        return 2

    def configure(self, n_jobs=1, parallel=None, **backend_kwargs):
        self.parallel = parallel
        self._pool = ThreadPool(2)
        return 2

    def submit(self, func, callback=None):
        return self._pool.apply_async(func, callback=callback)

    def terminate(self):
        self._pool.terminate()


def test_backend_without_retrieve_callback(registry):
    register_parallel_backend("legacy", LegacyPoolBackend)
    out = Parallel(backend="legacy")(delayed(square)(i) for i in range(20))
    assert out == [i * i for i in range(20)]
    with pytest.raises(ZeroDivisionError):
        Parallel(backend="legacy")(delayed(divmod)(1, i) for i in [1, 0, 2])
    with pytest.raises(ValueError, match="does not support return_as=generator"):
        Parallel(backend="legacy", return_as="generator")
    with pytest.warns(UserWarning, match="does not support timeout"):
        Parallel(backend="legacy", timeout=5)([delayed(square)(2)])


def test_make_default(registry):
    register_parallel_backend("custom", ExecutorBackend, make_default=True)
    assert isinstance(Parallel()._backend, ExecutorBackend)
    assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(3)) == [0, 1, 4]


def test_external_backend_is_registered_on_first_use(registry):
    def register():
        register_parallel_backend("lazy", ExecutorBackend)

    parallel_module.EXTERNAL_BACKENDS["lazy"] = register
    with parallel_config(backend="lazy", n_jobs=2):
        assert Parallel()(delayed(square)(i) for i in range(3)) == [0, 1, 4]
    assert "lazy" in parallel_module.BACKENDS


def test_register_rejects_bad_arguments():
    with pytest.raises(TypeError, match="must be callable"):
        register_parallel_backend("bad", 42)
    with pytest.raises(TypeError, match="must be a str"):
        register_parallel_backend(3, ExecutorBackend)


def test_dask_backend_reports_what_is_missing(monkeypatch):
    # dask is a test dependency: make it look absent (and 'dask' not registered yet).
    import sys

    from joblib_rs.parallel import BACKENDS

    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "joblib_rs._dask", raising=False)
    monkeypatch.delitem(BACKENDS, "dask", raising=False)
    # joblib raises ValueError; the error is an ImportError as well.
    with pytest.raises(ValueError, match="Please install dask") as info:
        parallel_config(backend="dask")
    assert isinstance(info.value, ImportError)


def test_abstract_base_requires_effective_n_jobs():
    class Incomplete(ParallelBackendBase):
        pass

    with pytest.raises(TypeError, match="effective_n_jobs"):
        Incomplete()


def test_module_paths_used_by_third_party_code():
    from joblib_rs._parallel_backends import (  # noqa: F401
        AutoBatchingMixin,
        LokyBackend,
        MultiprocessingBackend,
        ParallelBackendBase,
        SequentialBackend,
        ThreadingBackend,
    )
    from joblib_rs.parallel import (  # noqa: F401
        BACKENDS,
        DEFAULT_BACKEND,
        EXTERNAL_BACKENDS,
        Parallel,
        delayed,
        register_parallel_backend,
    )

    for name in (
        "Parallel",
        "delayed",
        "cpu_count",
        "effective_n_jobs",
        "parallel_config",
        "parallel_backend",
        "register_parallel_backend",
        "ParallelBackendBase",
    ):
        assert name in joblib_rs.__all__
        assert getattr(joblib_rs, name) is not None


def test_signature_matches_joblib():
    import inspect

    import joblib

    ours = inspect.signature(joblib_rs.Parallel)
    theirs = inspect.signature(joblib.Parallel)
    for name, param in theirs.parameters.items():
        assert name in ours.parameters
        assert repr(ours.parameters[name].default) == repr(param.default), name
    for func in ("parallel_config", "parallel_backend", "register_parallel_backend"):
        a = inspect.signature(getattr(joblib_rs, func)).parameters
        b = inspect.signature(getattr(joblib, func)).parameters
        assert list(a) == list(b), func
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert joblib_rs.effective_n_jobs(1) == 1
