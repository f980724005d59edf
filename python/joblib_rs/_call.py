"""One run of a ``Parallel`` instance: the per-call state and the dispatch/retrieve loop.

::

    Parallel.__call__ ─► ParallelCall(parallel) ─► start(): dispatch pre_dispatch batches
                                                       │ backend.submit(BatchedCalls, callback)
    backend thread: BatchCompletionCallBack(out) ──────┘
         under call.lock: record the outcome, batching stats, progress,
         dispatch the next batch (reads the input lazily), notify call.cond
    caller thread: retrieve() waits on call.cond for the next job to read (the oldest one,
         or any finished one for 'generator_unordered'), yields its results

``Parallel`` keeps the configuration (backend, n_jobs, batch_size, timeout...) and starts a
fresh :class:`ParallelCall` per call, so nothing of a finished call lingers on the instance
except its counters (``n_dispatched_tasks``...). The first error, a timeout or ``Ctrl-C``
aborts the call: callbacks stop dispatching, the caller raises, the backend cancels what it
can (``abort_everything``, outside the lock: a process pool joins threads that need it).
"""

from __future__ import annotations

import collections
import functools
import itertools
import threading
import time
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

from joblib_rs import _utils
from joblib_rs._backends.base import ParallelBackendBase, TimeoutError
from joblib_rs._batch import BatchedCalls, TaskChunk, learned_batch_size, remember_batch_size
from joblib_rs._interrupts import raise_if_interrupted, watch_interrupts
from joblib_rs._progress import make_progress_bar, report_progress, warn_exit_early

if TYPE_CHECKING:
    from joblib_rs.parallel import Parallel

__all__ = [
    "TASK_DONE",
    "TASK_ERROR",
    "TASK_PENDING",
    "BatchCompletionCallBack",
    "BatchedCalls",
    "ParallelCall",
]

#: ``pre_dispatch`` arithmetic (``'2 * 4'`` once ``n_jobs`` is replaced), without ``eval``.
eval_expr = functools.lru_cache(maxsize=64)(_utils.eval_expr)


#: Most tasks per batch auto-batching reads for the process pool (workers start sooner).
MAX_READ_BATCH_SIZE = 20_000

TASK_DONE = "Done"
TASK_ERROR = "Error"
TASK_PENDING = "Pending"


