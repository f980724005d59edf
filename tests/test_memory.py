"""joblib_rs.Memory: joblib's behaviour on real files, processes and threads."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import joblib
import numpy as np
import pytest

import joblib_rs
from joblib_rs import _core
from joblib_rs.memory import (
    AsyncMemorizedFunc,
    JobLibCollisionWarning,
    MemorizedFunc,
    Memory,
    NotMemorizedFunc,
    NotMemorizedResult,
    expires_after,
)

PYTHON = sys.executable


def entries(location: Path) -> list[Path]:
    """Entry folders under a Memory location."""
    return sorted(
        p
        for p in (location / "joblib_rs").rglob("*")
        if p.is_dir() and re.fullmatch(r"[0-9a-f]{32}", p.name)
    )


def counting(calls: list):
    def f(x, y=1):
        calls.append((x, y))
        return x + y

    return f


# --------------------------------------------------------------------------------------------
# The manual's examples (section 2.3)


def test_manual_simple_example(tmp_path, capsys):
    memory = Memory(str(tmp_path), verbose=0)

    @memory.cache
    def f(x):
        print(f"Running f({x})")
        return x

    print(f(1))
    print(f(1))
    print(f(2))
    assert capsys.readouterr().out == "Running f(1)\n1\n1\nRunning f(2)\n2\n"


def test_manual_numpy_example(tmp_path, capsys):
    memory = Memory(tmp_path, verbose=0)

    @memory.cache
    def g(x):
        print(f"A long-running calculation, with parameter {x}")
        return np.hamming(x)

    @memory.cache
    def h(x):
        print("A second long-running calculation, using g(x)")
        return np.vander(x)

    a = g(3)
    np.testing.assert_allclose(a, [0.08, 1.0, 0.08])
    np.testing.assert_array_equal(g(3), a)
    b = h(a)
    b2 = h(a)
    assert np.allclose(b, b2)
    assert capsys.readouterr().out == (
        "A long-running calculation, with parameter 3\n"
        "A second long-running calculation, using g(x)\n"
    )


def test_manual_memmap_example(tmp_path, capsys):
    memory2 = Memory(tmp_path, mmap_mode="r")
    square = memory2.cache(np.square)
    a = np.vander(np.arange(3)).astype(float)
    first = square(a)
    out = capsys.readouterr().out
    assert "[Memory] Calling numpy.square...\nsquare(array([[0., 0., 1.]," in out
    assert re.search(r"_+square - \d+\.\ds, \d+\.\dmin\n$", out)
    assert isinstance(first, np.memmap)
    res = square(a)
    assert isinstance(res, np.memmap)
    assert capsys.readouterr().out == ""
    np.testing.assert_array_equal(res, [[0, 0, 1], [1, 1, 1], [16, 4, 1]])
    assert repr(res).startswith("memmap([[ 0.,  0.,  1.],")
    with pytest.raises(ValueError):
        res[0, 0] = 1.0  # read-only mapping: the cache cannot be corrupted in place
    del res


def test_manual_shelving_example(tmp_path, capsys):
    memory = Memory(tmp_path, verbose=0)

    @memory.cache
    def g(x):
        print(f"A long-running calculation, with parameter {x}")
        return np.hamming(x)

    result = g.call_and_shelve(4)
    assert capsys.readouterr().out == "A long-running calculation, with parameter 4\n"
    assert re.fullmatch(
        r'MemorizedResult\(location=".*", func=".*g.*", args_id=".*"\)', repr(result)
    )
    np.testing.assert_allclose(result.get(), [0.08, 0.77, 0.77, 0.08])
    result.clear()
    with pytest.raises(KeyError, match="Non-existing cache value") as info:
        result.get()
    assert "does not exist" in str(info.value)


def test_manual_shelving_without_cache():
    memory = Memory(None)
    cached = memory.cache(lambda x: x * 2)
    assert isinstance(cached, NotMemorizedFunc)
    result = cached.call_and_shelve(3)
    assert isinstance(result, NotMemorizedResult)
    assert result.get() == 6
    assert repr(result) == "NotMemorizedResult(6)"
    result = pickle.loads(pickle.dumps(result))
    assert result.get() == 6
    result.clear()
    assert repr(result) == "NotMemorizedResult with no value"
    with pytest.raises(KeyError):
        result.get()


def test_manual_name_collisions_in_one_session(tmp_path, capsys):
    memory = Memory(tmp_path, verbose=0)
    namespace: dict = {"memory": memory}
    exec(
        textwrap.dedent(
            """
            @memory.cache
            def func(x):
                print('Running func(%s)' % x)

            func2 = func

            @memory.cache
            def func(x):
                print('Running a different func(%s)' % x)
            """
        ),
        namespace,
    )
    func, func2 = namespace["func"], namespace["func2"]
    func(1)
    with pytest.warns(
        JobLibCollisionWarning, match="Cannot detect name collisions for function 'func'"
    ):
        func2(1)
    func(1)
    func2(1)
    assert capsys.readouterr().out == "Running a different func(1)\nRunning func(1)\n"


def test_manual_lambdas(tmp_path, capsys):
    memory = Memory(tmp_path, verbose=0)

    def my_print(x):
        print(x)

    f = memory.cache(lambda: my_print(1))
    g = memory.cache(lambda: my_print(2))
    f()
    f()
    with pytest.warns(JobLibCollisionWarning) as record:
        g()
    messages = [str(w.message) for w in record]
    assert any(
        m.startswith("Cannot detect name collisions for function '<lambda>") for m in messages
    )
    assert any(
        m.startswith("Possible name collisions between functions '<lambda>'") for m in messages
    )
    g()
    with pytest.warns(JobLibCollisionWarning):
        f()
    assert capsys.readouterr().out == "1\n2\n1\n"


def test_manual_numpy_ufunc(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    sin = memory.cache(np.sin)
    assert sin(0) == 0.0
    assert sin(0) == 0.0
    assert len(entries(tmp_path)) == 1


def test_manual_methods(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls = []

    class Foo:
        def __init__(self, offset):
            self.offset = offset
            self.method = memory.cache(self.method)
            self.ignoring = memory.cache(self.ignoring, ignore=["self"])

        def method(self, x):
            calls.append(("method", self.offset, x))
            return x + self.offset

        def ignoring(self, x):
            calls.append(("ignoring", self.offset, x))
            return x * 10

    a, b = Foo(1), Foo(2)
    assert a.method(1) == 2 and a.method(1) == 2
    assert b.method(1) == 3  # self is part of the key
    assert a.ignoring(1) == 10 and b.ignoring(1) == 10  # self ignored
    assert calls == [("method", 1, 1), ("method", 2, 1), ("ignoring", 1, 1)]


def test_manual_ignore(tmp_path, capsys):
    memory = Memory(tmp_path, verbose=0)

    @memory.cache(ignore=["debug"])
    def my_func(x, debug=True):
        print(f"Called with x = {x}")

    my_func(0)
    my_func(0, debug=False)
    my_func(0, debug=True)
    assert capsys.readouterr().out == "Called with x = 0\n"


# --------------------------------------------------------------------------------------------
# The manual's examples (section 2.6)


def _costly_compute(data, column_index=0):
    time.sleep(0.05)
    return data[column_index]


def test_example_how_to_use_memory(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    rng = np.random.RandomState(42)
    data = rng.randn(int(1e4), 10)
    costly_compute_cached = memory.cache(_costly_compute)
    first = costly_compute_cached(data)
    assert costly_compute_cached.check_call_in_cache(data)
    np.testing.assert_array_equal(costly_compute_cached(data), first)

    class Algorithm:
        def __init__(self, column=0):
            self.column = column

        def transform(self, data):
            costly_compute = memory.cache(_costly_compute)
            return costly_compute(data, self.column)

    transformer = Algorithm()
    np.testing.assert_array_equal(transformer.transform(data), data[0])
    np.testing.assert_array_equal(transformer.transform(data), data[0])
    assert len(entries(tmp_path)) == 1  # data[0] passed positionally or by default: one key
    memory.clear(warn=False)
    assert entries(tmp_path) == []


def _column(data, column, counter):
    with open(counter, "a") as f:
        f.write(f"{column}\n")
    return data[column]


def test_example_checkpoint_with_parallel(tmp_path):
    counter = str(tmp_path / "calls.txt")
    Parallel = getattr(joblib_rs, "Parallel", joblib.Parallel)
    delayed = getattr(joblib_rs, "delayed", joblib.delayed)
    memory = Memory(tmp_path / "cachedir", verbose=0)
    # Where calls are counted is not part of the key (workers may outlive this test's env).
    cached = memory.cache(_column, ignore=["counter"])
    data = np.random.RandomState(42).randn(1000, 4)

    def mean_using_cache(data, column):
        return cached(data, column, counter).mean()

    first = Parallel(n_jobs=2)(delayed(mean_using_cache)(data, c) for c in range(4))
    second = Parallel(n_jobs=2)(delayed(mean_using_cache)(data, c) for c in range(4))
    maxima = Parallel(n_jobs=2)(
        delayed(lambda d, c: cached(d, c, counter).max())(data, c) for c in range(4)
    )
    assert first == second == [data[c].mean() for c in range(4)]
    assert maxima == [data[c].max() for c in range(4)]
    assert sorted(Path(counter).read_text().split()) == ["0", "1", "2", "3"]
    memory.clear(warn=False)


# --------------------------------------------------------------------------------------------
# API surface


def test_memory_none_is_transparent():
    memory = Memory(None)
    calls = []
    f = memory.cache(counting(calls))
    assert f(1) == 2 and f(1) == 2
    assert calls == [(1, 1), (1, 1)]
    assert f.call(1) == (2, {})
    assert not f.check_call_in_cache(1)
    assert memory.eval(lambda: 5) == 5
    memory.reduce_size(bytes_limit=1)
    memory.clear(warn=False)
    assert repr(memory) == "Memory(location=None)"


def test_cache_decorator_forms_and_memorized_func_unwrapping(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls: list = []
    plain = memory.cache(counting(calls))
    assert isinstance(plain, MemorizedFunc)
    with_args = memory.cache(ignore=["y"])(counting(calls))
    assert with_args(1, y=5) == 6 and with_args(1, y=7) == 6
    rewrapped = memory.cache(plain)
    assert rewrapped.func is plain.func
    with pytest.raises(ValueError, match="cache_validation_callback needs to be callable"):
        memory.cache(counting(calls), cache_validation_callback=3)


def test_call_forces_computation_and_returns_metadata(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls: list = []
    f = memory.cache(counting(calls))
    assert f(2, y=3) == 5
    output, metadata = f.call(2, y=3)
    assert output == 5 and len(calls) == 2
    assert set(metadata) == {"duration", "input_args", "time"}
    assert metadata["input_args"] == {"x": "2", "y": "3"}
    stored = json.loads((entries(tmp_path)[0] / "metadata.json").read_text())
    assert stored["input_args"] == {"x": "2", "y": "3"}


def test_check_call_in_cache_and_eval(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls: list = []
    func = counting(calls)
    f = memory.cache(func)
    assert not f.check_call_in_cache(1)
    f(1)
    assert f.check_call_in_cache(1)
    assert f.check_call_in_cache(x=1, y=1)  # same bound arguments, same key
    assert not f.check_call_in_cache(1, 2)
    assert memory.eval(func, 1) == 2
    assert len(calls) == 1


def test_binding_errors_match_joblib(tmp_path):
    memory = Memory(tmp_path, verbose=0)

    def f(x, y=1, *, z):
        return x

    cached = memory.cache(f)
    with pytest.raises(ValueError, match="Wrong number of arguments"):
        cached(1)
    with pytest.raises(ValueError, match="Argument x was given both as positional and"):
        cached(1, x=2, z=3)
    with pytest.raises(ValueError, match="Too many arguments"):
        cached(1, 2, 3, z=4)
    with pytest.raises(ValueError, match="Too many keyword arguments"):
        cached(1, z=3, w=4)
    with pytest.raises(ValueError, match="Ignore list: argument 'nope' is not defined"):
        memory.cache(f, ignore=["nope"])(1, z=2)


def test_varargs_and_kwargs_are_keyed(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls = []

    @memory.cache
    def f(*args, **kwargs):
        calls.append(1)
        return args, kwargs

    assert f(1, 2, a=3) == ((1, 2), {"a": 3})
    assert f(1, 2, a=3) == ((1, 2), {"a": 3})
    assert f(1, 2, a=4) == ((1, 2), {"a": 4})
    assert len(calls) == 2


def test_mmap_mode_argument_hashes_like_array(tmp_path):
    memory = Memory(tmp_path / "c", verbose=0, mmap_mode="r")
    calls = []

    @memory.cache
    def total(a):
        calls.append(1)
        return a * 2

    arr = np.arange(1000.0)
    np.save(tmp_path / "a.npy", arr)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    np.testing.assert_array_equal(total(arr), total(mapped))
    assert len(calls) == 1


def test_expires_after_and_validation_callback(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls: list = []
    fresh = memory.cache(counting(calls), cache_validation_callback=expires_after(days=1))
    fresh(1)
    fresh(1)
    assert len(calls) == 1
    assert fresh.check_call_in_cache(1)
    stale = memory.cache(counting(calls), cache_validation_callback=expires_after(seconds=0))
    assert not stale.check_call_in_cache(1)  # checked and cleared
    stale(1)
    stale(1)
    assert len(calls) == 3
    seen = []
    picky = memory.cache(counting(calls), cache_validation_callback=lambda m: seen.append(m))
    picky(1)
    assert seen and seen[-1]["input_args"] == {"x": "1", "y": "1"}


def test_coroutine_functions_are_cached(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls = []

    @memory.cache
    async def double(x):
        calls.append(x)
        await asyncio.sleep(0)
        return 2 * x

    assert isinstance(double, AsyncMemorizedFunc)

    async def main():
        return [await double(3), await double(3), (await double.call(3))[0]]

    assert asyncio.run(main()) == [6, 6, 6]
    assert calls == [3, 3]
    shelved = asyncio.run(double.call_and_shelve(4))
    assert shelved.get() == 8
    not_cached = Memory(None).cache(double.func)
    assert asyncio.run(not_cached.call_and_shelve(5)).get() == 10


def test_memorized_result_pickles_and_repr_pastes_into_another_interpreter(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    f = memory.cache(np.arange)
    result = f.call_and_shelve(5)
    clone = pickle.loads(pickle.dumps(result))
    np.testing.assert_array_equal(clone.get(), np.arange(5))
    code = f"from joblib_rs.memory import MemorizedResult\nprint({result!r}.get().tolist())"
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 1, 2, 3, 4]"


def test_memory_and_memorized_func_pickle(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    f = memory.cache(np.sqrt)
    assert f(4.0) == 2.0
    memory2 = pickle.loads(pickle.dumps(memory))
    assert repr(memory2) == repr(memory) and memory2.timestamp is None
    f2 = pickle.loads(pickle.dumps(f))
    assert f2.check_call_in_cache(4.0) and f2(4.0) == 2.0


def test_cachedir_is_a_deprecated_alias(tmp_path):
    with pytest.warns(DeprecationWarning, match="cachedir"):
        memory = Memory(cachedir=str(tmp_path))
    assert memory.location == str(tmp_path)
    assert (tmp_path / "joblib_rs").is_dir()
    with pytest.raises(ValueError):
        Memory(str(tmp_path), cachedir=str(tmp_path))


def test_layout_and_gitignore(tmp_path):
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / ".gitignore").write_text("mine\n")
    Memory(tmp_path / "own", verbose=0)
    assert (tmp_path / "own" / ".gitignore").read_text() == "mine\n"
    memory = Memory(tmp_path / "new", verbose=0)
    # joblib's text, byte for byte (tools comparing it see joblib's file).
    assert (
        tmp_path / "new" / ".gitignore"
    ).read_text() == "# Created by joblib automatically.\n*\n"
    f = memory.cache(np.negative)
    f(1)
    func_dir = tmp_path / "new" / "joblib_rs" / "numpy" / "negative"
    assert (func_dir / "func_code.py").read_text().startswith("# first line: -1\n")
    (entry,) = entries(tmp_path / "new")
    assert entry.parent == func_dir
    assert sorted(p.name for p in entry.iterdir()) == ["metadata.json", "output.jrs"]
    assert joblib_rs.load(entry / "output.jrs") == -1
    assert not [p for p in func_dir.iterdir() if p.name.startswith(".tmp-")]


def test_memory_clear_and_function_clear(tmp_path, caplog):
    memory = Memory(tmp_path, verbose=1)
    calls: list = []
    f = memory.cache(counting(calls))
    with redirect_stdout(io.StringIO()):
        f(1)
        with caplog.at_level(logging.WARNING, logger="joblib"):
            f.clear()
        assert "Clearing function cache identified by" in caplog.text
        f(1)
        with caplog.at_level(logging.WARNING, logger="joblib"):
            memory.clear()
        assert "Flushing completely the cache" in caplog.text
        f(1)
    assert len(calls) == 3


# --------------------------------------------------------------------------------------------
# Messages, side by side with joblib


def _normalise(text: str, location: Path) -> str:
    text = text.replace(str(location), "LOC")
    text = re.sub(r"LOC/joblib(_rs)?/", "LOC/STORE/", text)
    text = re.sub(r"[0-9a-f]{32}", "HASH", text)
    text = re.sub(r"\d+\.\ds, \d+\.\dmin", "T", text)
    text = re.sub(r"_+(\w+ (cache loaded )?- T)", r"__\1", text)
    text = re.sub(r"\[Memory\]T *:", "[Memory]T:", text)
    return text


def _messages(module, location, verbose):
    memory = module.Memory(str(location), verbose=verbose)

    def add(a, b=2):
        return a + b

    cached = memory.cache(add)
    out = io.StringIO()
    with redirect_stdout(out):
        cached(1)
        cached(1)
        cached(np.arange(3), b=1)
        cached.call_and_shelve(5).get()
    return _normalise(out.getvalue(), location)


@pytest.mark.parametrize("verbose", [0, 1, 2, 5, 11])
def test_verbose_messages_match_joblib(tmp_path, verbose):
    ours = _messages(joblib_rs, tmp_path / "rs", verbose)
    theirs = _messages(joblib, tmp_path / "jl", verbose)
    assert ours == theirs
    if verbose:
        assert "[Memory] Calling " in ours and "add(1)" in ours


# --------------------------------------------------------------------------------------------
# Function changes and collisions


def test_changed_function_clears_its_cache(tmp_path, caplog, monkeypatch):
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    monkeypatch.syspath_prepend(str(module_dir))
    source = module_dir / "changing_mod.py"
    source.write_text("def f(x):\n    return x + 1\n")
    import importlib

    import changing_mod

    memory = Memory(tmp_path / "c", verbose=1)
    with redirect_stdout(io.StringIO()):
        assert memory.cache(changing_mod.f)(1) == 2
        source.write_text("def f(x):\n    return x + 100\n")
        importlib.reload(changing_mod)
        with caplog.at_level(logging.WARNING, logger="joblib"):
            assert memory.cache(changing_mod.f)(1) == 101
    assert "Clearing function cache identified by changing_mod" in caplog.text
    assert len(entries(tmp_path / "c")) == 1


def test_fingerprint_is_stable_across_processes_and_hash_seeds(tmp_path):
    # Defined with `python -c`: no source file, so the code object fingerprint is used.
    script = textwrap.dedent(
        f"""
        import joblib_rs
        memory = joblib_rs.Memory({str(tmp_path)!r}, verbose=0)
        def f(x):
            print("computed")
            return {{"k": x, "s": "text"}}
        print(memory.cache(f)(1))
        """
    )
    outs = []
    for seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        run = subprocess.run(
            [PYTHON, "-c", script], capture_output=True, text=True, env=env, timeout=60
        )
        assert run.returncode == 0, run.stderr
        outs.append(run.stdout)
    assert outs[0].startswith("computed\n")
    assert outs[1] == outs[2] == "{'k': 1, 's': 'text'}\n"


# --------------------------------------------------------------------------------------------
# Damage: recompute with a CacheWarning, never raise, never a wrong result


def _one_entry(tmp_path):
    (entry,) = entries(tmp_path)
    return entry


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "no_output", "no_metadata"])
def test_damaged_entry_is_recomputed_with_cache_warning(tmp_path, damage):
    calls: list = []
    f = Memory(tmp_path, verbose=0).cache(counting(calls))
    assert f(np.arange(100)) is not None
    entry = _one_entry(tmp_path)
    output = entry / "output.jrs"
    data = output.read_bytes()
    if damage == "truncate":
        output.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        i = len(data) // 2
        output.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif damage == "empty":
        output.write_bytes(b"")
    elif damage == "no_output":
        output.unlink()
    else:
        (entry / "metadata.json").unlink()
    # A fresh Memory object: nothing of the entry is remembered in this process.
    g = Memory(tmp_path, verbose=0).cache(f.func)
    with pytest.warns(joblib_rs.CacheWarning, match="recomputed"):
        result = g(np.arange(100))
    np.testing.assert_array_equal(result, np.arange(100) + 1)
    assert len(calls) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(g(np.arange(100)), np.arange(100) + 1)
    assert len(calls) == 2


def test_unreadable_func_code_recomputes_with_cache_warning(tmp_path):
    calls: list = []
    memory = Memory(tmp_path, verbose=0)
    memory.cache(counting(calls))(1)
    (func_code,) = (tmp_path / "joblib_rs").rglob("func_code.py")
    func_code.write_bytes(b"\xff\xfe garbage \x00")
    # A new function object (same code): it is checked against the disk again.
    with pytest.warns(joblib_rs.CacheWarning, match="stored code"):
        assert memory.cache(counting(calls))(1) == 2
    assert len(calls) == 2
    assert func_code.read_text().startswith("# first line:")


def test_unpicklable_output_warns_and_returns_result(tmp_path):
    memory = Memory(tmp_path, verbose=0)

    @memory.cache
    def make_lock(x):
        return threading.Lock()

    with pytest.warns(joblib_rs.CacheWarning, match="Unable to cache to disk"):
        lock = make_lock(1)
    assert hasattr(lock, "acquire")
    assert entries(tmp_path) == []
    assert not list((tmp_path / "joblib_rs").rglob(".tmp-*"))


def test_unwritable_location_raises_at_first_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        Memory(blocker / "cache", verbose=0)
    memory = Memory(tmp_path / "c", verbose=0)
    (tmp_path / "c" / "joblib_rs" / "numpy").write_text("blocks the function folder")
    with pytest.raises(OSError):
        memory.cache(np.negative)


# --------------------------------------------------------------------------------------------
# LRU: reduce_size


def test_reduce_size_keeps_recently_accessed_entries(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    f = memory.cache(np.ones)
    for n in (1000, 2000, 3000):
        f(n)
    old = time.time() - 10_000
    for i, entry in enumerate(entries(tmp_path)):
        os.utime(entry / "output.jrs", (old + i, old + i))
    # A hit refreshes the access time of its entry only.
    fresh = Memory(tmp_path, verbose=0).cache(np.ones)
    fresh(1000)
    memory.reduce_size(items_limit=1)
    (kept,) = entries(tmp_path)
    assert joblib_rs.load(kept / "output.jrs").shape == (1000,)
    assert fresh.check_call_in_cache(1000)


def test_reduce_size_limits(tmp_path):
    memory = Memory(tmp_path, verbose=0, bytes_limit="20K")
    f = memory.cache(np.zeros)
    for n in range(1, 6):
        f(n * 1000)  # 8 KB to 40 KB of float64
    assert len(entries(tmp_path)) == 5
    memory.reduce_size(bytes_limit=100_000)
    sizes = [sum(p.stat().st_size for p in e.iterdir()) for e in entries(tmp_path)]
    assert sum(sizes) <= 100_000
    memory.reduce_size()  # the constructor's bytes_limit (joblib 0.13 API)
    assert sum(sum(p.stat().st_size for p in e.iterdir()) for e in entries(tmp_path)) <= 20480
    f(1000)
    memory.reduce_size(age_limit=datetime.timedelta(days=1))
    assert len(entries(tmp_path)) >= 1
    memory.reduce_size(age_limit=datetime.timedelta(seconds=0))
    assert entries(tmp_path) == []
    with pytest.raises(ValueError, match="positive timedelta"):
        memory.reduce_size(age_limit=datetime.timedelta(seconds=-1))


# --------------------------------------------------------------------------------------------
# Concurrency: real processes and threads


WORKER_MODULE = """
import os, time
import joblib_rs

