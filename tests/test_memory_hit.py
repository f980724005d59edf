"""The Memory hit path in Rust: ``_core.CallPlan`` binds and hashes a call as the Python binder
does, ``_core.EntryReader`` finds, verifies and decodes the entry, and the pickle it keeps for
stat-only hits is never returned once the file changed."""

import os
import time
import warnings

import numpy as np
import pytest

import joblib_rs
from joblib_rs import _core
from joblib_rs._func_inspect import ArgBinder


def plain(a, b, c=3):
    return a + b + c


def star(a, *rest, key=1, **extra):
    return a


def kwonly(a, *, b, c=2):
    return a


class Thing:
    def method(self, x, y=1):
        return x + y


def _plan_for(func, ignore=()):
    binder = ArgBinder(func, list(ignore))
    reader = _core.EntryReader(lambda b: b, lambda b: b, None, 1 << 20)
    return binder, _core.CallPlan(reader, "/nonexistent/", *binder.layout(), False, False)


CALLS = [
    (plain, (), (1, 2), {}),
    (plain, (), (1,), {"b": 2}),
    (plain, (), (1, 2, 4), {}),
    (plain, (), (), {"c": 5, "b": 1, "a": 0}),
    (plain, ("c",), (1, 2, 9), {}),
    (plain, ("a", "b"), (1, 2), {}),
    (star, (), (1,), {}),
    (star, (), (1, 2, 3), {"key": 4, "z": 5}),
    (star, ("*", "**"), (1, 2), {"zz": [1]}),
    (kwonly, (), (1,), {"b": 2}),
    (kwonly, (), (1,), {"b": 2, "c": 3}),
    (Thing().method, (), (1,), {}),
    (Thing().method, ("self",), (1,), {"y": 2}),
    (len, (), ([1, 2],), {}),
    (np.add, (), (1, 2), {"dtype": float}),
]


@pytest.mark.parametrize(("func", "ignore", "args", "kwargs"), CALLS)
def test_call_plan_binds_and_hashes_as_the_python_binder(func, ignore, args, kwargs):
    binder, plan = _plan_for(func, ignore)
    expected = binder.bind(args, dict(kwargs))
    bound = plan.bind(args, kwargs)
    assert bound == expected
    assert list(bound) == list(expected)
    assert plan.args_id(args, kwargs) == _core.hash(expected, "xxh3", False)


FAILING = [
    (plain, (1,), {}),  # missing b
    (plain, (1, 2, 3, 4), {}),  # too many
    (plain, (1, 2), {"a": 1}),  # a twice
    (plain, (1, 2), {"zz": 1}),  # unknown keyword
    (kwonly, (1,), {}),  # missing keyword-only b
]


@pytest.mark.parametrize(("func", "args", "kwargs"), FAILING)
def test_calls_that_do_not_bind_are_left_to_the_python_binder(func, args, kwargs):
    binder, plan = _plan_for(func)
    assert plan.bind(args, kwargs) is None
    assert plan.args_id(args, kwargs) is None
    with pytest.raises(ValueError):
        binder.bind(args, dict(kwargs))


def test_a_call_that_does_not_bind_raises_joblibs_error(tmp_path):
    cached = joblib_rs.Memory(tmp_path, verbose=0).cache(plain)
    assert cached(1, 2) == 6
    with pytest.raises(ValueError, match="Wrong number of arguments"):
        cached(1)
    with pytest.raises(ValueError, match="given both as positional and as keyword"):
        cached(1, 2, a=3)


calls = []


def counted(x):
    calls.append(x)
    return {"x": x, "n": len(calls)}


def _entry_output(cached, *args):
    plan = cached._plan
    return os.path.join(plan.prefix + plan.args_id(args, {}), _core.STORE_OUTPUT)


def _settle():
    # Older than one tick of the file clock: the reader keeps the verified pickle.
    time.sleep(0.12)


def _flip_in_place(path):
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0xFF
        f.seek(0)
        f.write(data)


def test_kept_pickle_is_dropped_when_the_file_changes_in_place(tmp_path):
    calls.clear()
    cached = joblib_rs.Memory(tmp_path, verbose=0).cache(counted)
    first = cached(7)
    _settle()
    assert cached(7) == first
    assert cached(7) == first
    _flip_in_place(_entry_output(cached, 7))  # same size and inode, a new mtime
    with pytest.warns(joblib_rs.CacheWarning, match="could not be loaded"):
        again = cached(7)
    assert again["n"] == 2
    assert len(calls) == 2


