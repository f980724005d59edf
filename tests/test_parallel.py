"""Parallel / delayed: results, n_jobs, batching, generators, timeouts, errors, verbose output.

Everything runs on real threads (and, where it matters, real processes); waits are bounded by
events with timeouts so no test can hang.
"""

import math
import multiprocessing
import re
import signal
import threading
import time
import traceback
import warnings

import joblib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import joblib_rs
from joblib_rs import Parallel, delayed, parallel_config
from joblib_rs._parallel_backends import SequentialBackend, ThreadingBackend

WAIT = 30  # seconds: upper bound of any wait on an event in these tests


def square(x):
    return x * x


class Boom(Exception):
    pass


def explode(x):
    if x == 3:
        raise Boom(f"bad value {x}")
    return x


# ----------------------------------------------------------------------------- results


@pytest.mark.parametrize("backend", ["threading", "sequential", "multiprocessing", "loky"])
def test_results_come_back_in_input_order(backend):
    out = Parallel(n_jobs=2, backend=backend)(delayed(square)(i) for i in range(50))
    assert out == [i * i for i in range(50)]


def test_delayed_captures_function_and_arguments():
    func, args, kwargs = delayed(divmod)(7, 2)
    assert (func, args, kwargs) == (divmod, (7, 2), {})
    assert delayed(square)(3, extra=1) == (square, (3,), {"extra": 1})
    # Each call gets its own kwargs dict, as a Python **kwargs would.
    options = {"extra": 1}
    _, _, captured = delayed(square)(3, **options)
    captured["extra"] = 2
    assert options == {"extra": 1} and delayed(square)(1)[2] is not delayed(square)(1)[2]


def test_delayed_function_looks_like_the_function():
    import inspect
    import pickle

    def documented(a, b=2):
        """Adds."""
        return a + b

    d = delayed(documented)
    assert d.__name__ == "documented"
    assert d.__qualname__.endswith("documented")
    assert d.__doc__ == "Adds."
    assert d.__wrapped__ is documented
    assert str(inspect.signature(d)) == "(a, b=2)"
    with pytest.raises(AttributeError):
        d.no_such_attribute  # noqa: B018
    import functools

    assert delayed(functools.partial(square)).__name__ == "partial"
    restored = pickle.loads(pickle.dumps(delayed(math.sqrt)))
    assert restored(4) == (math.sqrt, (4,), {})


def test_keyword_arguments_reach_the_function():
    out = Parallel(n_jobs=2, backend="threading")(delayed(int)(str(i), base=16) for i in range(20))
    assert out == [int(str(i), 16) for i in range(20)]


def test_empty_input_gives_empty_list():
    assert Parallel(n_jobs=2, backend="threading")([]) == []
    assert Parallel(n_jobs=2, backend="threading")(iter([])) == []
    assert Parallel(n_jobs=1)([]) == []


# ----------------------------------------------------------------------------- n_jobs


def test_n_jobs_none_and_one_run_in_the_calling_thread():
    main = threading.get_ident()
    for n_jobs in (None, 1):
        idents = Parallel(n_jobs=n_jobs, backend="threading")(
            delayed(threading.get_ident)() for _ in range(5)
        )
        assert set(idents) == {main}


def test_threading_runs_tasks_concurrently():
    # Both tasks must be running at once to pass the barrier.
    barrier = threading.Barrier(2, timeout=WAIT)
    out = Parallel(n_jobs=2, backend="threading", batch_size=1)(
        delayed(barrier.wait)() for _ in range(2)
    )
    assert sorted(out) == [0, 1]


@pytest.mark.parametrize(("n_jobs", "expected"), [(-1, 0), (-2, -1), (-100, None)])
def test_negative_n_jobs_count_back_from_cpu_count(n_jobs, expected):
    n_cpus = joblib_rs.cpu_count()
    want = 1 if expected is None else max(n_cpus + expected, 1)
    assert ThreadingBackend().effective_n_jobs(n_jobs) == want


def test_n_jobs_is_cast_to_int():
    assert Parallel(n_jobs=2.7).n_jobs == 2
    assert Parallel(n_jobs="3").n_jobs == 3
    with pytest.raises(ValueError, match="n_jobs could not be converted to int: 'many'"):
        Parallel(n_jobs="many")


@pytest.mark.parametrize("backend", ["threading", "sequential", "loky", "multiprocessing"])
def test_n_jobs_zero_is_an_error(backend):
    with pytest.raises(ValueError, match="n_jobs == 0 in Parallel has no meaning"):
        Parallel(n_jobs=0, backend=backend)(delayed(square)(i) for i in range(3))


