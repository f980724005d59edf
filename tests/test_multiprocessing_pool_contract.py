"""The ``'multiprocessing'`` backend keeps joblib's pool contract for backends built on it.

ray's joblib backend subclasses ``MultiprocessingBackend``, sets
``joblib.pool.PicklingPool.__bases__`` to its own pool class and passes its own options
(``ray_remote_args``) through ``configure``; the backend must then build ``MemmappingPool``
on that base, hand it every option, and let it pickle the batches. These tests play the
same trick with a thread pool that is not a ``multiprocessing.pool.Pool`` (the ray test
itself is ``test_ray.py``, run when ray is installed).
"""

from __future__ import annotations

import gc
import multiprocessing.pool
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from joblib_rs import Parallel, delayed, parallel_config, register_parallel_backend
from joblib_rs._backends.multiprocessing_pool import MultiprocessingBackend
from joblib_rs.pool import MemmappingPool, PicklingPool


class ThreadApplyPool:
    """``multiprocessing.Pool``'s ``apply_async`` on threads, with an option of its own."""

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        label: str | None = None,
    ) -> None:
        self.label = label
        self.processes = processes
        self._executor = ThreadPoolExecutor(processes, initializer=initializer, initargs=initargs)

    def apply_async(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], None] | None = None,
        error_callback: Callable[[BaseException], None] | None = None,
    ) -> Future[Any]:
        future = self._executor.submit(func, *args, **(kwds or {}))

        def done(f: Future[Any]) -> None:
            exc = f.exception()
            if exc is None and callback is not None:
                callback(f.result())
            elif exc is not None and error_callback is not None:
                error_callback(exc)

        future.add_done_callback(done)
        return future

    def close(self) -> None:
        self._executor.shutdown(wait=False)

    def terminate(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def join(self) -> None:
        self._executor.shutdown(wait=True)


class ReparentingBackend(MultiprocessingBackend):
    """What ray's ``RayBackend`` does, on :class:`ThreadApplyPool`."""

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        label: str | None = None,
        **pool_kwargs: Any,
    ) -> int:
        PicklingPool.__bases__ = (ThreadApplyPool,)
        if label is not None:  # else the backend's own (parallel_config's), as ray does
            pool_kwargs["label"] = label
        return super().configure(n_jobs, parallel, prefer, require, **pool_kwargs)


@pytest.fixture
def reparenting_backend() -> Iterator[str]:
    register_parallel_backend("reparenting", ReparentingBackend)
    try:
        yield "reparenting"
    finally:
        gc.collect()  # pools built on ThreadApplyPool go before the base changes back
        PicklingPool.__bases__ = (multiprocessing.pool.Pool,)


def _where(x: Any) -> tuple[int, str, str]:
    return os.getpid(), threading.current_thread().name, type(x).__name__


def _fail(x: int) -> int:
    raise KeyError(f"bad {x}")


def test_a_reparented_pool_gets_its_options_and_runs_the_batches(reparenting_backend) -> None:
    big = np.ones(500_000)  # above max_nbytes: the pool's base pickles (here: shares) it
    with Parallel(n_jobs=2, backend=reparenting_backend, label="mine", max_nbytes=1000) as p:
        out = p(delayed(_where)(big) for _ in range(6))
        pool = p._backend._pool
        assert isinstance(pool, MemmappingPool) and isinstance(pool, ThreadApplyPool)
        assert not isinstance(pool, multiprocessing.pool.Pool)
        assert pool.label == "mine" and pool.processes == 2
    assert {pid for pid, _, _ in out} == {os.getpid()}
    assert all(name != threading.main_thread().name for _, name, _ in out)
    assert {kind for _, _, kind in out} == {"ndarray"}  # not memory-mapped by joblib-rs


def test_a_reparented_pool_reports_task_errors_with_their_type(reparenting_backend) -> None:
    with pytest.raises(KeyError, match="bad 3") as info:
        Parallel(n_jobs=2, backend=reparenting_backend)(delayed(_fail)(i) for i in [3])
    assert "_fail" in str(info.value.__cause__)  # the worker's traceback


def test_options_through_parallel_config_reach_a_reparented_pool(reparenting_backend) -> None:
    with parallel_config(backend=reparenting_backend, n_jobs=2, label="configured"):
        with Parallel() as p:
            assert p(delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
            assert p._backend._pool.label == "configured"


class Celsius:
    def __init__(self, value: float) -> None:
        self.value = value


def _reduce_celsius(obj: Celsius) -> tuple[Any, tuple[float]]:
    return float, (obj.value + 1000.0,)


def _kind(x: Any) -> tuple[str, Any]:
    return type(x).__name__, x


def test_forward_reducers_make_the_pool_pickle_the_batches() -> None:
    # As in joblib, reducers given to the backend reach MemmappingPool and are applied.
    out = Parallel(
        n_jobs=2, backend="multiprocessing", forward_reducers={Celsius: _reduce_celsius}
    )(delayed(_kind)(Celsius(float(i))) for i in range(3))
    assert out == [("float", 1000.0), ("float", 1001.0), ("float", 1002.0)]


def test_the_default_pool_is_a_memmapping_pool_on_multiprocessing() -> None:
    with Parallel(n_jobs=2, backend="multiprocessing") as p:
        assert p(delayed(abs)(-i) for i in range(3)) == [0, 1, 2]
        pool = p._backend._pool
        assert isinstance(pool, MemmappingPool) and isinstance(pool, multiprocessing.pool.Pool)
        # joblib-rs's own shared-memory transport carries the arrays: no second folder.
        assert pool._temp_folder is None


def test_an_option_no_pool_takes_is_named() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['label'\]"):
        Parallel(n_jobs=2, backend="multiprocessing", label="x")([delayed(abs)(1)])
