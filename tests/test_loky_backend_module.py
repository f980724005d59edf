"""``joblib.externals.loky.backend`` on joblib-rs (the ``'loky'`` start method, the resource
tracker) and importing joblib-rs where ``_multiprocessing`` is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from joblib_rs.externals.loky.backend import get_context, resource_tracker


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


def test_loky_start_method_exists_after_import_only():
    code = (
        "import joblib_rs, multiprocessing as mp\n"
        "assert mp.get_start_method(allow_none=True) is None\n"
        "mp.set_start_method('loky')\n"
        "print(mp.get_start_method())\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loky"


def _child_pid_queue(queue):
    queue.put(os.getpid())


def test_loky_context_starts_real_processes():
    ctx = get_context()
    queue = ctx.Queue()
    process = ctx.Process(target=_child_pid_queue, args=(queue,))
    process.start()
    pid = queue.get(timeout=60)
    process.join(60)
    assert process.exitcode == 0 and pid == process.pid != os.getpid()


def test_resource_tracker_counts_users(tmp_path):
    tracked = tmp_path / "data.bin"
    tracked.write_bytes(b"x")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    assert resource_tracker._resource_tracker._fd is None
    resource_tracker.register(str(tracked), "file")
    resource_tracker.register(str(tracked), "file")
    resource_tracker.maybe_unlink(str(tracked), "file")
    assert tracked.exists()
    resource_tracker.maybe_unlink(str(tracked), "file")
    assert not tracked.exists()
    resource_tracker.register(str(folder), "folder")
    resource_tracker.maybe_unlink(str(folder), "folder")
    assert not folder.exists()
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"x")
    resource_tracker.register(str(kept), "file")
    resource_tracker.unregister(str(kept), "file")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        resource_tracker.maybe_unlink(str(kept), "file")
    assert kept.exists() and "not registered" in str(seen[0].message)
    with pytest.raises(ValueError):
        resource_tracker.register(str(kept), "socket")


def test_resource_tracker_removes_leftovers_at_exit(tmp_path):
    leftover = tmp_path / "left.bin"
    leftover.write_bytes(b"x")
    code = (
        "from joblib_rs.externals.loky.backend import resource_tracker\n"
        f"resource_tracker.register({str(leftover)!r}, 'file')\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert not leftover.exists()
    assert "leaked file objects" in done.stderr


def test_import_without_multiprocessing_runs_sequentially(tmp_path):
    (tmp_path / "_multiprocessing.py").write_text('raise ImportError("no _multiprocessing")\n')
    code = (
        "import math, joblib_rs\n"
        "import joblib_rs.externals.loky, joblib_rs.executor\n"
        "assert joblib_rs._multiprocessing_helpers.mp is None\n"
        "print(joblib_rs.Parallel(n_jobs=2)(joblib_rs.delayed(math.sqrt)(i * i) "
        "for i in range(4)))\n"
    )
    done = _run(code, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0.0, 1.0, 2.0, 3.0]"


def test_workers_are_named_and_log_like_loky_processes():
    code = (
        "import multiprocessing as mp\n"
        "import joblib_rs\n"
        "mp.util.log_to_stderr(5)\n"
        "def name(_):\n"
        "    return mp.current_process().name\n"
        "if __name__ == '__main__':\n"
        "    names = joblib_rs.Parallel(n_jobs=2)(joblib_rs.delayed(name)(i) for i in range(4))\n"
        "    print(all(n.startswith('LokyProcess-') for n in names))\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert "[INFO/LokyProcess-" in done.stderr