class BatchCompletionCallBack:
    """Tracks one dispatched batch; the backend calls it when the batch is done.

    Records the outcome (results or exception), reports the duration to the auto-batching
    policy, prints progress, dispatches the next batch and wakes the caller's thread.
    """

    __slots__ = (
        "_completion_timeout_counter",
        "_result",
        "batch_size",
        "call",
        "dispatch_timestamp",
        "job",
        "parallel",
        "parallel_call_id",
        "status",
    )

    def __init__(self, dispatch_timestamp: float, batch_size: int, call: ParallelCall) -> None:
        self.dispatch_timestamp = dispatch_timestamp
        self.batch_size = batch_size
        self.call = call
        self.parallel = call.parallel
        self.parallel_call_id = call.call_id
        self.job: Any = None
        self.status = TASK_PENDING
        self._result: Any = None
        self._completion_timeout_counter: float | None = None

    def register_job(self, job: Any) -> None:
        """Keep the future-like object that ``submit`` returned."""
        self.job = job

    def get_status(self, timeout: float | None) -> str:
        """The batch's status; once pending longer than ``timeout`` seconds (counted from
        the first call that passes one), it fails with :class:`TimeoutError`."""
        if timeout is None or self.status != TASK_PENDING:
            return self.status
        now = time.time()
        if self._completion_timeout_counter is None:
            self._completion_timeout_counter = now
        if now - self._completion_timeout_counter > timeout:
            self._register_outcome(TASK_ERROR, TimeoutError())
        return self.status

    def get_result(self, timeout: float | None) -> Any:
        """Results of the batch, or raise its exception."""
        backend = self.call.backend
        if self.status == TASK_PENDING and not backend.supports_retrieve_callback:
            try:
                outcome = (TASK_DONE, backend.retrieve_result(self.job, timeout=timeout))
            except BaseException as exc:
                outcome = (TASK_ERROR, exc)
            self._register_outcome(*outcome)
        try:
            if self.status == TASK_ERROR:
                raise self._result
            return self._result
        finally:
            self._result = None

    def __call__(self, out: Any) -> None:
        """Called by the backend, usually from one of its threads, when the batch is done."""
        call = self.call
        backend = call.backend
        if not backend.supports_retrieve_callback:
            # The caller's thread retrieves the result; just keep the workers fed.
            with call.lock:
                if not call.aborting:
                    self._account_completion()
            return
        with call.lock:
            if call.aborting:
                return
            try:
                status, result = TASK_DONE, backend.retrieve_result_callback(out)
            except BaseException as exc:
                status, result = TASK_ERROR, exc
            self._register_outcome(status, result)
            if status == TASK_DONE:
                self._account_completion()

    def _account_completion(self) -> None:
        # Called with call.lock held.
        call = self.call
        duration = time.time() - self.dispatch_timestamp
        call.backend.batch_completed(self.batch_size, duration)
        call.n_completed_tasks += self.batch_size
        call.n_completed_batches += 1
        call.print_progress()
        if call.original_iterator is not None:
            call.dispatch_next()
            call.top_up()
        # The caller's thread waits for the head job (woken by _register_outcome) or, with
        # no job left, for the end of the input: wake it only when it has something to see.
        if not call.return_ordered or not call.iterating or call.aborting:
            call.cond.notify_all()

    def _register_outcome(self, status: str, result: Any) -> None:
        call = self.call
        with call.lock:
            if self.status != TASK_PENDING:
                # A timeout and a late result race: the first one wins.
                return
            self.status = status
            self._result = result
            self.job = None
            if status == TASK_ERROR:
                call.exception = True
                call.aborting = True
            if not call.return_ordered:
                call.jobs_set.discard(self)
                call.jobs.append(self)
            elif status == TASK_DONE and call.jobs and call.jobs[0] is not self:
                # In order, the caller's thread waits for the head job only: a later one
                # finishing first would wake it (and take the GIL) for nothing.
                return
            call.cond.notify_all()


