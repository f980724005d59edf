"""register_joblib_backend(): the real joblib's Parallel (and scikit-learn) on joblib-rs's pool."""

from __future__ import annotations

import os

import pytest

joblib = pytest.importorskip("joblib")

import joblib_rs  # noqa: E402
from joblib_rs import register_joblib_backend  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", autouse=True)
def _registered():
    register_joblib_backend()
    yield
    # Leave joblib as we found it for the other test modules.
    joblib.parallel.BACKENDS.pop("joblib_rs", None)


def in_joblib_rs_worker(i):
    """``(i, whether this runs in a joblib-rs pool worker)``."""
    return i, os.environ.get("JOBLIB_RS_WORKER") == "1"


def fail(i):
    if i == 3:
        raise ZeroDivisionError(f"bad {i}")
    return i


def nested_backend_name(i):
    backend, _ = joblib.parallel.get_active_backend()
    return type(backend).__name__


def test_joblib_parallel_runs_on_the_joblib_rs_pool():
    with joblib.parallel_config(backend="joblib_rs", n_jobs=2):
        out = joblib.Parallel()(joblib.delayed(in_joblib_rs_worker)(i) for i in range(20))
    assert [i for i, _ in out] == list(range(20))
    assert all(flag for _, flag in out)
    # Explicit backend name, too.
    out = joblib.Parallel(n_jobs=2, backend="joblib_rs")(
        joblib.delayed(in_joblib_rs_worker)(i) for i in range(4)
    )
    assert all(flag for _, flag in out)


def test_verbose_names_the_adapter(capsys):
    with joblib.parallel_config(backend="joblib_rs", n_jobs=2):
        joblib.Parallel(verbose=5)(joblib.delayed(abs)(-i) for i in range(3))
    assert "Using backend JoblibRsBackend with 2 concurrent workers." in capsys.readouterr().err


def test_exceptions_keep_their_type():
    with joblib.parallel_config(backend="joblib_rs", n_jobs=2):
        with pytest.raises(ZeroDivisionError, match="bad 3") as info:
            joblib.Parallel()(joblib.delayed(fail)(i) for i in range(8))
    # The worker's traceback is attached.
    assert "fail" in str(info.value.__cause__)
    # The backend stays usable after the error.
    with joblib.parallel_config(backend="joblib_rs", n_jobs=2):
        assert joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(3)) == [0, 1, 2]


def test_generators_and_context_manager_reuse():
    with joblib.Parallel(n_jobs=2, backend="joblib_rs", return_as="generator") as parallel:
        first = list(parallel(joblib.delayed(in_joblib_rs_worker)(i) for i in range(5)))
        second = list(parallel(joblib.delayed(abs)(-i) for i in range(5)))
    assert [i for i, _ in first] == list(range(5))
    assert second == [0, 1, 2, 3, 4]
    unordered = joblib.Parallel(n_jobs=2, backend="joblib_rs", return_as="generator_unordered")(
        joblib.delayed(abs)(-i) for i in range(6)
    )
    assert sorted(unordered) == list(range(6))


def test_one_job_falls_back_to_sequential():
    with joblib.parallel_config(backend="joblib_rs", n_jobs=1):
        out = joblib.Parallel()(joblib.delayed(in_joblib_rs_worker)(i) for i in range(3))
    # Run inline, in this process.
    assert out == [(0, False), (1, False), (2, False)]


def test_nested_calls_use_threads_in_workers():
    with joblib.parallel_config(backend="joblib_rs", n_jobs=2):
        out = joblib.Parallel()(joblib.delayed(nested_backend_name)(i) for i in range(2))
    assert out == ["ThreadingBackend", "ThreadingBackend"]


def omp_threads(i):
    return os.environ.get("OMP_NUM_THREADS")


def test_inner_max_num_threads_reaches_the_workers():
    with joblib.parallel_config(backend="joblib_rs", n_jobs=2, inner_max_num_threads=3):
        out = joblib.Parallel()(joblib.delayed(omp_threads)(i) for i in range(2))
    assert out == ["3", "3"]


def test_large_arrays_go_through_shared_memory():
    np = pytest.importorskip("numpy")
    data = np.arange(300_000, dtype=np.float64)  # 2.4 MB, above max_nbytes='1M'
    with joblib.parallel_config(backend="joblib_rs", n_jobs=2):
        out = joblib.Parallel()(joblib.delayed(type)(data) for _ in range(2))
    # The workers got memory maps of the temp file, not pickled copies.
    assert out == [np.memmap, np.memmap]


def test_joblib_rs_name_is_joblib_only():
    # Registering in joblib does not touch joblib-rs's own registry.
    assert "joblib_rs" not in joblib_rs.parallel.BACKENDS


def test_scikit_learn_under_the_bridge_matches_joblib():
    pytest.importorskip("sklearn")
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score

    X, y = make_classification(n_samples=300, n_features=12, random_state=0)

    def run(backend):
        with joblib.parallel_config(backend=backend):
            scores = cross_val_score(
                RandomForestClassifier(n_estimators=20, random_state=0), X, y, cv=4, n_jobs=2
            )
            forest = RandomForestClassifier(n_estimators=16, random_state=0, n_jobs=2).fit(X, y)
        return scores, forest.predict_proba(X)

    scores_rs, proba_rs = run("joblib_rs")
    scores_loky, proba_loky = run("loky")
    np = pytest.importorskip("numpy")
    np.testing.assert_array_equal(scores_rs, scores_loky)
    np.testing.assert_array_equal(proba_rs, proba_loky)

    # The folds really ran in joblib-rs's workers: a scorer that reports where it runs.
    def where_scored(estimator, X_test, y_test):
        return float(os.environ.get("JOBLIB_RS_WORKER") == "1")

    with joblib.parallel_config(backend="joblib_rs"):
        flags = cross_val_score(
            RandomForestClassifier(n_estimators=2, random_state=0),
            X,
            y,
            cv=3,
            n_jobs=2,
            scoring=where_scored,
        )
    assert list(flags) == [1.0, 1.0, 1.0]


def test_without_joblib_the_error_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "joblib", None)
    with pytest.raises(ImportError, match="pip install joblib"):
        register_joblib_backend()