def test_a_change_hiding_its_mtime_gets_the_stored_bytes_then_is_caught(tmp_path):
    calls.clear()
    cached = joblib_rs.Memory(tmp_path, verbose=0).cache(counted)
    first = cached(8)
    _settle()
    assert cached(8) == first
    path = _entry_output(cached, 8)
    st = os.stat(path)
    _flip_in_place(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    # The kept bytes are the verified, stored ones: never the flipped byte.
    assert cached(8) == first
    time.sleep(1.1)  # the entry's verification (once a second) reads the file again
    with pytest.warns(joblib_rs.CacheWarning, match="could not be loaded"):
        again = cached(8)
    assert again["n"] == 2


def test_kept_pickle_follows_a_replaced_entry(tmp_path):
    calls.clear()
    cached = joblib_rs.Memory(tmp_path, verbose=0).cache(counted)
    assert cached(1)["n"] == 1
    _settle()
    assert cached(1)["n"] == 1
    other = joblib_rs.Memory(tmp_path, verbose=0).cache(counted)
    recomputed, _ = other.call(1)
    assert recomputed["n"] == 2
    assert cached(1)["n"] == 2
    other.clear(warn=False)
    assert cached(1)["n"] == 3


def small_array(n):
    return np.arange(n, dtype=">i4")


def test_hits_rebuild_in_band_arrays_in_native_byte_order(tmp_path):
    cached = joblib_rs.Memory(tmp_path, verbose=0).cache(small_array)
    cached(3)
    _settle()
    for _ in range(3):  # read, then kept
        out = cached(3)
        assert out.dtype.isnative
        assert out.tolist() == [0, 1, 2]


def big_array(n):
    return np.arange(n, dtype=np.float64)


def test_outputs_with_buffers_are_decoded_by_the_python_loader(tmp_path):
    cached = joblib_rs.Memory(tmp_path, verbose=0).cache(big_array)
    expected = big_array(100_000)
    np.testing.assert_array_equal(cached(100_000), expected)
    _settle()
    for _ in range(2):
        np.testing.assert_array_equal(cached(100_000), expected)


def test_store_hit_reports_miss_damage_and_size(tmp_path):
    memory = joblib_rs.Memory(tmp_path, verbose=0)
    cached = memory.cache(counted)
    cached(3)
    reader = memory.store_backend.reader
    entry = os.path.dirname(_entry_output(cached, 3))
    hit = reader.fetch(entry)
    assert (hit.found, hit.damage, hit.size) == (True, None, None)
    assert hit.value["x"] == 3
    by_path = reader.fetch(entry, mapped=True)
    assert not by_path.found
    assert by_path.size == os.path.getsize(os.path.join(entry, _core.STORE_OUTPUT))
    missing = reader.fetch(entry + "0")
    assert (missing.found, missing.damage, missing.size) == (False, None, None)
    os.remove(os.path.join(entry, _core.STORE_METADATA))
    reader.forget(entry)
    damaged = reader.fetch(entry)
    assert not damaged.found
    assert "metadata.json" in damaged.damage
    assert "StoreHit(damaged" in repr(damaged)


def test_a_hit_never_opens_a_file_that_is_gone(tmp_path):
    memory = joblib_rs.Memory(tmp_path, verbose=0)
    cached = memory.cache(counted)
    calls.clear()
    cached(5)
    _settle()
    cached(5)
    memory.clear(warn=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cached(5)["n"] == 2


MEMORY_MODULES = [
    "memory.py",
    "_memorized_func.py",
    "_func_code_check.py",
    "_memory_results.py",
    "_memory_location.py",
    "_store_backends.py",
    "_store_base.py",
]


def test_memory_modules_are_readable_and_import_nothing_above_them():
    import ast
    import pathlib

    root = pathlib.Path(joblib_rs.__file__).parent
    # Each module may import only modules listed after it (memory.py is the face on top).
    order = [name.removesuffix(".py") for name in MEMORY_MODULES]
    for i, name in enumerate(MEMORY_MODULES):
        source = (root / name).read_text()
        assert len(source.splitlines()) <= 600, name
        tree = ast.parse(source)
        assert ast.get_docstring(tree), name
        imported = {
            alias.name if node.module == "joblib_rs" else node.module.rsplit(".", 1)[-1]
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("joblib_rs")
            for alias in node.names
        }
        above = set(order[: i + 1])
        assert not (imported & above), (name, imported & above)
