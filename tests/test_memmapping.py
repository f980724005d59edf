"""Large arrays through the process pool: shared-memory arguments and results, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from joblib_rs import Parallel, TerminatedWorkerError, delayed
from joblib_rs._memmapping import resolve_temp_folder

TIMEOUT = 60
MB = 1 << 20


def is_memmap(obj):
    return isinstance(obj, np.memmap)


def describe(a):
    return type(a).__name__, a.flags.writeable, float(np.asarray(a).sum()), a.shape


def list_folder(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def folder_files(a):
    # Files of the call's memmapping folder, seen from the worker.
    return sorted(os.listdir(os.path.dirname(a.filename)))


def our_folders(base):
    prefix = f"joblib_rs_memmapping_{os.getpid()}_"
    return sorted(n for n in list_folder(base) if n.startswith(prefix))


@pytest.fixture
def temp_base(tmp_path, monkeypatch):
    """Point JOBLIB_TEMP_FOLDER at a folder on disk (the /dev/shm fallback path)."""
    base = tmp_path / "joblib_temp"
    base.mkdir()
    monkeypatch.setenv("JOBLIB_TEMP_FOLDER", str(base))
    return base


def test_manual_automated_memmap_example():
    out = Parallel(n_jobs=2, max_nbytes=1e6)(
        delayed(is_memmap)(np.ones(int(i))) for i in [1e2, 1e4, 1e6]
    )
    assert out == [False, False, True]


def test_threshold_accepts_human_strings_and_none():
    a = np.ones(300_000)  # 2.4 MB
    assert Parallel(n_jobs=2, max_nbytes="1M")(delayed(is_memmap)(x) for x in [a, a[:10]]) == [
        True,
        False,
    ]
    assert Parallel(n_jobs=2, max_nbytes="10M")(delayed(is_memmap)(x) for x in [a]) == [False]
    assert Parallel(n_jobs=2, max_nbytes=None)(delayed(is_memmap)(x) for x in [a]) == [False]


def test_arguments_open_read_only_by_default_and_with_mmap_mode():
    a = np.arange(2 * MB, dtype=np.float64)
    ro = Parallel(n_jobs=2)(delayed(describe)(a) for _ in range(2))
    assert ro == [("memmap", False, float(a.sum()), a.shape)] * 2
    rw = Parallel(n_jobs=2, mmap_mode="c")(delayed(describe)(a) for _ in range(1))
    assert rw == [("memmap", True, float(a.sum()), a.shape)]


def test_same_array_is_written_once_per_call(temp_base):
    a = np.ones(MB)
    b = np.zeros(MB)
    seen = Parallel(n_jobs=2)(delayed(folder_files)(x) for x in [a, a, a, b, a, b])
    assert all(f.startswith("arg-") for f in seen[-1])
    assert len(set(seen[-1])) == 2


def test_fortran_and_structured_arrays_keep_layout_and_values():
    f = np.asfortranarray(np.random.default_rng(0).random((700, 300)))
    rec = np.zeros(200_000, dtype=[("a", "<i4"), ("b", "<f8")])
    rec["a"] = np.arange(rec.size)
    out = Parallel(n_jobs=2)(
        delayed(lambda x: (is_memmap(x), x.flags.f_contiguous, x.copy()))(x) for x in [f, rec]
    )
    assert out[0][0] and out[0][1]
    np.testing.assert_array_equal(out[0][2], f)
    assert out[1][0]
    np.testing.assert_array_equal(out[1][2], rec)


def test_object_arrays_are_never_memmapped():
    obj = np.empty(200_000, dtype=object)
    obj[:] = "x"
    assert Parallel(n_jobs=2, max_nbytes=1)(delayed(is_memmap)(x) for x in [obj]) == [False]


def test_existing_memmaps_and_views_travel_as_references(tmp_path):
    path = tmp_path / "data.mmap"
    large = np.memmap(path, dtype=np.float64, mode="w+", shape=(1_000_000,))
    large[:] = np.arange(large.size)
    large.flush()
    small = large[2:5]
    as_array = np.asarray(small)
    strided = large[10:1000:7]
    out = Parallel(n_jobs=2, max_nbytes=None)(
        delayed(lambda x: (is_memmap(x), np.asarray(x).copy()))(x)
        for x in [large, small, as_array, strided]
    )
    assert [flag for flag, _ in out] == [True, True, True, True]
    for (_, got), want in zip(out, [large, small, as_array, strided], strict=True):
        np.testing.assert_array_equal(got, want)


def write_segment(output, idx, value):
    output[idx] = value


def test_writable_memmap_receives_worker_writes_in_place(tmp_path):
    output = np.memmap(tmp_path / "out.mmap", dtype=np.float64, shape=(50,), mode="w+")
    Parallel(n_jobs=2)(delayed(write_segment)(output, i, i * 1.5) for i in range(50))
    np.testing.assert_array_equal(output, np.arange(50) * 1.5)


def test_manual_numpy_memmap_example_writable_output(tmp_path):
    data = np.random.default_rng(1).random(int(1e6))
    window = int(5e4)
    slices = [slice(start, start + window) for start in range(0, data.size - window, int(1e5))]

    def slow_mean_write_output(data, sl, output, idx):
        time.sleep(0.005)
        output[idx] = data[sl].mean()

    expected = [data[sl].mean() for sl in slices]
    results = Parallel(n_jobs=2)(delayed(lambda d, s: d[s].mean())(data, sl) for sl in slices)
    np.testing.assert_allclose(results, expected)
    output = np.memmap(tmp_path / "output_memmap", dtype=data.dtype, shape=len(slices), mode="w+")
    Parallel(n_jobs=2)(
        delayed(slow_mean_write_output)(data, sl, output, idx) for idx, sl in enumerate(slices)
    )
    np.testing.assert_allclose(output, expected)


def test_large_results_come_back_as_writable_ndarrays(temp_base):
    out = Parallel(n_jobs=2)(delayed(np.full)((512, 1024), float(i)) for i in range(6))
    for i, a in enumerate(out):
        assert type(a) is np.ndarray
        assert a.flags.writeable and a.shape == (512, 1024)
        assert a[0, 0] == i and a[-1, -1] == i
    out[0][0, 0] = 42.0
    assert out[0][0, 0] == 42.0 and out[1][0, 0] == 1.0
    # Result files are unlinked as soon as they are mapped; the folder is gone after the call.
    assert our_folders(temp_base) == []


def test_large_fortran_results_keep_their_order():
    out = Parallel(n_jobs=2)(
        delayed(lambda: np.asfortranarray(np.arange(400_000.0).reshape(800, 500)))()
        for _ in range(2)
    )
    assert out[0].flags.f_contiguous
    np.testing.assert_array_equal(out[0], np.arange(400_000.0).reshape(800, 500))


def test_temp_folder_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("JOBLIB_TEMP_FOLDER", raising=False)
    explicit = str(tmp_path / "explicit")
    assert resolve_temp_folder(explicit) == explicit
    monkeypatch.setenv("JOBLIB_TEMP_FOLDER", str(tmp_path))
    assert resolve_temp_folder(None) == str(tmp_path)
    monkeypatch.delenv("JOBLIB_TEMP_FOLDER")
    assert resolve_temp_folder(None) in ("/dev/shm", __import__("tempfile").gettempdir())


def test_explicit_temp_folder_is_used_and_cleaned(tmp_path):
    base = tmp_path / "mine"
    base.mkdir()
    a = np.ones(MB)
    files = Parallel(n_jobs=2, temp_folder=str(base))(delayed(folder_files)(a) for _ in range(1))
    assert files[0] and files[0][0].startswith("arg-")
    assert list_folder(base) == []


def _fail_on(x, bad):
    if x == bad:
        raise ValueError("task failed")
    time.sleep(0.05)
    return np.full(MB // 8 + 1, float(x))


def _crash_on(a, x, bad):
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return a.sum()


def test_cleanup_after_an_error(temp_base):
    a = np.ones(MB)
    assert our_folders(temp_base) == []
    with pytest.raises(ValueError, match="task failed"):
        Parallel(n_jobs=2)(delayed(lambda a, x: _fail_on(x, 5))(a, x) for x in range(10))
    assert our_folders(temp_base) == []


def test_cleanup_after_a_timeout(temp_base):
    a = np.ones(MB)
    with pytest.raises(TimeoutError):
        Parallel(n_jobs=2, timeout=1)(delayed(lambda a: time.sleep(20))(a) for _ in range(4))
    assert our_folders(temp_base) == []


def test_cleanup_after_a_crashed_worker(temp_base):
    a = np.ones(MB)
    with pytest.raises(TerminatedWorkerError):
        Parallel(n_jobs=2)(delayed(_crash_on)(a, x, 3) for x in range(8))
    assert our_folders(temp_base) == []


def test_cleanup_after_ctrl_c(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    marker = tmp_path / "started"
    script = textwrap.dedent(f"""
        import time
        import numpy as np
        from joblib_rs import Parallel, delayed

        def work(a, i):
            open({str(marker)!r}, "a").write("x")
            time.sleep(60)

        try:
            Parallel(n_jobs=2)(delayed(work)(np.ones(1 << 20), i) for i in range(4))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    env = dict(os.environ, JOBLIB_TEMP_FOLDER=str(base))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list_folder(base), "the call should have written its arguments"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert "interrupted" in out
        assert list_folder(base) == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cleanup_at_interpreter_exit_of_a_managed_parallel(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    script = textwrap.dedent("""
        import numpy as np
        from joblib_rs import Parallel, delayed
        p = Parallel(n_jobs=2)
        p.__enter__()
        print(p(delayed(np.sum)(np.ones(1 << 20)) for _ in range(2)))
        # exits without __exit__: the atexit hook must remove the call's folder
    """)
    env = dict(os.environ, JOBLIB_TEMP_FOLDER=str(base))
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=True,
    )
    assert "1048576" in out.stdout
    assert list_folder(base) == []


