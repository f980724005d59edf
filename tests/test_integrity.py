"""Integrity and file-system hygiene (issue 14): no silent damage, nothing removed or exposed
that joblib-rs did not create, nothing left behind. Real files, real processes, real kill -9."""

from __future__ import annotations

import gzip
import os
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import joblib_rs
from joblib_rs import _core
from joblib_rs._store_backends import CacheWarning

from _processes import alive, wait_until

# ------------------------------------------------------------------------------------------
# 1. A memory-mapped cache hit never returns bytes other than those stored.


def _payload_offset(path: Path) -> int:
    """Offset of the first buffer frame's payload (the cached array's bytes)."""
    frames = _core.inspect_path(str(path))["frames"]
    # (index, kind, codec, raw_len, stored_len, checksum, header offset)
    return next(f[6] + 64 for f in frames if f[1] == "buffer")


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize("new_process_view", [False, True])
def test_mapped_hit_with_a_flipped_payload_byte_is_recomputed(tmp_path, new_process_view):
    calls = []

    def make(n):
        calls.append(n)
        return np.arange(n, dtype=np.float64)

    memory = joblib_rs.Memory(tmp_path, mmap_mode="r", verbose=0)
    cached = memory.cache(make)
    first = cached(10_000)
    assert isinstance(first, np.memmap)
    time.sleep(0.1)  # let the file settle: later hits may then skip the re-read
    assert np.array_equal(cached(10_000), np.arange(10_000.0))
    (output,) = (tmp_path / "joblib_rs").rglob("output.jrs")
    _flip(output, _payload_offset(output) + 8 * 1234 + 3)
    if new_process_view:
        cached = joblib_rs.Memory(tmp_path, mmap_mode="r", verbose=0).cache(make)
    with pytest.warns(CacheWarning, match="checksum mismatch"):
        again = cached(10_000)
    assert np.array_equal(again, np.arange(10_000.0))
    assert calls == [10_000, 10_000]
    # The replaced entry is whole again: a plain hit, nothing recomputed.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(cached(10_000), np.arange(10_000.0))
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------
# 2. Clearing touches only what the store created; the command line refuses other folders.


def _fill_cache(location: Path) -> Path:
    memory = joblib_rs.Memory(location, verbose=0)

    def square(x):
        return x * x

    square.__module__ = "integrity_mod"
    square.__qualname__ = "square"
    f = memory.cache(square)
    for i in range(3):
        f(i)
    root = location / "joblib_rs"
    assert (root / _core.STORE_MARKER).is_file()
    return root


def test_memory_clear_keeps_what_the_cache_did_not_create(tmp_path):
    root = _fill_cache(tmp_path)
    func = root / "integrity_mod" / "square"
    (root / "notes.txt").write_text("mine")
    (root / "photos").mkdir()
    (root / "photos" / "cat.jpg").write_bytes(b"jpg")
    (func / "todo.txt").write_text("mine")
    foreign_entry = func / ("ab" * 16)
    foreign_entry.mkdir()
    (foreign_entry / "thesis.tex").write_text("mine")
    with pytest.warns(CacheWarning, match="did not create"):
        joblib_rs.Memory(tmp_path, verbose=0).clear(warn=False)
    assert (root / "notes.txt").read_text() == "mine"
    assert (root / "photos" / "cat.jpg").read_bytes() == b"jpg"
    assert (func / "todo.txt").read_text() == "mine"
    assert (foreign_entry / "thesis.tex").read_text() == "mine"
    assert not list(root.rglob("output.jrs"))
    assert not list(root.rglob("func_code.py"))
    assert (root / _core.STORE_MARKER).is_file()
    # reduce_size never counts nor evicts a folder holding foreign files.
    joblib_rs.Memory(tmp_path, verbose=0).reduce_size(items_limit=0)
    assert (foreign_entry / "thesis.tex").exists()


def test_func_clear_keeps_foreign_files_in_its_folder(tmp_path):
    root = _fill_cache(tmp_path)
    func = root / "integrity_mod" / "square"
    (func / "todo.txt").write_text("mine")

    def square(x):
        return x * x

    square.__module__ = "integrity_mod"
    square.__qualname__ = "square"
    cached = joblib_rs.Memory(tmp_path, verbose=0).cache(square)
    with pytest.warns(CacheWarning, match="todo.txt"):
        cached.clear(warn=False)
    assert (func / "todo.txt").read_text() == "mine"
    # Entries and locks are gone; the code file is written back, as joblib does.
    assert sorted(p.name for p in func.iterdir()) == ["func_code.py", "todo.txt"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "joblib_rs", *args],
        capture_output=True,
        text=True,
        timeout=120,
        input="",
    )


