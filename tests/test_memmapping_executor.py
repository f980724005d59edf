"""joblib's pool-facing memmapping API on joblib-rs: ``_memmapping_reducer``'s reducers and
``TemporaryResourcesManager``, and ``joblib.executor``'s memmapping executor, with real worker
processes and real files."""

from __future__ import annotations

import mmap
import os
import pickle

import numpy as np
import pytest

from joblib_rs import _memmapping_reducer as jmr
from joblib_rs.executor import _TestingMemmappingExecutor, get_memmapping_executor


def _rebuild(reducer, a):
    cons, args = reducer(a)
    return cons(*args)


def _double_in_place(a):
    a *= 2
    return None


def _info(a):
    return type(a).__name__, jmr.has_shareable_memory(a), bool(a.flags.writeable)


def test_forward_reducer_memmap_views_travel_by_reference(tmp_path):
    filename = str(tmp_path / "data.mmap")
    base = np.memmap(filename, dtype=np.float64, shape=(6, 8), mode="w+")
    base[:] = np.arange(48).reshape(6, 8)
    reducer = jmr.ArrayMemmapForwardReducer(None, str(tmp_path / "pool"), "r+", False)
    for view in (base, base[1:4, 2:7], base.T, np.asarray(base)[::2, 1::3]):
        rebuilt = _rebuild(reducer, view)
        assert jmr.has_shareable_memory(rebuilt)
        np.testing.assert_array_equal(rebuilt, view)
    # A reversed view cannot be offset + strides: it travels as a copy, still equal.
    reversed_view = base[::-1]
    rebuilt = _rebuild(reducer, reversed_view)
    assert not jmr.has_shareable_memory(rebuilt)
    np.testing.assert_array_equal(rebuilt, reversed_view)
    # Nothing was written: the views point into the user's file.
    assert not (tmp_path / "pool").exists()


def test_forward_reducer_dumps_large_arrays_once(tmp_path):
    folder = tmp_path / "pool"
    reducer = jmr.ArrayMemmapForwardReducer(100, lambda: str(folder), "r", True)
    small = np.ones(5)
    assert not jmr.has_shareable_memory(_rebuild(reducer, small))
    assert not folder.exists()
    large = np.asfortranarray(np.arange(200.0).reshape(20, 10))
    first = _rebuild(reducer, large)
    second = _rebuild(reducer, large)
    assert isinstance(first, np.memmap) and first.mode == "r"
    np.testing.assert_array_equal(first, large)
    np.testing.assert_array_equal(second, large)
    assert len(os.listdir(folder)) == 1
    # Object arrays are never mapped.
    objects = np.array(["x"] * 100, dtype=object)
    assert not jmr.has_shareable_memory(_rebuild(reducer, objects))
    # The reducer itself pickles (without its folder resolver).
    clone = pickle.loads(pickle.dumps(reducer))
    assert clone._max_nbytes == 100 and clone._mmap_mode == "r"


def test_backward_reducer(tmp_path):
    filename = str(tmp_path / "user.mmap")
    user = np.memmap(filename, dtype=np.uint8, mode="w+", shape=3 * mmap.ALLOCATIONGRANULARITY)
    back = _rebuild(jmr.reduce_array_memmap_backward, user[10:])
    assert isinstance(back, np.memmap) and back.offset == 10
    # A map of a temporary file comes back as an ordinary array.
    jmr.JOBLIB_MMAPS.add(filename)
    try:
        back = _rebuild(jmr.reduce_array_memmap_backward, user)
        assert not jmr.has_shareable_memory(back)
    finally:
        jmr.JOBLIB_MMAPS.discard(filename)


def test_temporary_resources_manager(tmp_path):
    manager = jmr.TemporaryResourcesManager(str(tmp_path), context_id="first")
    first = manager.resolve_temp_folder_name()
    assert os.path.dirname(first) == str(tmp_path) and first.endswith("_first")
    manager.set_current_context("second")
    second = manager.resolve_temp_folder_name()
    assert second != first
    os.makedirs(first)
    with open(os.path.join(first, "x.dat"), "wb") as f:
        f.write(b"x")
    manager._clean_temporary_resources("first")  # not empty, not forced: kept
    assert os.path.isdir(first)
    manager._clean_temporary_resources("first", force=True)
    assert not os.path.exists(first)


def test_memmapping_executor_shares_arrays(tmp_path):
    executor = _TestingMemmappingExecutor.get_memmapping_executor(
        2, max_nbytes=10, temp_folder=str(tmp_path)
    )
    try:
        assert not os.path.exists(executor._temp_folder)
        filename = str(tmp_path / "user.mmap")
        shared = np.memmap(filename, dtype=np.float32, shape=(4,), mode="w+")
        shared[:] = 1
        executor.map(_double_in_place, [shared])
        np.testing.assert_array_equal(shared, 2)  # the worker wrote into the user's file
        large = np.ones(100)
        assert executor.apply_async(_info, (large,)).get() == ("memmap", True, False)
        assert len(os.listdir(executor._temp_folder)) == 1
        result = executor.submit(np.ones, 1000).result()
        assert not jmr.has_shareable_memory(result)
    finally:
        executor.terminate()
    assert not os.path.exists(executor._temp_folder)


def test_get_memmapping_executor_without_threshold(tmp_path):
    executor = get_memmapping_executor(2, max_nbytes=None, temp_folder=str(tmp_path))
    try:
        assert executor.submit(_info, np.ones(1000)).result() == ("ndarray", False, True)
        assert os.listdir(tmp_path) == []
    finally:
        executor.terminate()


def test_reducers_of_a_plain_executor():
    from joblib_rs.externals.loky import get_reusable_executor

    calls = []

    class Box:
        def __init__(self, value):
            self.value = value

    def reduce_box(box):
        calls.append(box.value)
        return Box, (box.value * 10,)

    executor = get_reusable_executor(1, job_reducers={Box: reduce_box})
    try:
        assert executor.submit(lambda box: box.value, Box(4)).result() == 40
        assert calls == [4]
    finally:
        executor.shutdown()


def test_joblib_import_paths_of_the_pool_names():
    from joblib_rs import _parallel_backends, _store_backends, disk, executor, pool
    from joblib_rs.externals.loky.process_executor import ShutdownExecutorError

    assert _parallel_backends.MemmappingPool is pool.MemmappingPool
    assert _parallel_backends.get_memmapping_executor is executor.get_memmapping_executor
    assert _parallel_backends.ShutdownExecutorError is ShutdownExecutorError
    assert _parallel_backends.cpu_count() >= 1
    assert _store_backends.mkdirp is disk.mkdirp and _store_backends.rm_subdirs is disk.rm_subdirs
    with pytest.raises(AttributeError):
        _parallel_backends.NoSuchName  # noqa: B018


def test_forward_reducer_verbose_and_prewarm(tmp_path, capsys):
    reducer = jmr.ArrayMemmapForwardReducer(10, str(tmp_path), "r", False, verbose=1, prewarm=True)
    rebuilt = _rebuild(reducer, np.arange(100.0))
    np.testing.assert_array_equal(rebuilt, np.arange(100.0))
    [name] = os.listdir(tmp_path)
    assert name in capsys.readouterr().err