def test_manual_management_of_memmapped_input_data(tmp_path):
    import gc

    from joblib_rs import dump, load

    large_array = np.ones(int(1e6))
    filename = os.path.join(tmp_path, "joblib_test.mmap")
    _ = dump(large_array, filename)
    large_memmap = load(filename, mmap_mode="r+")
    assert (large_memmap.__class__.__name__, large_array.nbytes, large_array.shape) == (
        "memmap",
        8000000,
        (1000000,),
    )
    assert np.allclose(large_array, large_memmap)
    del large_array
    _ = gc.collect()
    small_memmap = large_memmap[2:5]
    assert (small_memmap.__class__.__name__, small_memmap.nbytes, small_memmap.shape) == (
        "memmap",
        24,
        (3,),
    )
    small_array = np.asarray(small_memmap)
    assert (small_array.__class__.__name__, small_array.nbytes, small_array.shape) == (
        "ndarray",
        24,
        (3,),
    )
    assert Parallel(n_jobs=2, max_nbytes=None)(
        delayed(is_memmap)(a) for a in [large_memmap, small_memmap, small_array]
    ) == [True, True, True]
    large_memmap[3] = 7.0  # workers read the very bytes of the file, at the right offset
    copies = Parallel(n_jobs=2, max_nbytes=None)(
        delayed(lambda a: np.asarray(a).copy())(a) for a in [small_memmap, small_array]
    )
    assert [c.tolist() for c in copies] == [[1.0, 7.0, 1.0]] * 2