def slow_square(x):
    with open(os.environ["COUNTER"], "a") as f:
        f.write("computed\\n")
    time.sleep(float(os.environ.get("SLEEP", "0.5")))
    return [x * x] * 1000

class SlowPickle:
    '''An output whose pickling signals the parent, then hangs: dump is mid-write.'''
    def __reduce__(self):
        with open(os.environ["MARKER"], "w") as f:
            f.write("writing")
        time.sleep(600)
        return (SlowPickle, ())

def hangs_while_writing(x):
    if os.environ.get("HANG") == "1":
        return [b"x" * 100_000, SlowPickle()]
    with open(os.environ["COUNTER"], "a") as f:
        f.write("computed\\n")
    return x + 1

def squares(i):
    return {"i": i, "sq": [i * i] * 50}

def churn(seed, rounds):
    import random
    rng = random.Random(seed)
    memory = joblib_rs.Memory(os.environ["CACHE"], verbose=0)
    cached = memory.cache(squares)
    for _ in range(rounds):
        i = rng.randrange(12)
        assert cached(i) == squares(i)
        roll = rng.random()
        if roll < 0.05:
            memory.reduce_size(items_limit=4)
        elif roll < 0.07:
            cached.clear(warn=False)
        elif roll < 0.08:
            memory.clear(warn=False)
    print("ok")