def test_threading_with_one_job_falls_back_to_sequential():
    p = Parallel(n_jobs=1, backend="threading")
    assert p([delayed(square)(2)]) == [4]
    assert isinstance(p._backend, SequentialBackend)


# ----------------------------------------------------------------------------- batching


def test_auto_batching_groups_tiny_tasks_on_threads():
    p = Parallel(n_jobs=2, backend="threading")
    out = p(delayed(math.sqrt)(i) for i in range(20_000))
    assert out == [math.sqrt(i) for i in range(20_000)]
    assert p.n_dispatched_tasks == 20_000
    # joblib's threading backend dispatches one task at a time; batching must kick in.
    assert p.n_dispatched_batches < 2_000


def test_fixed_batch_size_bounds_the_number_of_dispatches():
    p = Parallel(n_jobs=2, backend="threading", batch_size=10, pre_dispatch="all")
    assert p(delayed(square)(i) for i in range(100)) == [i * i for i in range(100)]
    assert 10 <= p.n_dispatched_batches <= 100 // 5


@pytest.mark.parametrize("bad", [0, -1, "big", 1.5, True])
def test_invalid_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size must be 'auto' or a positive integer"):
        Parallel(n_jobs=2, batch_size=bad)


def test_batches_of_a_fixed_size_run_on_one_worker():
    # A batch is one unit: all its tasks run on the same thread.
    p = Parallel(n_jobs=2, backend="threading", batch_size=5, pre_dispatch="all")
    idents = p(delayed(threading.get_ident)() for _ in range(10))
    assert idents[:5] == [idents[0]] * 5
    assert idents[5:] == [idents[5]] * 5


# ----------------------------------------------------------------------------- pre_dispatch


def test_input_iterator_is_consumed_lazily():
    produced = []
    lag = []

    def producer():
        for i in range(40):
            produced.append(i)
            yield delayed(record)(i)

    def record(i):
        # How far ahead of this task the input was read.
        lag.append(len(produced) - i)
        return i

    out = Parallel(n_jobs=2, backend="threading", batch_size=1, pre_dispatch="1.5*n_jobs")(
        producer()
    )
    assert out == list(range(40))
    # pre_dispatch=3 batches of one task, one look-ahead slice of n_jobs tasks, and up to
    # n_jobs tasks that another worker may finish before this one starts.
    assert max(lag) <= 3 + 2 + 2


def test_pre_dispatch_all_reads_everything_first():
    produced = []

    def producer():
        for i in range(10):
            produced.append(i)
            yield delayed(len)(produced)

    out = Parallel(n_jobs=2, backend="threading", pre_dispatch="all")(producer())
    assert out == [10] * 10


@pytest.mark.parametrize("bad", ["n_jobs * __import__('os')", "2 ** 1000", "3 +"])
def test_invalid_pre_dispatch_expression(bad):
    with pytest.raises(ValueError, match=r"is not a valid or supported arithmetic|too"):
        Parallel(n_jobs=2, backend="threading", pre_dispatch=bad)([delayed(square)(1)])


def test_setup_errors_leave_the_instance_reusable():
    p = Parallel(n_jobs=2, backend="multiprocessing", pre_dispatch="n_jobs +")
    with pytest.raises(ValueError, match="not a valid or supported arithmetic expression"):
        p([delayed(square)(2)])
    assert p._backend._pool is None  # the process pool did not leak
    p.pre_dispatch = "2 * n_jobs"
    assert p([delayed(square)(2)]) == [4]
    threads = Parallel(n_jobs=2, backend="threading")
    with pytest.raises(TypeError, match="not iterable"):
        threads(42)
    assert threads([delayed(square)(3)]) == [9]


def test_error_raised_by_the_input_iterator_reaches_the_caller():
    def tasks():
        for i in range(5):
            yield delayed(square)(i)
        raise Boom("iterator broke")

    for n_jobs in (1, 2):
        with pytest.raises(Boom, match="iterator broke"):
            Parallel(n_jobs=n_jobs, backend="threading", batch_size=1, pre_dispatch="1*n_jobs")(
                tasks()
            )


# ----------------------------------------------------------------------------- return_as


def test_generator_yields_results_before_the_call_ends():
    release = [threading.Event() for _ in range(4)]

    def task(i):
        assert release[i].wait(WAIT)
        return i

    gen = Parallel(n_jobs=2, backend="threading", return_as="generator", batch_size=1)(
        delayed(task)(i) for i in range(4)
    )
    try:
        release[0].set()
        assert next(gen) == 0  # tasks 1..3 are still blocked
        for ev in release[1:]:
            ev.set()
        assert list(gen) == [1, 2, 3]
    finally:
        for ev in release:
            ev.set()


