"""The Parallel examples of the joblib 0.13 manual (§2.4 and §3.2), run against joblib-rs.

Examples that need processes run on the thread backend here, as issue 5 asks; the memmapping
examples join with the Rust process pool.
"""

import doctest
import re
import sys
from math import modf, sqrt

import pytest

import joblib_rs as joblib
from joblib_rs import Parallel, delayed, parallel_backend


def test_common_usage():
    assert [sqrt(i**2) for i in range(10)] == Parallel(n_jobs=2, backend="threading")(
        delayed(sqrt)(i**2) for i in range(10)
    )
    assert Parallel(n_jobs=1)(delayed(sqrt)(i**2) for i in range(10)) == [
        float(i) for i in range(10)
    ]


def test_prefer_threads():
    assert Parallel(n_jobs=2, prefer="threads")(delayed(sqrt)(i**2) for i in range(10)) == [
        float(i) for i in range(10)
    ]


def test_parallel_backend_context():
    with parallel_backend("threading", n_jobs=2):
        out = Parallel()(delayed(sqrt)(i**2) for i in range(10))
    assert out == [float(i) for i in range(10)]


def test_shared_memory_semantics():
    shared_set = set()

    def collect(x):
        shared_set.add(x)

    assert (
        Parallel(n_jobs=2, require="sharedmem")(delayed(collect)(i) for i in range(5))
        == [None] * 5
    )
    assert sorted(shared_set) == [0, 1, 2, 3, 4]


def test_reusing_a_pool_of_workers():
    with Parallel(n_jobs=2, backend="threading") as parallel:
        accumulator = 0.0
        n_iter = 0
        while accumulator < 1000:
            results = parallel(delayed(sqrt)(accumulator + i**2) for i in range(5))
            accumulator += sum(results)
            n_iter += 1
    assert (round(accumulator, 3), n_iter) == (1136.597, 14)


def test_reshaping_several_return_values():
    r = Parallel(n_jobs=1)(delayed(modf)(i / 2.0) for i in range(10))
    res, i = zip(*r, strict=True)
    assert res == (0.0, 0.5, 0.0, 0.5, 0.0, 0.5, 0.0, 0.5, 0.0, 0.5)
    assert i == (0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0)


def test_progress_meter(capsys):
    from time import sleep

    Parallel(n_jobs=2, verbose=10, backend="threading")(delayed(sleep)(0.02) for _ in range(10))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[Parallel(n_jobs=2)]: Using backend ThreadingBackend")
    assert re.match(r"\[Parallel\(n_jobs=2\)\]: Done +1 tasks +\| elapsed: +\d+\.\ds$", lines[1])
    assert re.match(
        r"\[Parallel\(n_jobs=2\)\]: Done +10 out of +10 \| elapsed: +\d+\.\ds finished$", lines[-1]
    )


def test_traceback_example():
    from heapq import nlargest

    with pytest.raises(TypeError, match="'int' object is not iterable"):
        Parallel(n_jobs=2, backend="threading")(
            delayed(nlargest)(2, n) for n in (range(4), "abcde", 3)
        )


def test_pre_dispatch_producer_consumer(capsys):
    def producer():
        for i in range(6):
            print(f"Produced {i}")
            yield i

    out = Parallel(n_jobs=2, verbose=100, pre_dispatch="1.5*n_jobs", backend="threading")(
        delayed(sqrt)(i) for i in producer()
    )
    assert out == [sqrt(i) for i in range(6)]
    captured = capsys.readouterr()
    # verbose > 50 prints to stdout, interleaved with the producer's lines.
    lines = captured.out.splitlines()
    produced = [line for line in lines if line.startswith("Produced")]
    assert produced == [f"Produced {i}" for i in range(6)]
    assert lines[0] == (
        "[Parallel(n_jobs=2)]: Using backend ThreadingBackend with 2 concurrent workers."
    )
    # The input is read lazily: the first result is reported before the last item is read.
    first_done = next(i for i, line in enumerate(lines) if "Done" in line)
    assert first_done < lines.index("Produced 5")
    assert re.fullmatch(
        r"\[Parallel\(n_jobs=2\)\]: Done   6 out of   6 \| elapsed: +\d+\.\ds finished", lines[-1]
    )


def test_neg_example_of_parallel_backend():
    from operator import neg

    with parallel_backend("threading"):
        assert Parallel()(delayed(neg)(i + 1) for i in range(5)) == [-1, -2, -3, -4, -5]


def test_docstrings_of_the_parallel_module():
    import joblib_rs.parallel

    failures, tried = doctest.testmod(joblib_rs.parallel, verbose=False)
    assert tried > 0
    assert failures == 0


def test_custom_backend_example():
    from joblib_rs import ParallelBackendBase, register_parallel_backend
    from joblib_rs import parallel as parallel_module
    from joblib_rs._parallel_backends import ThreadingBackend

    class MyCustomBackend(ThreadingBackend, ParallelBackendBase):
        def __init__(self, endpoint=None, api_key=None, **kwargs):
            super().__init__(**kwargs)
            self.endpoint = endpoint
            self.api_key = api_key

    register_parallel_backend("custom", MyCustomBackend)
    try:
        with parallel_backend("custom", endpoint="http://compute", api_key="42") as (b, _):
            assert (b.endpoint, b.api_key) == ("http://compute", "42")
            assert Parallel()(delayed(abs)(-i) for i in range(10)) == list(range(10))
    finally:
        del parallel_module.BACKENDS["custom"]
    assert "custom" not in joblib.parallel.BACKENDS
    assert sys.modules["joblib_rs.parallel"] is parallel_module
