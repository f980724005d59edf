"""Store backends: joblib's StoreBackendBase API, custom backends, the local backend's API."""

from __future__ import annotations

import datetime
import os
import shutil

import numpy as np
import pytest

import joblib_rs
from joblib_rs._store_backends import (
    CacheItemInfo,
    FileSystemStoreBackend,
    StoreBackendBase,
    StoreBackendMixin,
    concurrency_safe_write,
)
from joblib_rs.memory import MemorizedResult, Memory, register_store_backend


class PlainFolderBackend(StoreBackendBase, StoreBackendMixin):
    """A third-party style backend, written against joblib's API only: plain ``open`` and
    ``shutil``, no locking, joblib's ``output.pkl`` files."""

    _open_item = staticmethod(open)
    _item_exists = staticmethod(os.path.exists)
    _move_item = staticmethod(os.replace)

    def create_location(self, location):
        os.makedirs(location, exist_ok=True)

    def clear_location(self, location):
        if location == self.location:
            for name in os.listdir(location):
                shutil.rmtree(os.path.join(location, name), ignore_errors=True)
        else:
            shutil.rmtree(location, ignore_errors=True)

    def get_items(self):
        items = []
        for dirpath, _, filenames in os.walk(self.location):
            if "output.pkl" in filenames:
                size = sum(os.path.getsize(os.path.join(dirpath, f)) for f in filenames)
                atime = os.path.getatime(os.path.join(dirpath, "output.pkl"))
                items.append(CacheItemInfo(dirpath, size, datetime.datetime.fromtimestamp(atime)))
        return items

    def configure(self, location, verbose=0, backend_options=None):
        self.location = location
        os.makedirs(location, exist_ok=True)
        options = backend_options or {}
        self.compress = options.get("compress", False)
        self.mmap_mode = options.get("mmap_mode")
        self.verbose = verbose


@pytest.fixture
def plain_backend():
    register_store_backend("plain-folder", PlainFolderBackend)
    return "plain-folder"


def test_custom_backend_caches(tmp_path, plain_backend):
    memory = Memory(tmp_path, backend=plain_backend, verbose=0)
    assert isinstance(memory.store_backend, PlainFolderBackend)
    calls = []

    @memory.cache
    def f(x):
        calls.append(x)
        return np.arange(x)

    np.testing.assert_array_equal(f(3), np.arange(3))
    np.testing.assert_array_equal(f(3), np.arange(3))
    assert calls == [3]
    outputs = list((tmp_path / "joblib_rs").rglob("output.pkl"))
    assert len(outputs) == 1
    assert f.check_call_in_cache(3)
    result = f.call_and_shelve(3)
    np.testing.assert_array_equal(result.get(), np.arange(3))
    f(4)
    memory.reduce_size(items_limit=1)
    assert len(list((tmp_path / "joblib_rs").rglob("output.pkl"))) == 1
    memory.clear(warn=False)
    assert not list((tmp_path / "joblib_rs").rglob("output.pkl"))


def test_custom_backend_damaged_output_is_recomputed(tmp_path, plain_backend):
    memory = Memory(tmp_path, backend=plain_backend, verbose=0)
    calls = []

    @memory.cache
    def f(x):
        calls.append(x)
        return x * 2

    f(1)
    (output,) = (tmp_path / "joblib_rs").rglob("output.pkl")
    output.write_bytes(b"garbage")
    with pytest.warns(joblib_rs.CacheWarning):
        assert f(1) == 2
    assert calls == [1, 1]


def test_register_store_backend_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Store backend name should be a string"):
        register_store_backend(3, PlainFolderBackend)
    with pytest.raises(ValueError, match="Store backend should inherit StoreBackendBase"):
        register_store_backend("bad", dict)
    with pytest.raises(TypeError, match="Unknown location"):
        Memory("/tmp/never-created-joblib-rs", backend="not-registered")


def test_store_object_as_location_and_odd_locations(tmp_path):
    store = FileSystemStoreBackend()
    store.configure(str(tmp_path / "store"))
    memory = Memory(store, verbose=0)
    assert memory.store_backend is store
    assert memory.cache(np.negative)(2) == -2
    with pytest.warns(UserWarning, match="Returning None instead"):
        transparent = Memory(3.5)
    assert transparent.store_backend is None