class ParallelCall:
    """The state of one ``Parallel`` call and the loop that runs it.

    Parameters
    ----------
    parallel : Parallel
        The instance being called: its configuration, backend and ``_print``.
    n_tasks : int or None
        Number of tasks when the input has a length.
    """

    def __init__(self, parallel: Parallel, n_tasks: int | None) -> None:
        self.parallel = parallel
        self.backend: ParallelBackendBase = parallel._backend
        self.return_ordered = parallel.return_ordered
        self.n_tasks = n_tasks
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.call_id = object()
        self.jobs: collections.deque[BatchCompletionCallBack] = collections.deque()
        self.jobs_set: set[BatchCompletionCallBack] = set()
        self.ready_batches: collections.deque[BatchedCalls] = collections.deque()
        self.pickle_cache: dict = {}
        self.original_iterator: Any = None
        self.iterating = False
        self.aborting = False
        self.aborted = False
        self.exception = False
        self.n_dispatched_batches = 0
        self.n_dispatched_tasks = 0
        self.n_completed_tasks = 0
        self.n_completed_batches = 0
        self.n_read_batches = 0
        self.nb_consumed = 0
        self.dispatch_owed = 0
        self.max_unread_batches: int | None = None
        self.pre_dispatch_amount = 0
        self.finished_printed = False
        self.n_jobs = 1
        # The function of the first task, whose batch size is learned (auto-batching).
        self.learning_func: Any = None
        self.start_time = time.time()
        self.progress_bar: Any = make_progress_bar(n_tasks) if parallel.progress else None

    # ------------------------------------------------------------------ dispatching

    def _dispatch(self, batch: BatchedCalls) -> None:
        # Called with self.lock held.
        if self.aborting:
            return
        self.n_dispatched_tasks += len(batch)
        self.n_dispatched_batches += 1
        tracker = BatchCompletionCallBack(time.time(), len(batch), self)
        if self.return_ordered:
            self.jobs.append(tracker)
        else:
            self.jobs_set.add(tracker)
        job = self.backend.submit(batch, callback=tracker)
        if tracker.status == TASK_PENDING:
            tracker.register_job(job)

    def dispatch_next(self) -> None:
        """Dispatch one more batch; called as batches complete.

        In generator modes, dispatching pauses while too many finished results wait to be
        read; the consumer resumes it.
        """
        with self.lock:
            if self._too_many_unread():
                self.dispatch_owed += 1
                return
            if not self.dispatch_one_batch(self.original_iterator):
                self.iterating = False
                self.original_iterator = None
                self._on_input_exhausted()

    def top_up(self) -> None:
        """Auto-batching, after a completion (lock held): keep ``pre_dispatch`` batches in
        flight; a first dispatch of a remembered size has fewer (workers would then wait)."""
        if self.parallel.batch_size != "auto":
            return
        while (
            self.original_iterator is not None
            and not self.aborting
            and not self._too_many_unread()
            and self.n_dispatched_batches - self.n_completed_batches < self.pre_dispatch_amount
        ):
            self.dispatch_next()

    def _too_many_unread(self) -> bool:
        limit = self.max_unread_batches
        return limit is not None and self.n_completed_batches - self.n_read_batches >= limit

    def dispatch_one_batch(self, iterator: Any) -> bool:
        """Take the next batch from ``iterator`` and dispatch it; False when there is none.

        Thread-safe: the task iterator is only consumed under the call's lock. An exception
        raised by the iterator is reported as a failed task.
        """
        if self.aborting or iterator is None:
            return False
        with self.lock:
            batch_size = 1
            try:
                if self.ready_batches:
                    self._dispatch(self.ready_batches.popleft())
                    return True
                batch_size = self._get_batch_size()
                n_jobs = self.n_jobs
                compact = getattr(self.backend, "reads_compact_batches", False)
                if compact and self.parallel.batch_size == "auto":
                    batch_size = min(batch_size, MAX_READ_BATCH_SIZE)
                chunk = TaskChunk.read(iterator, batch_size * n_jobs, compact)
                if not len(chunk):
                    return False
                if self.learning_func is None and self.parallel.batch_size == "auto":
                    batch_size = self._recall_batch_size(chunk, iterator, batch_size)
                big_batch_size = batch_size * n_jobs
                n_read = len(chunk)
                if iterator is self.original_iterator and n_read < big_batch_size:
                    # The end of the input: smaller batches even out the last stragglers,
                    # unless all of it fits in one batch of the measured ideal size (then
                    # one batch per worker is balanced already).
                    if self.parallel.batch_size == "auto" and n_read <= batch_size:
                        final_batch_size = -(-n_read // n_jobs)
                    else:
                        final_batch_size = max(1, n_read // (10 * n_jobs))
                else:
                    final_batch_size = max(1, n_read // n_jobs)
                nested = self.backend.get_nested_backend()
                splittable = self.parallel.batch_size == "auto"
                reducer_callback = self.parallel._reducer_callback
                for i in range(0, n_read, final_batch_size):
                    batch = chunk.batch(
                        i, i + final_batch_size, nested, reducer_callback, self.pickle_cache
                    )
                    batch.splittable = splittable
                    self.ready_batches.append(batch)
                self._dispatch(self.ready_batches.popleft())
            except BaseException as exc:
                # Raised by the task iterator or by submit, maybe in a backend thread:
                # report it through a failed batch so the caller's thread raises it.
                tracker = BatchCompletionCallBack(0.0, batch_size, self)
                if self.return_ordered:
                    self.jobs.append(tracker)
                tracker._register_outcome(TASK_ERROR, exc)
                return False
            return True

    def _recall_batch_size(self, chunk: TaskChunk, iterator: Any, batch_size: int) -> int:
        """Start from the batch size an earlier call of the same function learned (reading
        the tasks it needs); called at the first dispatch of an auto-batched call."""
        self.learning_func = chunk.first_function()
        seed = getattr(self.backend, "seed_batch_size", None)
        learned = learned_batch_size(self.backend, self.learning_func)
        if seed is None or learned is None or learned <= batch_size:
            return batch_size
        seed(learned)
        compact = getattr(self.backend, "reads_compact_batches", False)
        chunk.extend(TaskChunk.read(iterator, (learned - batch_size) * self.n_jobs, compact))
        return learned

    def _remember_batch_size(self) -> None:
        size = getattr(self.backend, "effective_batch_size", None)
        if self.learning_func is not None and size is not None:
            remember_batch_size(self.backend, self.learning_func, size)

    def _get_batch_size(self) -> int:
        batch_size = self.parallel.batch_size
        if batch_size == "auto":
            return self.backend.compute_batch_size()
        return batch_size

    def _on_input_exhausted(self) -> None:
        if self.progress_bar is not None and self.n_tasks is None:
            self.progress_bar.set_total(self.n_dispatched_tasks)

    # ------------------------------------------------------------------ progress

    def is_completed(self) -> bool:
        """Whether every dispatched task finished and no more will come."""
        return self.n_completed_tasks == self.n_dispatched_tasks and not (
            self.iterating or self.aborting
        )

    def print_progress(self) -> None:
        """Report progress, at a frequency set by ``verbose``; update the progress bar."""
        report_progress(self)

    def close_progress_bar(self) -> None:
        """Draw the final state of the progress bar and close it."""
        if self.progress_bar is not None:
            self.progress_bar.update_to(self.n_completed_tasks)
            self.progress_bar.close()
            self.progress_bar = None

    # ------------------------------------------------------------------ aborting

    def abort(self) -> None:
        """Cancel the call's work on the backend (once). Must run without the lock."""
        self.aborting = True
        if not self.aborted:
            self.backend.abort_everything(ensure_ready=self.parallel._managed_backend)
        self.aborted = True

    # ------------------------------------------------------------------ retrieval

    def _start(self, iterator: Any, pre_dispatch: Any) -> None:
        self.iterating = False
        if self.dispatch_one_batch(iterator):
            self.iterating = self.original_iterator is not None
        while self.dispatch_one_batch(iterator):
            pass
        if pre_dispatch == "all":
            self.iterating = False
            self._on_input_exhausted()

    def _next_ready_job(self) -> BatchCompletionCallBack | None:
        """Wait for the next job to read; None when the call is complete.

        Raises the first error as soon as one is known.
        """
        callback_backend = self.backend.supports_retrieve_callback
        timeout = self.parallel.timeout
        deadline = None
        with self.lock:
            while True:
                raise_if_interrupted()
                if self.aborting:
                    error_job = next((j for j in self.jobs if j.status == TASK_ERROR), None)
                    if error_job is not None:
                        return error_job
                    raise RuntimeError("The Parallel call was aborted.")
                if (
                    self.dispatch_owed
                    and self.original_iterator is not None
                    and not self._too_many_unread()
                ):
                    self.dispatch_owed -= 1
                    self.dispatch_next()
                    continue
                if self.return_ordered:
                    if self.jobs:
                        head = self.jobs[0]
                        if not callback_backend or head.status != TASK_PENDING:
                            return self.jobs.popleft()
                        waited_on = head
                    elif not self.iterating:
                        return None
                    else:
                        waited_on = None
                else:
                    if self.jobs:
                        return self.jobs.popleft()
                    if not self.jobs_set and not self.iterating:
                        return None
                    waited_on = next(iter(self.jobs_set), None)
                if timeout is None or waited_on is None:
                    self.cond.wait()
                    continue
                now = time.monotonic()
                if deadline is None:
                    deadline = now + timeout
                if now >= deadline:
                    waited_on._register_outcome(TASK_ERROR, TimeoutError())
                    continue
                self.cond.wait(deadline - now)

    def _retrieve(self, whole_batches: bool) -> Generator[Any, None, None]:
        timeout = self.parallel.timeout
        while True:
            job = self._next_ready_job()
            if job is None:
                return
            results = job.get_result(timeout)
            with self.lock:
                self.n_read_batches += 1
            if whole_batches:
                self.nb_consumed += len(results)
                yield results
                continue
            for result in results:
                self.nb_consumed += 1
                yield result

    def run(
        self, iterable: Iterable[Any], n_jobs: int, whole_batches: bool = False
    ) -> Generator[Any, None, None]:
        """Prepare the dispatch of ``iterable`` on ``n_jobs`` workers; returns the output
        generator (run it to its first yield to dispatch the first batches). It yields
        results one by one, or each batch's list of results with ``whole_batches`` (what
        ``return_as='list'`` collects: no generator step per result)."""
        parallel = self.parallel
        self.n_jobs = n_jobs
        backend_name = type(self.backend).__name__
        if n_jobs == 0:
            raise RuntimeError(f"{backend_name} has no active worker.")
        parallel._print(f"Using backend {backend_name} with {n_jobs} concurrent workers.")
        if hasattr(self.backend, "start_call"):
            self.backend.start_call()
        parallel._calling = True

        iterator = iter(iterable)
        pre_dispatch = parallel.pre_dispatch
        if pre_dispatch == "all":
            self.original_iterator = None
            self.pre_dispatch_amount = 0
        else:
            self.original_iterator = iterator
            if isinstance(pre_dispatch, str):
                pre_dispatch = eval_expr(pre_dispatch.replace("n_jobs", str(n_jobs)))
            self.pre_dispatch_amount = pre_dispatch = max(int(pre_dispatch), 1)
            if parallel.return_generator:
                self.max_unread_batches = max(pre_dispatch, 2 * n_jobs)
            iterator = itertools.islice(iterator, self.pre_dispatch_amount)
        return self._outputs(iterator, pre_dispatch, whole_batches)

    def _outputs(
        self, iterator: Any, pre_dispatch: Any, whole_batches: bool
    ) -> Generator[Any, None, None]:
        parallel = self.parallel
        dispatch_thread_id = threading.get_ident()
        detached = False
        interrupts = watch_interrupts()
        try:
            interrupts.__enter__()
            self._start(iterator, pre_dispatch)
            # The first yield only makes the generator enter this try block.
            yield
            with self.backend.retrieval_context():
                yield from self._retrieve(whole_batches)
            self._remember_batch_size()
            self.iterating = False
            self.print_progress()
        except GeneratorExit:
            self.exception = True
            if dispatch_thread_id != threading.get_ident():
                # Collected in another thread: clean up in a thread of our own so no
                # thread ever joins itself.
                detached = True
                parallel._cleanup_thread = threading.Thread(
                    target=self._abort_and_reset, name="joblib_rs-generator-exit", daemon=True
                )
                parallel._cleanup_thread.start()
                return
            self.abort()
            if parallel.return_generator:
                warn_exit_early(self)
            raise
        except BaseException:
            self.exception = True
            self.abort()
            raise
        finally:
            interrupts.__exit__(None, None, None)
            with self.lock:
                self.jobs = collections.deque()
                self.jobs_set = set()
                self.ready_batches.clear()
            if not detached:
                # Otherwise the detached clean-up frees the instance when it is done.
                parallel._running = False
                self.close_progress_bar()
                parallel._terminate_and_reset()

    def _abort_and_reset(self) -> None:
        try:
            self.abort()
            if self.parallel.return_generator:
                warn_exit_early(self)
            self.close_progress_bar()
            self.parallel._terminate_and_reset()
        finally:
            self.parallel._running = False

    def sequential_outputs(self, iterable: Iterable[Any]) -> Generator[Any, None, None]:
        """Run the tasks in this thread, one after another (``n_jobs=1``)."""
        try:
            self.iterating = True
            self.original_iterator = iterable
            batch_size = self._get_batch_size()
            if batch_size != 1:
                # Read the input by batches, as the parallel path does.
                it = iter(iterable)
                chunks = iter(lambda: tuple(itertools.islice(it, batch_size)), ())
                iterable = itertools.chain.from_iterable(chunks)
            yield None
            for func, args, kwargs in iterable:
                self.n_dispatched_batches += 1
                self.n_dispatched_tasks += 1
                result = func(*args, **kwargs)
                self.n_completed_tasks += 1
                self.print_progress()
                yield result
                self.nb_consumed += 1
        except BaseException:
            self.exception = True
            self.aborting = True
            self.aborted = True
            raise
        finally:
            self.parallel._running = False
            self.iterating = False
            self.original_iterator = None
            self.print_progress()
            self.close_progress_bar()