def test_generator_unordered_yields_in_completion_order():
    first_done = threading.Event()

    def task(i):
        if i == 0:
            assert first_done.wait(WAIT)
        return i

    gen = Parallel(n_jobs=2, backend="threading", return_as="generator_unordered", batch_size=1)(
        delayed(task)(i) for i in range(2)
    )
    try:
        assert next(gen) == 1  # task 0 waits until task 1 has been read
        first_done.set()
        assert list(gen) == [0]
    finally:
        first_done.set()


def test_generator_keeps_unread_results_bounded():
    started = []
    consumed = 0
    peak = 0

    def task(i):
        started.append(i)
        return i

    gen = Parallel(n_jobs=2, backend="threading", return_as="generator", batch_size=1)(
        delayed(task)(i) for i in range(200)
    )
    for value in gen:
        assert value == consumed
        consumed += 1
        peak = max(peak, len(started) - consumed)
        time.sleep(0.0005)  # a slow consumer
    assert consumed == 200
    # Completed-but-unread batches are capped at max(pre_dispatch, 2 * n_jobs) = 4,
    # plus the batches in flight and one look-ahead slice.
    assert peak <= 4 + 4 + 2 + 2


def test_invalid_return_as():
    with pytest.raises(ValueError, match="but got listing instead"):
        Parallel(return_as="listing")


def test_multiprocessing_refuses_generators_like_joblib():
    with pytest.raises(ValueError, match="does not support return_as=generator"):
        Parallel(n_jobs=2, backend="multiprocessing", return_as="generator")


def test_generator_dropped_early_warns_and_cancels():
    release = threading.Event()

    def task(i):
        if i > 0:
            release.wait(WAIT)
        return i

    gen = Parallel(n_jobs=2, backend="threading", return_as="generator", batch_size=1)(
        delayed(task)(i) for i in range(50)
    )
    try:
        assert next(gen) == 0
        with pytest.warns(UserWarning, match="tasks which were still being processed"):
            gen.close()
    finally:
        release.set()


# ----------------------------------------------------------------------------- reuse


def test_calling_a_running_instance_raises_runtime_error():
    p = Parallel(n_jobs=2, backend="threading", return_as="generator")
    gen = p(delayed(square)(i) for i in range(10))
    with pytest.raises(RuntimeError, match="This Parallel instance is already running"):
        p(delayed(square)(i) for i in range(3))
    assert list(gen) == [i * i for i in range(10)]
    # Once finished, the instance can be called again.
    assert list(p(delayed(square)(i) for i in range(3))) == [0, 1, 4]


def test_calling_the_instance_from_its_own_task_raises_runtime_error():
    p = Parallel(n_jobs=2, backend="threading")

    def task():
        return p([delayed(square)(1)])

    with pytest.raises(RuntimeError, match="already running"):
        p(delayed(task)() for _ in range(2))


def test_context_manager_keeps_the_same_threads_between_calls():
    with Parallel(n_jobs=2, backend="threading", batch_size=1) as p:
        barrier = threading.Barrier(2, timeout=WAIT)
        first = p(delayed(lambda: (barrier.wait(), threading.get_ident())[1])() for _ in range(2))
        second = p(delayed(threading.get_ident)() for _ in range(20))
    assert len(set(first)) == 2
    assert set(second) <= set(first)


def test_warm_calls_reuse_worker_threads():
    def idents():
        barrier = threading.Barrier(2, timeout=WAIT)
        return set(
            Parallel(n_jobs=2, backend="threading", batch_size=1)(
                delayed(lambda: (barrier.wait(), threading.get_ident())[1])() for _ in range(2)
            )
        )

    a = idents()
    b = idents()
    assert len(a) == 2
    assert a == b


@pytest.mark.parametrize("backend", ["threading", "loky", "multiprocessing"])
def test_context_manager_survives_an_error(backend):
    with Parallel(n_jobs=2, backend=backend) as p:
        with pytest.raises(Boom):
            p(delayed(explode)(i) for i in range(10))
        assert p(delayed(square)(i) for i in range(10)) == [i * i for i in range(10)]


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_exception_keeps_its_type_and_worker_traceback_on_threads(n_jobs):
    with pytest.raises(Boom, match="bad value 3") as info:
        Parallel(n_jobs=n_jobs, backend="threading")(delayed(explode)(i) for i in range(10))
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "explode" in frames