def test_local_backend_item_api(tmp_path):
    store = FileSystemStoreBackend()
    store.configure(str(tmp_path), backend_options={"compress": 3})
    call_id = ["mod", "func", "0" * 32]
    assert not store.contains_item(call_id)
    store.dump_item(call_id, {"a": np.arange(10)})
    assert store.contains_item(call_id)
    np.testing.assert_array_equal(store.load_item(call_id)["a"], np.arange(10))
    store.store_metadata(call_id, {"duration": 1.5})
    assert store.get_metadata(call_id) == {"duration": 1.5}
    assert store.get_item_info(call_id)["location"].endswith(os.path.join("func", "0" * 32))
    (item,) = store.get_items()
    assert item.size > 0 and item.path.endswith("0" * 32)
    store.clear_item(call_id)
    assert not store.contains_item(call_id)
    with pytest.raises(KeyError):
        store.load_item(call_id)
    assert store.get_metadata(call_id) == {}
    store.store_cached_func_code(["mod", "func"], "# first line: 1\ndef func(): pass\n")
    assert store.get_cached_func_code(["mod", "func"]).startswith("# first line: 1")
    store.clear_path(["mod", "func"])
    with pytest.raises(OSError):
        store.get_cached_func_code(["mod", "func"])
    assert repr(store) == f'FileSystemStoreBackend(location="{tmp_path}")'


def test_memorized_result_from_pasted_keywords(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    result = memory.cache(np.arange).call_and_shelve(4)
    pasted = MemorizedResult(
        location=str(memory.store_backend.location), func=result.func, args_id=result.args_id
    )
    np.testing.assert_array_equal(pasted.get(), np.arange(4))
    assert pasted.duration is not None
    with pytest.raises(TypeError):
        MemorizedResult(str(tmp_path))


def test_concurrency_safe_write_uses_a_unique_temporary(tmp_path):
    target = str(tmp_path / "file.txt")

    def write(obj, name):
        with open(name, "w") as f:
            f.write(obj)

    temporary = concurrency_safe_write("hello", target, write)
    assert temporary != target and temporary.startswith(target)
    os.replace(temporary, target)
    assert open(target).read() == "hello"


@pytest.mark.parametrize(
    "value",
    [
        3,
        {"a": [1, 2.5, "x"], "b": None},
        np.arange(10, dtype=">i4"),  # non-native byte order: loaded native, as load() does
        [np.zeros((3, 4)), np.array(["a", "bc"]), np.arange(5, dtype=object)],
    ],
)
def test_hits_load_exactly_what_load_returns(tmp_path, value):
    memory = Memory(tmp_path, verbose=0)
    cached = memory.cache(lambda v: v)
    cached(value)
    hit = cached(value)
    (output,) = (tmp_path / "joblib_rs").rglob("output.jrs")
    reference = joblib_rs.load(output)
    assert type(hit) is type(reference)
    if isinstance(reference, np.ndarray):
        assert hit.dtype == reference.dtype and hit.dtype.isnative
        np.testing.assert_array_equal(hit, reference)
    elif isinstance(reference, list):
        for a, b in zip(hit, reference, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    else:
        assert hit == reference


def test_unpicklable_output_warns_as_joblib_does(tmp_path):
    import pickle
    import warnings

    from joblib_rs import Memory
    from joblib_rs._store_backends import CachePicklingWarning, CacheWarning

    class Unpicklable:
        def __reduce__(self):
            raise pickle.PicklingError("not picklable here")

    memory = Memory(tmp_path, verbose=0)
    cached = memory.cache(lambda x: Unpicklable())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = cached(1)
    assert isinstance(result, Unpicklable)
    [warning] = [w for w in seen if issubclass(w.category, CacheWarning)]
    assert issubclass(warning.category, CachePicklingWarning)
    assert issubclass(warning.category, FutureWarning)
    assert "not picklable here" in str(warning.message)