def test_cli_refuses_a_folder_that_is_not_a_cache(tmp_path):
    folder = tmp_path / "joblib_rs"  # the store's name, but not a store
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "lib.rs").write_text("fn main() {}")
    (folder / "docs").mkdir()
    commands = (
        ["cache", "clear", "--yes"],
        ["cache", "ls"],
        ["cache", "prune", "--max-items", "0", "--yes"],
    )
    for args in commands:
        proc = _cli(*args[:2], str(tmp_path), *args[2:])
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert str(folder) in proc.stderr
        assert "not a joblib-rs cache" in proc.stderr
    assert (folder / "src" / "lib.rs").read_text() == "fn main() {}"
    assert (folder / "docs").is_dir()


def test_cli_clear_reports_what_it_skipped(tmp_path):
    root = _fill_cache(tmp_path)
    (root / "photos").mkdir()
    (root / "photos" / "cat.jpg").write_bytes(b"jpg")
    proc = _cli("cache", "clear", str(tmp_path), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "Removed 1 functions, 3 entries" in proc.stdout
    assert "Skipped 1 item(s)" in proc.stdout
    assert str(root / "photos" / "cat.jpg") in proc.stdout
    assert (root / "photos" / "cat.jpg").read_bytes() == b"jpg"


def test_cli_prune_leaves_and_names_entries_holding_foreign_files(tmp_path):
    root = _fill_cache(tmp_path)
    func = root / "integrity_mod" / "square"
    entry = sorted(p for p in func.iterdir() if p.is_dir())[0]
    (entry / "thesis.tex").write_text("mine")
    proc = _cli("cache", "prune", str(tmp_path), "--max-items", "0", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "Skipped 1 item(s)" in proc.stdout and str(entry) in proc.stdout
    assert "Removed 2 entries" in proc.stdout
    assert (entry / "thesis.tex").read_text() == "mine"
    assert (entry / "output.jrs").exists()


def test_existing_store_without_marker_is_adopted(tmp_path):
    root = _fill_cache(tmp_path)
    (root / _core.STORE_MARKER).unlink()  # a store written before markers existed
    proc = _cli("cache", "ls", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "square" in proc.stdout
    assert (root / _core.STORE_MARKER).read_text().endswith(f"version {_core.STORE_VERSION}\n")


# ------------------------------------------------------------------------------------------
# 3. dump keeps an existing file's mode, and writes through a symlink.


def test_dump_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "secret.pkl"
    joblib_rs.dump({"a": 1}, path)
    os.chmod(path, 0o600)
    old_umask = os.umask(0o022)
    try:
        joblib_rs.dump({"a": 2}, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        os.chmod(path, 0o640)
        joblib_rs.dump(np.arange(10), path, compress=3)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        # A new file gets the umask's mode, as open() would give it.
        joblib_rs.dump(1, tmp_path / "new.pkl")
        assert stat.S_IMODE(os.stat(tmp_path / "new.pkl").st_mode) == 0o644
    finally:
        os.umask(old_umask)
    assert joblib_rs.load(path).tolist() == list(range(10))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")
def test_dump_as_root_keeps_the_owner(tmp_path):
    path = tmp_path / "owned.pkl"
    joblib_rs.dump(1, path)
    os.chown(path, 12345, 23456)
    joblib_rs.dump(2, path)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (12345, 23456)


def test_dump_writes_through_a_symlink(tmp_path):
    target_dir = tmp_path / "data"
    target_dir.mkdir()
    target = target_dir / "real.pkl"
    joblib_rs.dump("old", target)
    os.chmod(target, 0o600)
    link = tmp_path / "link.pkl"
    link.symlink_to(Path("data") / "real.pkl")  # relative, resolved against the link's folder
    chain = tmp_path / "chain.pkl"
    chain.symlink_to(link)
    joblib_rs.dump("new", chain)
    assert chain.is_symlink() and link.is_symlink()
    assert joblib_rs.load(target) == "new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    # A dangling link: the target is created, the link stays.
    dangling = tmp_path / "dangling.pkl"
    dangling.symlink_to(target_dir / "later.pkl")
    joblib_rs.dump([1, 2], dangling)
    assert dangling.is_symlink()
    assert joblib_rs.load(target_dir / "later.pkl") == [1, 2]
    assert not list(tmp_path.rglob("*.jrs-tmp"))


# ------------------------------------------------------------------------------------------
# 4. Lying lengths are refused before anything is allocated.


# Lying frame headers (re-sealed, so only the length check can refuse them) are tested in
# the Rust core: crates/joblib-core/src/format/tests.rs, `lying_raw_lens_are_refused_...`.


#: Child-process code printing the peak resident size (KiB) of its own address space.
#: `ru_maxrss` is not usable here: Linux carries the forking parent's (pytest's) resident size
#: across exec into the child's figure, so it measured the test runner, not the load.
PRINT_PEAK_KIB = (
    "print(next(int(line.split()[1]) for line in open('/proc/self/status') "
    "if line.startswith('VmHWM:')))"
)


def test_gzip_bomb_that_is_not_a_joblib_file_is_refused_early(tmp_path):
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        zeros = bytes(1 << 24)
        for _ in range(64):  # 1 GiB of zeros, about 1 MB compressed
            f.write(zeros)
    code = (
        "import sys, joblib_rs\n"
        "try:\n"
        "    joblib_rs.load(sys.argv[1])\n"
        "except joblib_rs.CorruptFileError as e:\n"
        "    print('CorruptFileError', e)\n"
        f"{PRINT_PEAK_KIB}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    first, peak = proc.stdout.splitlines()
    assert first.startswith("CorruptFileError") and "not a joblib-rs or joblib file" in first
    assert int(peak) < 256 * 1024  # KiB


def test_gzip_stream_holding_a_container_then_junk_is_refused(tmp_path):
    path = tmp_path / "junk.gz"
    with gzip.open(path, "wb") as f:
        joblib_rs.dump([1, 2, 3], f)
    assert joblib_rs.load(path) == [1, 2, 3]
    with gzip.open(path, "wb") as f:
        f.write(b"not a pickle at all" * 1000)
    with pytest.raises(joblib_rs.CorruptFileError, match="not a joblib-rs or joblib file"):
        joblib_rs.load(path)


# ------------------------------------------------------------------------------------------
# 5. Leftovers of killed writers and parents are reaped.

WRITER = r"""
import os, sys, numpy as np, joblib_rs
print(os.getpid(), flush=True)
joblib_rs.dump(np.ones(800_000_000 // 8), sys.argv[1])
"""


def _kill_mid_dump(folder: Path, target: Path) -> int:
    script = folder / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(target)], stdout=subprocess.PIPE, text=True
    )
    pid = int(proc.stdout.readline())
    assert wait_until(lambda: any(folder.glob(f".{target.name}.{pid}.*.jrs-tmp")), 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not alive(pid)
    return pid


def test_next_dump_reaps_temporaries_of_killed_writers(tmp_path):
    target = tmp_path / "big.pkl"
    pid = _kill_mid_dump(tmp_path, target)
    (left,) = tmp_path.glob(f".big.pkl.{pid}.*.jrs-tmp")
    # Temporaries of live processes, and files that only look alike, stay.
    live = tmp_path / f".other.pkl.{os.getppid()}.0.jrs-tmp"
    live.write_bytes(b"in progress")
    lookalike = tmp_path / "notes.jrs-tmp"
    lookalike.write_bytes(b"mine")
    joblib_rs.dump("small", tmp_path / "small.pkl")
    assert not left.exists()
    assert live.exists() and lookalike.exists()


def test_pid_reuse_does_not_protect_an_old_temporary():
    # This process is alive and started before "now": it protects what it writes now...
    assert not _core.writer_gone(os.getpid(), time.time())
    assert not _core.writer_gone(os.getppid(), time.time())
    # ...but a file last written in 1970 cannot be from the process now holding that pid.
    assert _core.writer_gone(os.getppid(), 1.0)


SHM_PARENT = r"""
import os, sys, time, numpy as np
import joblib_rs
from joblib_rs import Parallel, delayed
def touch(a):
    return float(a[0])
base = sys.argv[1]
print(os.getpid(), flush=True)
data = np.ones(2_000_000)
with Parallel(n_jobs=2, backend="loky", max_nbytes="1M", temp_folder=base) as p:
    p(delayed(touch)(data) for _ in range(2))
    print("shared", flush=True)
    time.sleep(600)
"""


def test_next_pool_start_reaps_shared_memory_of_killed_parents(tmp_path):
    base = tmp_path / "shm"
    base.mkdir()
    script = tmp_path / "parent.py"
    script.write_text(SHM_PARENT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(base)], stdout=subprocess.PIPE, text=True
    )
    pid = int(proc.stdout.readline())
    assert proc.stdout.readline().strip() == "shared"
    (left,) = base.glob(f"joblib_rs_memmapping_{pid}_*")
    foreign = base / "joblib_rs_memmapping_notapid"
    foreign.mkdir()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert wait_until(lambda: not alive(pid))
    assert left.exists()
    from joblib_rs import Parallel, delayed

    with Parallel(n_jobs=2, max_nbytes="1M", temp_folder=str(base)) as p:
        data = np.ones(1_000_000)  # 8 MB: shared through a new folder in `base`
        assert p(delayed(np.sum)(data) for _ in range(2)) == [1e6, 1e6]
    assert not left.exists()
    assert foreign.exists()


# ------------------------------------------------------------------------------------------
# 6. Cache paths built from function metadata stay inside the location.


@pytest.mark.parametrize(
    ("module", "qualname"),
    [
        ("../../escape", "f"),
        ("/tmp/abs", "f"),
        ("ok", "../../../up.f"),
        ("a/b/../../..", "x/../../y"),
        ("..", ".."),
        (".hidden", ".tmp-f-1-2-ff"),
    ],
)
def test_hostile_function_metadata_stays_inside_the_location(tmp_path, module, qualname):
    location = tmp_path / "cache"
    outside_before = {p for p in tmp_path.rglob("*") if location not in p.parents}

    def f(x):
        return x + 1

    f.__module__ = module
    f.__qualname__ = qualname
    f.__name__ = qualname.rsplit(".", 1)[-1]
    cached = joblib_rs.Memory(location, verbose=0).cache(f)
    assert cached(1) == 2
    assert cached(1) == 2
    outside_after = {p for p in tmp_path.rglob("*") if location not in p.parents}
    assert outside_after == outside_before | {location}
    root = (location / "joblib_rs").resolve()
    (output,) = root.rglob("output.jrs")
    assert root in output.resolve().parents
    func_dir = output.parent.parent
    assert not any(part.startswith(".") for part in func_dir.relative_to(root).parts)
    cached.clear(warn=False)
    assert not list(root.rglob("output.jrs"))
    assert {p for p in tmp_path.rglob("*") if location not in p.parents} == outside_after


def test_ordinary_function_paths_are_unchanged(tmp_path):
    from joblib_rs.memory import _build_func_identifier

    def g():
        pass

    g.__module__ = "pkg.sub"
    g.__qualname__ = "outer.<locals>.g"
    assert _build_func_identifier(g) == os.path.join("pkg", "sub", "outer", "<locals>", "g")


# ------------------------------------------------------------------------------------------
# 7. hash() of an object whose reducer yields endless items fails with bounded memory.


ENDLESS = (
    r"""
import itertools, joblib_rs
class Endless:
    def __reduce__(self):
        return (list, (), None, itertools.count())
class EndlessPairs:
    def __reduce__(self):
        return (dict, (), None, None, ((i, i) for i in itertools.count()))
for obj in (Endless(), EndlessPairs()):
    try:
        joblib_rs.hash(obj)
    except Exception as e:
        print(type(e).__name__, e)
"""
    + PRINT_PEAK_KIB
)


def test_hash_of_an_endless_reducer_fails_with_bounded_memory():
    proc = subprocess.run(
        [sys.executable, "-c", ENDLESS], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    *errors, peak = proc.stdout.splitlines()
    assert len(errors) == 2
    for line in errors:
        assert line.startswith("PicklingError") and "endless iterator" in line, line
    assert int(peak) < 1024 * 1024  # KiB: measured 363 MiB, from the dict entries' digests


def test_hash_of_big_lists_is_unchanged_by_streaming():
    # A list long enough to spill its frame into a streaming digest hashes like before: the
    # same as an equal list, different from a list that differs in one item.
    a = list(range(500_000))
    b = list(range(500_000))
    c = list(range(500_000))
    c[-1] = -1
    assert joblib_rs.hash(a) == joblib_rs.hash(b) != joblib_rs.hash(c)