@pytest.mark.parametrize("backend", ["multiprocessing", "loky"])
def test_exception_from_a_process_carries_the_remote_traceback(backend):
    with pytest.raises(Boom, match="bad value 3") as info:
        Parallel(n_jobs=2, backend=backend)(delayed(explode)(i) for i in range(10))
    cause = info.value.__cause__
    assert cause is not None
    assert "in explode" in str(cause)
    assert 'raise Boom(f"bad value {x}")' in str(cause)


def test_first_error_stops_dispatching():
    ran = []

    def task(i):
        if i == 0:
            raise Boom("first")
        time.sleep(0.001)
        ran.append(i)

    with pytest.raises(Boom, match="first"):
        Parallel(n_jobs=2, backend="threading", batch_size=1)(
            delayed(task)(i) for i in range(2000)
        )
    assert len(ran) < 2000


def test_unpicklable_exception_from_a_process_still_reports_the_error():
    with pytest.raises(RuntimeError, match="UnpicklableError: local lambda inside"):
        Parallel(n_jobs=2, backend="multiprocessing")(
            delayed(raise_unpicklable)(i) for i in range(2)
        )


class UnpicklableError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.callback = lambda: None

    def __reduce__(self):
        raise TypeError("cannot pickle")


def raise_unpicklable(i):
    raise UnpicklableError(f"local lambda inside {i}")


# ----------------------------------------------------------------------------- timeout


def test_timeout_raises_timeout_error():
    release = threading.Event()
    try:
        with pytest.raises(TimeoutError) as info:
            Parallel(n_jobs=2, backend="threading", timeout=0.2)(
                delayed(release.wait)(WAIT) for _ in range(4)
            )
        # Catchable as joblib's multiprocessing.TimeoutError too.
        assert isinstance(info.value, multiprocessing.TimeoutError)
    finally:
        release.set()


def test_timeout_in_unordered_generator():
    release = threading.Event()
    try:
        gen = Parallel(
            n_jobs=2, backend="threading", timeout=0.2, return_as="generator_unordered"
        )(delayed(release.wait)(WAIT) for _ in range(4))
        with pytest.raises(TimeoutError):
            list(gen)
    finally:
        release.set()


