"""Batches: the measured auto-batching policy, sizes learned per function, and the compact
form in which a batch of one function travels to a worker."""

import math
import operator
import pickle

from joblib_rs import Parallel, delayed
from joblib_rs._backends import LokyBackend, SequentialBackend, ThreadingBackend
from joblib_rs._backends.base import MeasuredBatchingMixin
from joblib_rs._batch import BatchedCalls, TaskChunk, learned_batch_size, remember_batch_size

NESTED = (SequentialBackend(nesting_level=1), None)


def test_measured_policy_jumps_to_the_size_the_measurement_asks_for():
    class Policy(MeasuredBatchingMixin, SequentialBackend):
        MIN_IDEAL_BATCH_DURATION = 0.2
        MAX_IDEAL_BATCH_DURATION = 2.0

    policy = Policy()
    assert policy.compute_batch_size() == 1
    policy.batch_completed(1, 0.001)  # 1 ms for one task: 400 last 0.4 s at most
    assert policy.compute_batch_size() == 400
    policy.batch_completed(400, 0.3)  # within the ideal range: keep it
    assert policy.compute_batch_size() == 400
    policy.batch_completed(400, 10.0)  # mean 0.8 * 0.3 + 0.2 * 10 = 2.24 s: shrink, as joblib
    assert policy.compute_batch_size() == 70  # 2 * int(400 * 0.2 / 2.24)
    policy.seed_batch_size(64)
    assert policy.effective_batch_size == 64 == policy.compute_batch_size()


def test_learned_sizes_are_kept_per_backend_type_and_function():
    remember_batch_size(ThreadingBackend(), math.hypot, 123)
    assert learned_batch_size(ThreadingBackend(), math.hypot) == 123
    assert learned_batch_size(LokyBackend(), math.hypot) is None
    for i in range(300):  # bounded: the oldest entries go
        remember_batch_size(ThreadingBackend(), type(f"F{i}", (), {}), i + 1)
    assert learned_batch_size(ThreadingBackend(), math.hypot) is None


def test_an_auto_batched_call_leaves_its_size_for_the_next_call_of_the_function():
    p = Parallel(n_jobs=2)
    assert p(delayed(operator.neg)(i) for i in range(3000)) == [-i for i in range(3000)]
    learned = learned_batch_size(LokyBackend(), operator.neg)
    assert learned is not None and learned >= 1
    # The next call starts there and still returns everything, in order.
    again = Parallel(n_jobs=2, return_as="generator")(delayed(operator.neg)(i) for i in range(50))
    assert list(again) == [-i for i in range(50)]


def test_explicit_batch_sizes_are_not_learned():
    Parallel(n_jobs=2, batch_size=7)(delayed(operator.pos)(i) for i in range(100))
    assert learned_batch_size(LokyBackend(), operator.pos) is None


def test_a_batch_of_one_function_travels_compactly_and_runs_the_same():
    batch = BatchedCalls([(pow, (i, 2), {}) for i in range(5)], NESTED)
    loaded = pickle.loads(pickle.dumps(batch))
    assert loaded._items is None  # not materialised in the worker
    assert loaded() == [0, 1, 4, 9, 16] and len(loaded) == 5
    assert loaded.items == [(pow, (i, 2), {}) for i in range(5)]
    single = pickle.loads(pickle.dumps(BatchedCalls([(abs, (-i,), {}) for i in range(4)], NESTED)))
    assert single() == [0, 1, 2, 3]


def test_mixed_functions_or_keyword_arguments_travel_as_triples():
    mixed = BatchedCalls([(abs, (-1,), {}), (pow, (2, 3), {})], NESTED)
    keywords = BatchedCalls([(int, ("11",), {"base": 2})], NESTED)
    for batch, expected in ((mixed, [1, 8]), (keywords, [3])):
        loaded = pickle.loads(pickle.dumps(batch))
        assert loaded._items is not None
        assert loaded() == expected


def test_reading_tasks_compactly_keeps_only_the_arguments():
    chunk = TaskChunk.read(iter([delayed(abs)(-i) for i in range(6)]), 4, compact=True)
    assert chunk.tasks is None and chunk.func is abs and chunk.arguments == [0, -1, -2, -3]
    assert chunk.one_argument and len(chunk) == 4
    assert chunk.batch(1, 3, NESTED, None, {})() == [1, 2]
    several = TaskChunk.read(iter([delayed(pow)(2, 3), delayed(pow)(3)]), 9, compact=True)
    assert several.arguments == [(2, 3), (3,)] and not several.one_argument
    # One single argument, then several: the first becomes a 1-tuple.
    late = TaskChunk.read(iter([delayed(pow)(2), delayed(pow)(2, 5)]), 9, compact=True)
    assert late.arguments == [(2,), (2, 5)] and not late.one_argument


