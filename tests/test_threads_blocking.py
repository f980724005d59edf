"""Tasks that wait on each other on the threading backend (batched tasks must not deadlock).

Auto-sized batches are scheduled task by task on the leased threads (``_threads``), so tasks
meeting at a barrier, passing items through a queue or waiting for an event work whatever
the batch size grew to. Waits have a generous timeout only so a regression fails instead of
hanging.
"""

import queue
import threading

import pytest

from joblib_rs import Parallel, delayed
from joblib_rs._backends import SequentialBackend
from joblib_rs._call import BatchedCalls
from joblib_rs._threads import lease_threads

WAIT = 30


def _noop(i):
    return i


def _batch(tasks, splittable=True):
    batch = BatchedCalls(tasks, (SequentialBackend(nesting_level=1), None))
    batch.splittable = splittable
    return batch


def test_tasks_of_one_batch_meeting_at_a_barrier_run_on_different_threads():
    barrier = threading.Barrier(3, timeout=WAIT)
    lease = lease_threads(3)
    try:
        job = lease.submit(_batch([(barrier.wait, (), {})] * 3), None)
        assert sorted(job.get(timeout=WAIT * 2)) == [0, 1, 2]
    finally:
        lease.close()


def test_a_batch_of_a_chosen_size_stays_on_one_thread():
    lease = lease_threads(2)
    try:
        job = lease.submit(_batch([(threading.get_ident, (), {})] * 20, splittable=False), None)
        assert len(set(job.get(timeout=WAIT))) == 1
    finally:
        lease.close()


def test_tasks_run_in_submission_order_across_batches():
    # With one thread, per-task scheduling must keep the FIFO order of submission.
    seen = []
    lease = lease_threads(2)
    try:
        jobs = [
            lease.submit(_batch([(seen.append, (b * 10 + i,), {}) for i in range(10)]), None)
            for b in range(5)
        ]
        for job in jobs:
            job.get(timeout=WAIT)
    finally:
        lease.close()
    assert sorted(seen) == list(range(50))


@pytest.mark.parametrize("n_jobs", [2, 4])
def test_barriers_after_many_tiny_tasks_under_sharedmem(n_jobs):
    # Thousands of tiny tasks grow the batch size; then groups of n_jobs tasks meet at a
    # barrier, which only works when every task of a group runs on its own thread.
    barrier = threading.Barrier(n_jobs, timeout=WAIT)

    def meet(i):
        barrier.wait()
        return i

    tasks = [delayed(_noop)(i) for i in range(5000)]
    tasks += [delayed(meet)(i) for i in range(5000, 5000 + 4 * n_jobs)]
    out = Parallel(n_jobs=n_jobs, require="sharedmem")(tasks)
    assert out == list(range(5000 + 4 * n_jobs))
    assert not barrier.broken


def test_consumer_dispatched_before_its_producer():
    items: queue.Queue = queue.Queue()

    def consume(n):
        return [items.get(timeout=WAIT) for _ in range(n)]

    def produce(n):
        for i in range(n):
            items.put(i)
        return n

    def tasks():
        for i in range(2000):
            yield delayed(_noop)(i)
        yield delayed(consume)(3)
        yield delayed(produce)(3)

    out = Parallel(n_jobs=2, prefer="threads")(tasks())
    assert out[-2:] == [[0, 1, 2], 3]


def test_event_waiters_and_setter_in_one_call():
    event = threading.Event()

    def wait_for_it(i):
        return event.wait(timeout=WAIT)

    def set_it():
        event.set()
        return True

    tasks = [delayed(_noop)(i) for i in range(3000)]
    tasks += [delayed(wait_for_it)(i) for i in range(3)] + [delayed(set_it)()]
    out = Parallel(n_jobs=4, backend="threading")(tasks)
    assert out[-4:] == [True] * 4


def test_an_error_in_a_split_batch_is_raised_and_results_stay_ordered():
    def maybe_fail(i):
        if i == 3000:
            raise ValueError("task 3000")
        return i

    with pytest.raises(ValueError, match="task 3000"):
        Parallel(n_jobs=2, backend="threading")(delayed(maybe_fail)(i) for i in range(5000))
    out = Parallel(n_jobs=3, backend="threading")(delayed(_noop)(i) for i in range(10_000))
    assert out == list(range(10_000))


def test_nested_calls_inside_split_batches_see_the_nested_configuration():
    from joblib_rs.parallel import get_active_backend

    def nested_kind(i):
        backend, _ = get_active_backend()
        return type(backend).__name__, backend.nesting_level

    kinds = Parallel(n_jobs=2, backend="threading")(delayed(nested_kind)(i) for i in range(2000))
    one_by_one = Parallel(n_jobs=2, backend="threading", batch_size=1)(
        delayed(nested_kind)(i) for i in range(20)
    )
    # Every task runs one nesting level down, as unbatched tasks do.
    assert set(kinds) == set(one_by_one) == {("ThreadingBackend", 1)}