def holds_lock(x):
    with open(os.environ["MARKER"], "w") as f:
        f.write("computing")
    time.sleep(600)
    return x
"""


@pytest.fixture
def worker_env(tmp_path):
    (tmp_path / "workmod.py").write_text(WORKER_MODULE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    env["COUNTER"] = str(tmp_path / "counter.txt")
    env["MARKER"] = str(tmp_path / "marker.txt")
    return env


def _spawn(code: str, env: dict, location: Path) -> subprocess.Popen:
    script = (
        "import sys, joblib_rs, workmod\n"
        f"memory = joblib_rs.Memory({str(location)!r}, verbose=0)\n" + code
    )
    return subprocess.Popen(
        [PYTHON, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait for ``proc`` to create ``path``; fail at once (with its stderr) if it died."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"process exited ({proc.returncode}): {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_eight_processes_missing_one_key_compute_once(tmp_path, worker_env):
    location = tmp_path / "cache"
    code = "print(sum(memory.cache(workmod.slow_square)(7)))"
    procs = [_spawn(code, worker_env, location) for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e for _, e in outs]
    assert {o.strip() for o, _ in outs} == {str(49 * 1000)}
    assert (tmp_path / "counter.txt").read_text() == "computed\n"


def test_processes_hitting_missing_and_evicting_together_never_fail(tmp_path, worker_env):
    env = dict(worker_env, CACHE=str(tmp_path / "cache"))
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", f"import workmod; workmod.churn({seed}, 150)"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(4)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    assert [out for out, _ in outs] == ["ok\n"] * 4
    assert all("Traceback" not in err for _, err in outs), [err for _, err in outs]


def test_threads_missing_one_key_compute_once(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls = []

    @memory.cache
    def slow(x):
        calls.append(x)
        time.sleep(0.2)
        return x * 3

    results = []
    threads = [threading.Thread(target=lambda: results.append(slow(5))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [15] * 8
    assert calls == [5]


def test_recursive_call_with_same_key_computes_instead_of_deadlocking(tmp_path):
    memory = Memory(tmp_path, verbose=0)

    @memory.cache(ignore=["depth"])
    def nested(x, depth=0):
        if depth < 2:
            return nested(x, depth=depth + 1) + 1
        return x

    assert nested(10) == 12


def test_sigkill_mid_write_leaves_a_working_cache(tmp_path, worker_env):
    location = tmp_path / "cache"
    code = "print(memory.cache(workmod.hangs_while_writing)(1))"
    proc = _spawn(code, dict(worker_env, HANG="1"), location)
    _wait_for(tmp_path / "marker.txt", proc)
    (func_dir,) = (location / "joblib_rs").rglob("hangs_while_writing")
    assert list(func_dir.glob(".tmp-*"))  # the output is being written in staging
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert entries(location) == []  # nothing partial was published
    # The same function in new processes: computed once (the lock died with its owner),
    # then loaded.
    outs = []
    for _ in range(2):
        run = _spawn(code, dict(worker_env, HANG="0"), location)
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        outs.append(out)
    assert outs == ["2\n", "2\n"]
    assert (tmp_path / "counter.txt").read_text() == "computed\n"
    assert len(entries(location)) == 1
    # The killed writer's staging folder was removed by the next write in that folder (its
    # writer is dead), without waiting for reduce_size's age sweep.
    assert not list(func_dir.glob(".tmp-*"))
    assert _core.store_sweep(str(location / "joblib_rs"), 0.0) == 0
    assert len(entries(location)) == 1


def test_killed_lock_owner_does_not_block_waiters(tmp_path, worker_env):
    location = tmp_path / "cache"
    owner = _spawn("memory.cache(workmod.holds_lock)(3)", worker_env, location)
    _wait_for(tmp_path / "marker.txt", owner)
    waiter_env = dict(worker_env, MARKER=str(tmp_path / "waiter-marker.txt"))
    waiter = _spawn("print(memory.cache(workmod.holds_lock)(3))", waiter_env, location)
    time.sleep(0.3)  # let the waiter reach the lock
    assert waiter.poll() is None
    assert not (tmp_path / "waiter-marker.txt").exists()  # it waits, it does not compute
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=60)
    # The lock died with its owner: the waiter computes (and hangs in holds_lock).
    _wait_for(tmp_path / "waiter-marker.txt", waiter)
    waiter.kill()
    waiter.wait(timeout=60)


def test_lock_timeout_computes_with_a_cache_warning(tmp_path):
    memory = Memory(tmp_path, verbose=0, backend_options={"lock_timeout": 0.05})

    @memory.cache
    def f(x):
        return x + 1

    f(0)
    args_id = f._get_args_id(1)
    entry = os.path.join(memory.store_backend.location, f.func_id, args_id)
    held = _core.store_lock(entry, 1.0)
    assert held is not None and held.held
    with pytest.warns(joblib_rs.CacheWarning, match="Waited"):
        assert f(1) == 2
    held.release()
    assert not held.held


def test_script_functions_hit_across_runs_and_match_joblib_folder(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import joblib_rs

            def work(x):
                print("computed", file=sys.stderr)
                return x * 2

            memory = joblib_rs.Memory({str(tmp_path / "cache")!r}, verbose=0)
            print(memory.cache(work)(21))
            """
        )
    )
    runs = [
        subprocess.run([PYTHON, str(script)], capture_output=True, text=True, timeout=60)
        for _ in range(2)
    ]
    assert [r.stdout for r in runs] == ["42\n", "42\n"]
    assert [r.stderr for r in runs] == ["computed\n", ""]
    (func_dir,) = {e.parent for e in entries(tmp_path / "cache")}
    assert func_dir.name == "work"
    assert func_dir.parent.name.startswith("__main__-")
    assert func_dir.parent.name.endswith("-job")


def test_a_pickled_store_equals_the_original_attribute_by_attribute(tmp_path):
    # joblib's test_memory_pickle_dump_load compares every attribute after a round trip:
    # the store's per-process reader must not make two equal stores differ.
    memory = joblib_rs.Memory(tmp_path, verbose=0)
    memory.cache(abs)(-1)  # the reader has seen an entry
    reloaded = pickle.loads(pickle.dumps(memory.store_backend))
    assert vars(reloaded).keys() == vars(memory.store_backend).keys()
    for name, value in vars(memory.store_backend).items():
        if name != "_mapped_ok":
            assert getattr(reloaded, name) == value, name