def test_fast_tasks_do_not_time_out():
    out = Parallel(n_jobs=2, backend="threading", timeout=WAIT)(
        delayed(square)(i) for i in range(100)
    )
    assert out == [i * i for i in range(100)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"verbose": "loud"}, "verbose must be an int, got 'loud'"),
        ({"mmap_mode": "rw"}, "mmap_mode must be one of .* got 'rw'"),
        ({"max_nbytes": "1X"}, "Invalid literal for size: '1X'"),
        ({"pre_dispatch": [2]}, r"pre_dispatch must be .* got \[2\]"),
        ({"backend": 42}, "Invalid backend: 42"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Parallel(n_jobs=2, **kwargs)


@pytest.mark.parametrize("bad", [0, -1, "soon"])
def test_invalid_timeout(bad):
    with pytest.raises(ValueError, match="timeout must be a positive number or None"):
        Parallel(n_jobs=2, timeout=bad)


# ----------------------------------------------------------------------------- Ctrl-C


def test_keyboard_interrupt_cancels_pending_work():
    started = threading.Event()
    ran = []

    def task(i):
        started.set()
        time.sleep(0.01)
        ran.append(i)

    def interrupt():
        if started.wait(WAIT):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        Parallel(n_jobs=2, backend="threading", batch_size=1)(
            delayed(task)(i) for i in range(2000)
        )
    count = len(ran)
    time.sleep(0.1)
    # Nothing more runs once the call has been interrupted, beyond batches already running.
    assert len(ran) <= count + 2
    assert len(ran) < 2000


# ----------------------------------------------------------------------------- verbose


def _normalise(text):
    return re.sub(r"\d+\.\ds", "X.Xs", text)


def test_verbose_messages_match_joblib_for_sequential_runs(capsys):
    Parallel(n_jobs=1, verbose=10)(delayed(square)(i) for i in range(20))
    ours = capsys.readouterr().err
    joblib.Parallel(n_jobs=1, verbose=10)(joblib.delayed(square)(i) for i in range(20))
    theirs = capsys.readouterr().err
    assert _normalise(ours) == _normalise(theirs)
    assert "[Parallel(n_jobs=1)]: Done  20 out of  20 | elapsed:    X.Xs finished" in (
        _normalise(ours)
    )


def test_verbose_messages_of_a_threaded_run(capsys):
    Parallel(n_jobs=2, verbose=10, backend="threading", batch_size=1)(
        delayed(square)(i) for i in range(10)
    )
    lines = capsys.readouterr().err.splitlines()
    assert (
        lines[0]
        == "[Parallel(n_jobs=2)]: Using backend ThreadingBackend with 2 concurrent workers."
    )
    assert re.fullmatch(
        r"\[Parallel\(n_jobs=2\)\]: Done  10 out of  10 \| elapsed: +\d+\.\ds finished", lines[-1]
    )
    assert all(line.startswith("[Parallel(n_jobs=2)]: ") for line in lines)
    assert sum("finished" in line for line in lines) == 1


def test_verbose_above_50_goes_to_stdout(capsys):
    Parallel(n_jobs=2, verbose=60, backend="threading")(delayed(square)(i) for i in range(5))
    captured = capsys.readouterr()
    assert "Using backend ThreadingBackend" in captured.out
    assert captured.err == ""


def test_verbose_zero_prints_nothing(capsys):
    Parallel(n_jobs=2, backend="threading")(delayed(square)(i) for i in range(5))
    assert capsys.readouterr() == ("", "")


def test_verbose_from_parallel_config(capsys):
    with parallel_config(verbose=10):
        Parallel(n_jobs=1)(delayed(square)(i) for i in range(3))
    assert "Done   3 out of   3" in capsys.readouterr().err


# ----------------------------------------------------------------------------- progress


def test_plain_progress_bar_when_tqdm_is_missing(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)
    out = Parallel(n_jobs=2, backend="threading", progress=True)(
        delayed(square)(i) for i in range(30)
    )
    assert out == [i * i for i in range(30)]
    err = capsys.readouterr().err
    assert "[" + "#" * 30 + "] 30/30 tasks" in err
    assert err.endswith("\n")


def test_plain_progress_bar_learns_the_total_of_a_generator(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)
    Parallel(n_jobs=2, backend="threading", progress=True, pre_dispatch="all")(
        delayed(square)(i) for i in range(12)
    )
    assert "12/12 tasks" in capsys.readouterr().err


def test_progress_bar_on_sequential_runs(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)
    Parallel(n_jobs=1, progress=True)([delayed(square)(i) for i in range(7)])
    assert "7/7 tasks" in capsys.readouterr().err


def test_tqdm_progress_bar_when_available(capsys):
    pytest.importorskip("tqdm")
    Parallel(n_jobs=2, backend="threading", progress=True)([delayed(square)(i) for i in range(9)])
    assert "9/9" in capsys.readouterr().err


def test_generator_dropped_in_another_thread_cleans_up():
    release = threading.Event()

    def task(i):
        if i > 1:
            release.wait(WAIT)
        return i

    p = Parallel(n_jobs=2, backend="threading", return_as="generator", batch_size=1)
    box = [p(delayed(task)(i) for i in range(20))]
    assert next(box[0]) == 0

    def drop():
        box.clear()  # the last reference: the generator is closed in this thread

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = threading.Thread(target=drop)
            t.start()
            t.join(WAIT)
    finally:
        release.set()
    # The next call waits for the clean-up of the dropped generator, then runs.
    assert list(p(delayed(square)(i) for i in range(3))) == [0, 1, 4]


def test_logger_methods_of_parallel(caplog):
    import logging

    p = Parallel(n_jobs=2)
    with caplog.at_level(logging.DEBUG, logger="joblib"):
        p.debug("looking")
        p.warn("careful")
    assert [r.getMessage() for r in caplog.records] == [
        "[Parallel(n_jobs=2)]: looking",
        "[Parallel(n_jobs=2)]: careful",
    ]
    assert p.format({"a": [1, 2]}) == "{'a': [1, 2]}"


# ----------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(-1000, 1000), max_size=60),
    n_jobs=st.sampled_from([1, 2, 3, -1]),
    batch_size=st.one_of(st.just("auto"), st.integers(1, 7)),
    pre_dispatch=st.sampled_from(["2 * n_jobs", "all", 1, "n_jobs"]),
    return_as=st.sampled_from(["list", "generator", "generator_unordered"]),
    as_generator=st.booleans(),
)
def test_any_configuration_computes_the_map(
    values, n_jobs, batch_size, pre_dispatch, return_as, as_generator
):
    tasks = (
        (delayed(square)(v) for v in values)
        if as_generator
        else [delayed(square)(v) for v in values]
    )
    out = Parallel(
        n_jobs=n_jobs,
        backend="threading",
        batch_size=batch_size,
        pre_dispatch=pre_dispatch,
        return_as=return_as,
    )(tasks)
    expected = [v * v for v in values]
    if return_as == "generator_unordered":
        assert sorted(out) == sorted(expected)
    else:
        assert list(out) == expected
