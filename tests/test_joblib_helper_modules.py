"""joblib's helper modules: disk, backports, _utils, _multiprocessing_helpers,
_memmapping_reducer (the parts that do not depend on a process pool)."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from joblib_rs import _memmapping_reducer as jmr
from joblib_rs import _multiprocessing_helpers, _utils, backports, disk


def test_memstr_to_bytes():
    assert disk.memstr_to_bytes("53K") == 53 * 1024
    assert disk.memstr_to_bytes("1.4M") == int(1.4 * 1024**2)
    assert disk.memstr_to_bytes("80G") == 80 * 1024**3
    for bad in ("1.4N", "fooG", ""):
        with pytest.raises(ValueError, match="Invalid literal for size"):
            disk.memstr_to_bytes(bad)


def test_mkdirp_rm_subdirs_delete_folder(tmp_path):
    target = tmp_path / "a" / "b"
    disk.mkdirp(target)
    disk.mkdirp(target)  # existing: fine
    (target / "f.txt").write_text("x" * 5000)
    (tmp_path / "keep.txt").write_text("kept")
    assert disk.disk_used(target) >= 4
    disk.rm_subdirs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "f").write_text("x")
    with pytest.raises(OSError, match="Expected empty folder"):
        disk.delete_folder(folder, allow_non_empty=False)
    disk.delete_folder(folder)
    assert not folder.exists()
    disk.delete_folder(folder)  # gone already: nothing to do
    errors = []
    disk.rm_subdirs(tmp_path / "missing", onerror=lambda *a: errors.append(a[0]))
    assert errors == [os.listdir]


def test_loose_version():
    v = backports.LooseVersion
    assert v("1.10") > v("1.9") and v("1.10") > "1.9"
    assert v("1.2.0") == "1.2.0" and v("1.2") < "1.2.1"
    assert v("2.0b1").version == [2, 0, "b", 1]
    assert repr(v("1.0")) == "LooseVersion ('1.0')" and str(v("1.0")) == "1.0"
    assert v("1.0").__eq__(1.0) is NotImplemented


def test_make_memmap_offset_and_unlink_on_collect(tmp_path):
    import mmap

    path = str(tmp_path / "m.mmap")
    offset = mmap.ALLOCATIONGRANULARITY + 1
    mm = backports.make_memmap(path, shape=10, mode="w+", offset=offset)
    assert mm.offset == offset
    del mm
    view = backports.make_memmap(
        path, shape=10, mode="r+", offset=offset, unlink_on_gc_collect=True
    )[2:]
    gc.collect()
    assert os.path.exists(path)  # a view keeps the map alive
    del view
    gc.collect()
    assert not os.path.exists(path)


def test_concurrency_safe_rename(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_text("new")
    dst.write_text("old")
    backports.concurrency_safe_rename(str(src), str(dst))
    assert dst.read_text() == "new" and not src.exists()


@pytest.mark.parametrize(
    "expr, value", [("2*6", 12), ("2**6", 64), ("1 + 2*3**(4) / (6 + -7)", -161.0)]
)
def test_eval_expr(expr, value):
    assert _utils.eval_expr(expr) == value


@pytest.mark.parametrize("expr", ["exec('import os')", "1^1", "' ' * 10**10", "1/0", "a+1"])
def test_eval_expr_refuses(expr):
    with pytest.raises(ValueError, match="is not a valid or supported arithmetic"):
        _utils.eval_expr(expr)
    with pytest.raises(ValueError, match="too long"):
        _utils.eval_expr("1" + "+1" * 50)
    with pytest.raises(ValueError, match=r"Numeric literal .* is too large"):
        _utils.eval_expr("9**9**9")


def _fails(x):
    raise KeyError(f"missing {x}")


def test_traceback_capturing_wrapper_round_trip():
    out = _utils._TracebackCapturingWrapper(_fails)(x=3)
    out = pickle.loads(pickle.dumps(out))  # as it would come back from a worker
    with pytest.raises(KeyError, match="missing 3") as excinfo:
        _utils._retrieve_traceback_capturing_wrapped_call(out)
    assert "_fails" in str(excinfo.value.__cause__)
    ok = _utils._TracebackCapturingWrapper(abs)
    assert _utils._retrieve_traceback_capturing_wrapped_call(ok(x=-2) if False else 2) == 2


def test_mp_is_multiprocessing_unless_disabled():
    assert _multiprocessing_helpers.mp is multiprocessing
    assert _multiprocessing_helpers.assert_spawning is not None
    code = "from joblib_rs._multiprocessing_helpers import *; print(mp, assert_spawning)"
    env = dict(os.environ, JOBLIB_MULTIPROCESSING="0")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["None", "None"]


def test_has_shareable_memory(tmp_path):
    mm = np.memmap(tmp_path / "a.dat", dtype="f8", mode="w+", shape=(4, 4))
    assert jmr.has_shareable_memory(mm)
    assert jmr.has_shareable_memory(mm[1:, ::2])
    assert jmr.has_shareable_memory(np.asarray(mm))
    assert jmr._get_backing_memmap(mm[1:]) is not None
    assert not jmr.has_shareable_memory(np.zeros(3))
    assert not jmr.has_shareable_memory(np.array(mm))  # a copy
    assert not jmr.has_shareable_memory([1, 2])


def test_strided_from_memmap(tmp_path):
    path = str(tmp_path / "s.dat")
    data = np.arange(20.0)
    data.tofile(path)
    flat = jmr._strided_from_memmap(path, "f8", "w+", 0, "C", (20,), None, 20, False)
    np.testing.assert_array_equal(flat, data)  # 'w+' did not zero the file
    every_other = jmr._strided_from_memmap(path, "f8", "r", 0, "C", (10,), (16,), 20, False)
    np.testing.assert_array_equal(every_other, data[::2])


def test_get_temp_dir(tmp_path, monkeypatch):
    folder, shared = jmr._get_temp_dir("pool", temp_folder=str(tmp_path))
    assert folder == os.path.join(str(tmp_path), "pool") and not shared
    monkeypatch.setenv("JOBLIB_TEMP_FOLDER", str(tmp_path / "env"))
    assert jmr._get_temp_dir("p")[0] == os.path.join(str(tmp_path / "env"), "p")


def test_weak_array_key_map():
    m = jmr._WeakArrayKeyMap()
    a, b = np.ones(2), np.ones(2)
    m.set(a, "a")
    m.set(b, "b")
    m.set(a, "A")
    assert m.get(a) == "A" and m.get(b) == "b"
    del a
    gc.collect()
    assert len(m._data) == 1
    with pytest.raises(KeyError):
        m.get(np.ones(2))
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(m)


def test_limit_decorator_and_eval_node():
    import ast

    @_utils.limit(max_=10)
    def identity(x):
        return x

    assert identity(3) == 3 and identity("text") == "text"
    with pytest.raises(ValueError, match="Numeric literal 11 is too large, max is 10"):
        identity(11)
    assert _utils.eval_(ast.parse("2*3", mode="eval").body) == 6


def test_load_temporary_memmap_unlinks_on_collect(tmp_path):
    import joblib_rs

    path = str(tmp_path / "a.jrs")
    joblib_rs.dump(np.arange(100.0), path)
    loaded = jmr.load_temporary_memmap(path, "r", unlink_on_gc_collect=True)
    assert isinstance(loaded, np.memmap) and jmr.has_shareable_memory(loaded)
    np.testing.assert_array_equal(loaded, np.arange(100.0))
    del loaded
    gc.collect()
    assert not os.path.exists(path)