def test_reading_mixed_tasks_gives_equal_triples_in_order():
    tasks = [delayed(abs)(-1), delayed(abs)(-2), delayed(pow)(2, 3), delayed(int)("11", base=2)]
    chunk = TaskChunk.read(iter(tasks), 10, compact=True)
    assert chunk.tasks == tasks
    assert chunk.batch(0, 4, NESTED, None, {})() == [1, 2, 8, 3]
    assert TaskChunk.read(iter(()), 10, compact=True).tasks is None
    assert not len(TaskChunk.read(iter(()), 10, compact=True))


def test_reading_tasks_stops_at_n_and_passes_on_the_iterators_error():
    produced = []

    def producer():
        for i in range(10):
            produced.append(i)
            yield delayed(abs)(i)
        raise ValueError("input broke")

    tasks = producer()
    assert len(TaskChunk.read(tasks, 3, compact=True)) == 3
    assert produced == [0, 1, 2]
    try:
        TaskChunk.read(tasks, 100, compact=True)
    except ValueError as exc:
        assert str(exc) == "input broke"
    else:
        raise AssertionError("the iterator's error was swallowed")


def test_chunks_extend_compactly_or_fall_back_to_triples():
    first = TaskChunk.read(iter([delayed(abs)(-1)]), 5, compact=True)
    first.extend(TaskChunk.read(iter([delayed(abs)(-2)]), 5, compact=True))
    assert first.tasks is None and first.arguments == [-1, -2]
    first.extend(TaskChunk.read(iter([delayed(pow)(2, 2)]), 5, compact=True))
    assert first.tasks == [delayed(abs)(-1), delayed(abs)(-2), delayed(pow)(2, 2)]


def test_processes_run_mixed_and_compact_inputs_in_order():
    def tasks():
        for i in range(300):
            if i % 97 == 0:
                yield delayed(int)(str(i), base=10)
            elif i % 89 == 0:
                yield delayed(pow)(i, 1)
            else:
                yield delayed(abs)(-i)

    assert Parallel(n_jobs=2)(tasks()) == list(range(300))
    assert list(Parallel(n_jobs=2, return_as="generator")(tasks())) == list(range(300))
    assert sorted(Parallel(n_jobs=2, return_as="generator_unordered")(tasks())) == list(range(300))


def _nested_view() -> tuple[str, int, object, list[int]]:
    from joblib_rs.parallel import get_active_backend

    backend, n_jobs = get_active_backend()
    inner = Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(3))
    return type(backend).__name__, backend.nesting_level, n_jobs, inner


def test_a_batch_carries_a_builtin_nested_backend_as_data():
    batch = BatchedCalls([(abs, (-1,), {})], LokyBackend().get_nested_backend())
    loaded = pickle.loads(pickle.dumps(batch))
    assert loaded._nested_kind == ("threads", 1) and loaded._backend is None
    # A customised nested backend travels as the object itself.
    custom = ThreadingBackend(nesting_level=1)
    custom.custom_setting = "kept"
    loaded = pickle.loads(pickle.dumps(BatchedCalls([(abs, (-1,), {})], (custom, 3))))
    assert loaded._nested_kind is None and loaded._backend.custom_setting == "kept"
    assert loaded._n_jobs == 3


def test_a_fresh_worker_runs_plain_tasks_without_importing_the_backends():
    from joblib_rs._process_pool import ProcessPool

    def loaded_modules() -> list[str]:  # local: travels by value, imports no test module
        import sys

        return sorted(name for name in sys.modules if name.startswith("joblib_rs"))

    pool = ProcessPool(1)
    try:
        nested = LokyBackend().get_nested_backend()
        plain = BatchedCalls([(loaded_modules, (), {})], nested)
        (modules,) = pool.submit(plain).result(timeout=120)
        assert not [m for m in modules if m.startswith("joblib_rs._backends")], modules
        assert "joblib_rs._process_pool" not in modules
        # A task that asks gets the nested configuration the batch described, as before.
        (view,) = pool.submit(BatchedCalls([(_nested_view, (), {})], nested)).result(timeout=120)
        assert view == ("ThreadingBackend", 1, None, [0, 1, 2])
    finally:
        pool.terminate()