def test_manual_numpy_memmap_example_with_dump_and_load(tmp_path):
    from joblib_rs import dump, load

    data = np.random.default_rng(2).random(int(1e6))
    window = int(5e4)
    slices = [slice(start, start + window) for start in range(0, data.size - window, int(1e5))]

    def slow_mean(data, sl):
        time.sleep(0.005)
        return data[sl].mean()

    expected = [data[sl].mean() for sl in slices]
    folder = tmp_path / "joblib_memmap"
    folder.mkdir()
    data_filename_memmap = os.path.join(folder, "data_memmap")
    dump(data, data_filename_memmap)
    data = load(data_filename_memmap, mmap_mode="r")
    results = Parallel(n_jobs=2)(delayed(slow_mean)(data, sl) for sl in slices)
    np.testing.assert_allclose(results, expected)

    def slow_mean_write_output(data, sl, output, idx):
        time.sleep(0.005)
        output[idx] = data[sl].mean()

    output = np.memmap(
        os.path.join(folder, "output_memmap"), dtype=data.dtype, shape=len(slices), mode="w+"
    )
    data = load(data_filename_memmap, mmap_mode="r")
    Parallel(n_jobs=2)(
        delayed(slow_mean_write_output)(data, sl, output, idx) for idx, sl in enumerate(slices)
    )
    np.testing.assert_allclose(output, expected)


