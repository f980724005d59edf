"""The manual's process-based Parallel examples (§2.4, §3.2, §2.6), on the default backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from heapq import nlargest
from math import sqrt

import numpy as np
import pytest

from joblib_rs import Parallel, delayed

TIMEOUT = 120


def test_common_usage_on_processes():
    assert Parallel(n_jobs=2)(delayed(sqrt)(i**2) for i in range(10)) == [
        0.0,
        1.0,
        2.0,
        3.0,
        4.0,
        5.0,
        6.0,
        7.0,
        8.0,
        9.0,
    ]


def test_reusing_a_pool_of_workers_on_processes():
    with Parallel(n_jobs=2) as parallel:
        accumulator = 0.0
        n_iter = 0
        while accumulator < 1000:
            results = parallel(delayed(sqrt)(accumulator + i**2) for i in range(5))
            accumulator += sum(results)
            n_iter += 1
    assert n_iter == 14
    assert repr(accumulator).startswith("1136.596")


def test_traceback_example_on_processes():
    with pytest.raises(TypeError) as excinfo:
        Parallel(n_jobs=2)(delayed(nlargest)(2, n) for n in (range(4), "abcde", 3))
    remote = str(excinfo.value.__cause__)
    assert "nlargest" in remote
    assert "TypeError" in remote


def test_progress_meter_on_processes(capsys):
    from time import sleep

    Parallel(n_jobs=2, verbose=10)(delayed(sleep)(0.05) for _ in range(10))
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "[Parallel(n_jobs=2)]: Using backend LokyBackend with 2 concurrent workers."
    done = r"\[Parallel\(n_jobs=2\)\]: Done +10 out of +10 \| elapsed: +\d+\.\ds finished$"
    assert re.match(done, lines[-1])


def test_pre_dispatch_producer_consumer_on_processes(capsys):
    def producer():
        for i in range(6):
            print(f"Produced {i}")
            yield i

    out = Parallel(n_jobs=2, verbose=100, pre_dispatch="1.5*n_jobs")(
        delayed(sqrt)(i) for i in producer()
    )
    assert out == [sqrt(i) for i in range(6)]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == (
        "[Parallel(n_jobs=2)]: Using backend LokyBackend with 2 concurrent workers."
    )
    # The producer runs ahead by pre_dispatch (3) items before any result comes back.
    assert printed[1:4] == ["Produced 0", "Produced 1", "Produced 2"]
    assert [line for line in printed if line.startswith("Produced")] == [
        f"Produced {i}" for i in range(6)
    ]
    assert re.match(
        r"\[Parallel\(n_jobs=2\)\]: Done +6 out of +6 \| elapsed: .* finished$", printed[-1]
    )


def test_random_state_example_loky_vectors_differ():
    def stochastic_function(max_value):
        return np.random.randint(max_value, size=5)

    vectors = Parallel(n_jobs=2)(delayed(stochastic_function)(10) for _ in range(5))
    assert len({tuple(v) for v in vectors}) == 5


SERIALIZATION_SCRIPT = textwrap.dedent("""
    import os, sys, traceback
    from joblib_rs import Parallel, delayed, wrap_non_picklable_objects

    def func_async(i, *args):
        return 2 * i

    print(Parallel(n_jobs=2)(delayed(func_async)(21) for _ in range(1))[0])
    large_list = list(range(100000))
    print(Parallel(n_jobs=2)(delayed(func_async)(21, large_list) for _ in range(1))[0])

    os.environ["LOKY_PICKLER"] = "pickle"
    print(Parallel(n_jobs=2)(delayed(id)(large_list) for _ in range(1))[0] > 0)
    try:
        Parallel(n_jobs=2)(delayed(func_async)(21, large_list) for _ in range(1))
    except Exception as exc:
        print(type(exc).__name__, "|", exc)

    @delayed
    @wrap_non_picklable_objects
    def func_async_wrapped(i, *args):
        return 2 * i

    print(Parallel(n_jobs=2)(func_async_wrapped(21, large_list) for _ in range(1))[0])
""")


def test_serialization_of_unpicklable_objects_example(tmp_path):
    script = tmp_path / "serialization_and_wrappers.py"
    script.write_text(SERIALIZATION_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "LOKY_PICKLER"}
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "42"
    assert lines[1] == "42"
    assert lines[2] == "True"
    expected = "PicklingError | Could not pickle the task to send it to the workers"
    assert lines[3].startswith(expected)
    assert lines[4] == "42"