def test_memmap_results_keep_their_byte_order(tmp_path):
    path = tmp_path / "big_endian.mmap"
    m = np.memmap(path, dtype=">f8", mode="w+", shape=(1000,))
    m[:] = np.arange(1000)
    m.flush()

    def reopen():
        return np.memmap(path, dtype=">f8", mode="r", shape=(1000,))[10:20]

    out = Parallel(n_jobs=2)(delayed(reopen)() for _ in range(2))
    for a in out:
        assert a.dtype == np.dtype(">f8")
        np.testing.assert_array_equal(a, np.arange(10, 20))


# ------------------------------------------------------------------ recycled result files


@pytest.fixture
def result_pool(tmp_path):
    from joblib_rs._process_pool import ProcessPool

    pool = ProcessPool(2, max_nbytes=MB, temp_folder=str(tmp_path))
    try:
        yield pool, pool._results_folder.folder
    finally:
        pool.terminate()


def result_of(pool, value, n=MB // 8 * 3):
    return pool.submit(lambda: np.full(n, float(value))).result(timeout=TIMEOUT)


def recycled(folder):
    return list_folder(os.path.join(folder, "recycled"))


def test_a_freed_result_file_is_rewritten_for_the_next_result(result_pool):
    import gc

    pool, folder = result_pool
    first = result_of(pool, 1.0)
    kept = result_of(pool, 2.0)
    assert recycled(folder) == []
    first[:10] = -1.0  # copy on write: never reaches the file
    del first
    gc.collect()
    assert len(recycled(folder)) == 1
    again = result_of(pool, 3.0)
    assert recycled(folder) == []  # claimed by the worker and rewritten
    assert again[0] == again[-1] == 3.0 and float(again.sum()) == 3.0 * again.size
    assert kept[0] == kept[-1] == 2.0  # an array still alive is never touched
    # A smaller result in a bigger recycled file: the file is cut to size.
    del again
    gc.collect()
    small = result_of(pool, 4.0, n=MB // 8 * 2)
    assert small.shape == (MB // 8 * 2,) and float(small.sum()) == 4.0 * small.size


def test_recycling_keeps_at_most_its_budget(result_pool, monkeypatch):
    import gc

    from joblib_rs import _memmapping

    pool, folder = result_pool
    monkeypatch.setattr(_memmapping, "RECYCLE_MAX_BYTES", 5 * MB)
    results = [result_of(pool, i) for i in range(3)]  # 3 MB each
    del results
    gc.collect()
    assert len(recycled(folder)) == 1  # the second would pass 5 MB: deleted
    leftovers = [n for n in list_folder(folder) if n != "recycled"]
    assert leftovers == []


def test_results_mapped_before_a_fork_are_deleted_not_rewritten(result_pool):
    import gc

    pool, folder = result_pool
    before = result_of(pool, 1.0)
    pid = os.fork()
    if pid == 0:  # the child maps `before` too: its file must never be rewritten
        os._exit(0)
    os.waitpid(pid, 0)
    after = result_of(pool, 2.0)
    del before, after
    gc.collect()
    assert len(recycled(folder)) == 1  # only the result mapped after the fork


def test_a_much_bigger_recycled_file_is_kept_for_a_result_of_its_size(result_pool):
    import gc

    pool, folder = result_pool
    big = result_of(pool, 1.0, n=MB // 8 * 6)
    del big
    gc.collect()
    assert len(recycled(folder)) == 1
    small = result_of(pool, 2.0, n=MB // 8 * 2)  # 2 MB: the 6 MB file is not cut down
    assert len(recycled(folder)) == 1 and float(small.sum()) == 2.0 * small.size
