"""The ``joblib-rs`` command line, driven in subprocesses against real caches and files."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import joblib
import numpy as np
import pytest

import joblib_rs
from joblib_rs.cli._format import format_age, format_size, parse_age, parse_size

FUNCS = """
import os

import numpy as np


def _log(name, value):
    with open(os.environ["CLI_TEST_LOG"], "a") as fh:
        fh.write(f"{name} {value}\\n")


def f(x, y=2):
    _log("f", x)
    return np.arange(x * 1000.0) + y


def g(s):
    _log("g", s)
    return s * 3
"""

OTHER = """
def f(z):
    return z
"""

RUN = """
import sys

import cli_funcs
import cli_other
import joblib_rs

memory = joblib_rs.Memory(sys.argv[1], verbose=0)
f = memory.cache(cli_funcs.f)
g = memory.cache(cli_funcs.g)
for x in sys.argv[2].split(","):
    if x:
        f(int(x))
for s in sys.argv[3].split(","):
    if s:
        g(s)
if len(sys.argv) > 4:
    memory.cache(cli_other.f)(1)
"""


def run_cli(*args: str, stdin: str | None = None, cwd: Path | None = None):
    """``python -m joblib_rs ARGS``: (exit status, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "joblib_rs", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    return proc.returncode, proc.stdout, proc.stderr


def run_json(*args: str):
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


class Cache:
    """A Memory cache in ``tmp_path/cache`` filled by a separate process."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.location = tmp_path / "cache"
        self.root = self.location / "joblib_rs"
        self.log = tmp_path / "calls.log"
        (tmp_path / "cli_funcs.py").write_text(FUNCS)
        (tmp_path / "cli_other.py").write_text(OTHER)
        (tmp_path / "run.py").write_text(RUN)

    def run(self, xs: str = "", ss: str = "", other: bool = False) -> list[str]:
        """Call f on ``xs`` and g on ``ss`` through Memory; returns the calls computed."""
        before = self.log.read_text().splitlines() if self.log.exists() else []
        env = dict(os.environ, PYTHONPATH=str(self.tmp), CLI_TEST_LOG=str(self.log))
        argv = [sys.executable, "run.py", str(self.location), xs, ss] + (["x"] if other else [])
        subprocess.run(argv, cwd=self.tmp, env=env, check=True, timeout=120)
        after = self.log.read_text().splitlines() if self.log.exists() else []
        return after[len(before) :]

    def entries(self, func: str = "cli_funcs/f") -> dict[str, Path]:
        folder = self.root / func
        if not folder.is_dir():
            return {}
        return {p.name: p for p in folder.iterdir() if p.is_dir() and len(p.name) == 32}

    def args_of(self, entry: Path) -> dict[str, str]:
        return json.loads((entry / "metadata.json").read_text())["input_args"]

    def touch(self, entry: Path, atime: float) -> None:
        """Set the entry's last access (the access time of its output, used by LRU)."""
        output = entry / "output.jrs"
        os.utime(output, (atime, output.stat().st_mtime))


def disk_size(entry: Path) -> int:
    return sum(p.stat().st_size for p in entry.iterdir() if p.is_file())


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    c = Cache(tmp_path)
    assert c.run("1,2,3", "ab") == ["f 1", "f 2", "f 3", "g ab"]
    return c


# -- cache ls / show ----------------------------------------------------------------------------


def test_ls_json_counts_and_sizes_match_the_disk(cache):
    data = run_json("cache", "ls", str(cache.location))
    assert data["store"] == str(cache.root)
    funcs = {f["name"]: f for f in data["functions"]}
    assert set(funcs) == {"cli_funcs/f", "cli_funcs/g"}
    for name, expected in (("cli_funcs/f", 3), ("cli_funcs/g", 1)):
        entries = cache.entries(name)
        assert funcs[name]["entries"] == expected == len(entries)
        assert funcs[name]["size"] == sum(disk_size(e) for e in entries.values())
        assert funcs[name]["path"] == str(cache.root / name)
        assert abs(funcs[name]["last_access"] - time.time()) < 600
    assert data["entries"] == 4
    assert data["size"] == funcs["cli_funcs/f"]["size"] + funcs["cli_funcs/g"]["size"]


def test_ls_human_output_and_store_root_accepted(cache):
    for location in (cache.location, cache.root):
        code, out, err = run_cli("cache", "ls", str(location))
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0] == f"Cache {cache.root}"
        assert lines[1].split() == ["FUNCTION", "ENTRIES", "SIZE", "LAST", "ACCESS"]
        row = next(line for line in lines if line.startswith("cli_funcs/f "))
        assert row.split()[1] == "3"
        assert "KB" in row and ("ago" in row or "just now" in row)
        # Columns are aligned: every row's ENTRIES column ends at the same place.
        header_end = lines[1].index("ENTRIES") + len("ENTRIES")
        assert row[:header_end].endswith("3")
        assert lines[-1] == "2 functions, 4 entries, " + format_size(
            sum(
                disk_size(e)
                for n in ("cli_funcs/f", "cli_funcs/g")
                for e in cache.entries(n).values()
            )
        )


def test_show_json_lists_arguments_sizes_and_times(cache):
    data = run_json("cache", "show", str(cache.location), "cli_funcs/f")
    assert data["function"] == "cli_funcs/f"
    by_hash = {e["hash"]: e for e in data["entries"]}
    entries = cache.entries()
    assert set(by_hash) == set(entries)
    args = sorted(e["input_args"]["x"] for e in data["entries"])
    assert args == ["1", "2", "3"]
    for h, entry in entries.items():
        shown = by_hash[h]
        assert shown["size"] == disk_size(entry)
        assert (
            shown["input_args"]
            == cache.args_of(entry)
            == {"x": shown["input_args"]["x"], "y": "2"}
        )
        assert shown["damaged"] is False and shown["damage"] == []
        assert 0 <= shown["duration"] < 60
        assert abs(shown["time"] - time.time()) < 600
    # Suffix match: 'g' is unambiguous; arguments are reprs.
    data = run_json("cache", "show", str(cache.location), "g")
    assert [e["input_args"] for e in data["entries"]] == [{"s": "'ab'"}]


def test_show_human_output(cache):
    code, out, err = run_cli("cache", "show", str(cache.location), "f")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Function cli_funcs/f ({cache.root / 'cli_funcs' / 'f'})"
    assert lines[1].split()[:3] == ["HASH", "SIZE", "DURATION"]
    for h in cache.entries():
        row = next(line for line in lines if line.startswith(h))
        assert "x=" in row and row.rstrip().endswith("ok")
    assert lines[-1].startswith("3 entries, ")


def test_show_flags_damaged_entries_without_crashing(cache):
    entries = sorted(cache.entries().values(), key=lambda e: cache.args_of(e)["x"])
    (entries[0] / "metadata.json").unlink()
    (entries[1] / "output.jrs").unlink()
    (entries[2] / "output.jrs").write_bytes(b"garbage")  # caught with --verify only
    data = run_json("cache", "show", str(cache.location), "f", "--verify")
    by_hash = {e["hash"]: e for e in data["entries"]}
    assert by_hash[entries[0].name]["damage"] == ["no metadata.json"]
    assert by_hash[entries[0].name]["input_args"] is None
    assert by_hash[entries[1].name]["damage"] == ["no output.jrs"]
    assert by_hash[entries[2].name]["damaged"] is True
    assert "output.jrs" in by_hash[entries[2].name]["damage"][0]
    assert data["damaged"] == 3
    code, out, _ = run_cli("cache", "show", str(cache.location), "f")
    assert code == 0
    assert "DAMAGED: no metadata.json" in out and "DAMAGED: no output.jrs" in out
    assert "2 damaged" in out.splitlines()[-1]


# -- errors -------------------------------------------------------------------------------------


def assert_error(result, status: int, *fragments: str) -> None:
    code, out, err = result
    assert code == status, (out, err)
    assert err.startswith("joblib-rs: error:"), err
    for fragment in fragments:
        assert fragment in err


def test_missing_location_is_status_1(tmp_path):
    missing = str(tmp_path / "nowhere")
    for args in (("ls", missing), ("show", missing, "f"), ("clear", missing, "--yes")):
        assert_error(run_cli("cache", *args), 1, missing)
    assert_error(run_cli("cache", "prune", missing, "--max-items", "1", "--yes"), 1, missing)


def test_folder_without_a_cache_is_status_1(tmp_path):
    (tmp_path / "joblib").mkdir()  # a joblib cache, not ours
    assert_error(run_cli("cache", "ls", str(tmp_path)), 1, "no joblib-rs cache", "joblib cache")


def test_unknown_and_ambiguous_functions_are_status_1(cache):
    cache.run("", "", other=True)  # adds cli_other/f
    assert_error(run_cli("cache", "show", str(cache.location), "nope"), 1, "'nope'", "cli_funcs/f")
    assert_error(
        run_cli("cache", "show", str(cache.location), "f"),
        1,
        "ambiguous",
        "cli_funcs/f",
        "cli_other/f",
    )
    assert_error(run_cli("cache", "clear", str(cache.location), "f", "--yes"), 1, "ambiguous")
    # The full path still selects one.
    assert run_json("cache", "show", str(cache.location), "cli_other/f")["function"] == (
        "cli_other/f"
    )
    assert len(cache.entries()) == 3


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-size", "10X"), ("--max-size", "ten"), ("--max-age", "3y"), ("--max-age", "-1d")],
)
def test_bad_limits_are_usage_errors(cache, option, value):
    args = ("cache", "prune", str(cache.location), f"{option}={value}", "--yes")
    assert_error(run_cli(*args), 2, value)
    assert len(cache.entries()) == 3


def test_prune_without_limits_and_argparse_errors_are_status_2(cache):
    assert_error(run_cli("cache", "prune", str(cache.location), "--yes"), 2, "--max-size")
    assert_error(
        run_cli("cache", "prune", str(cache.location), "--max-items", "many"), 2, "'many'"
    )
    assert_error(run_cli("cache", "frobnicate"), 2, "frobnicate", "usage: joblib-rs cache")
    assert_error(run_cli(), 2, "usage: joblib-rs")


# -- prune --------------------------------------------------------------------------------------


def order_entries(cache: Cache) -> list[Path]:
    """Give f's entries distinct access times, x=1 least recently used; return them LRU
    first."""
    entries = sorted(cache.entries().values(), key=lambda e: cache.args_of(e)["x"])
    now = time.time()
    for i, entry in enumerate(entries):
        cache.touch(entry, now - 3600 * (10 - i))
    g_entry = next(iter(cache.entries("cli_funcs/g").values()))
    cache.touch(g_entry, now)
    return entries


def test_prune_max_items_removes_least_recently_used_and_cache_still_works(cache):
    lru = order_entries(cache)
    code, out, err = run_cli("cache", "prune", str(cache.location), "--max-items", "2", "--yes")
    assert code == 0, err
    assert "Removed 2 entries" in out
    assert set(cache.entries()) == {lru[2].name}
    assert not lru[0].exists() and not lru[1].exists()
    assert len(cache.entries("cli_funcs/g")) == 1
    # Memory recomputes exactly the removed results, then serves them from the cache.
    assert cache.run("1,2,3", "ab") == ["f 1", "f 2"]
    assert cache.run("1,2,3", "ab") == []


def test_prune_reports_bytes_and_matches_memory_reduce_size(cache, tmp_path):
    lru = order_entries(cache)
    sizes = [disk_size(e) for e in lru]
    g_size = disk_size(next(iter(cache.entries("cli_funcs/g").values())))
    limit = sizes[2] + g_size  # keeps exactly the two most recent entries
    code, out, err = run_cli(
        "cache", "prune", str(cache.location), "--max-size", str(limit), "--yes"
    )
    assert code == 0, err
    assert (
        f"Removed 2 entries ({format_size(sizes[0] + sizes[1])}, {sizes[0] + sizes[1]} bytes)"
        in out
    )
    assert set(cache.entries()) == {lru[2].name}

    # The same cache state pruned by Memory.reduce_size selects the same entries.
    (tmp_path / "twin").mkdir()
    twin = Cache(tmp_path / "twin")
    twin.run("1,2,3", "ab")
    twin_lru = order_entries(twin)
    # Sizes differ by a few bytes between caches (metadata holds the measured duration).
    twin_g = next(iter(twin.entries("cli_funcs/g").values()))
    twin_limit = disk_size(twin_lru[2]) + disk_size(twin_g)
    joblib_rs.Memory(twin.location, verbose=0).reduce_size(bytes_limit=twin_limit)
    assert set(twin.entries()) == {twin_lru[2].name}


def test_prune_max_age_and_size_units(cache):
    lru = order_entries(cache)  # f entries last used 10, 9 and 8 hours ago
    code, out, err = run_cli(
        "cache", "prune", str(cache.location), "--max-age", "8.5h", "--max-size", "1GiB", "--yes"
    )
    assert code == 0, err
    assert set(cache.entries()) == {lru[2].name}
    code, out, _ = run_cli("cache", "prune", str(cache.location), "--max-age", "2w", "-y")
    assert code == 0 and "Nothing to remove" in out


def test_prune_dry_run_and_declined_prompt_remove_nothing(cache):
    lru = order_entries(cache)
    code, out, _ = run_cli("cache", "prune", str(cache.location), "--max-items", "1", "--dry-run")
    assert code == 0
    assert out.startswith("Would remove 3 of 4 entries")
    assert all(f"cli_funcs/f/{e.name}" in out for e in lru)
    for answer in ("n\n", "", "maybe\n"):
        code, out, err = run_cli(
            "cache", "prune", str(cache.location), "--max-items", "1", stdin=answer
        )
        assert code == 1
        assert "Remove 3 of 4 entries" in err and "[y/N]" in err
        assert "joblib-rs: error: aborted: nothing was removed" in err
        assert len(cache.entries()) == 3
    code, out, err = run_cli(
        "cache", "prune", str(cache.location), "--max-items", "1", stdin="y\n"
    )
    assert code == 0, err
    assert "Removed 3 entries" in out and cache.entries() == {}


# -- clear --------------------------------------------------------------------------------------


def test_clear_one_function(cache):
    code, out, err = run_cli("cache", "clear", str(cache.location), "f", "--yes")
    assert code == 0, err
    assert "Removed cli_funcs/f: 3 entries" in out
    assert not (cache.root / "cli_funcs" / "f").exists()
    assert len(cache.entries("cli_funcs/g")) == 1
    assert cache.run("1", "ab") == ["f 1"]
    assert cache.run("1", "ab") == []


def test_clear_all_with_confirmation(cache):
    for answer in ("", "no\n"):
        code, _, err = run_cli("cache", "clear", str(cache.location), stdin=answer)
        assert code == 1 and "aborted" in err
        assert len(cache.entries()) == 3
    code, out, err = run_cli("cache", "clear", str(cache.location), stdin="yes\n")
    assert code == 0, err
    assert "Removed 2 functions, 4 entries" in out
    assert cache.entries() == {} and cache.entries("cli_funcs/g") == {}
    assert cache.root.is_dir() and (cache.location / ".gitignore").exists()
    assert run_json("cache", "ls", str(cache.location))["functions"] == []
    assert cache.run("2", "ab") == ["f 2", "g ab"]
    assert cache.run("2", "ab") == []


# -- inspect ------------------------------------------------------------------------------------


def sample() -> dict:
    return {
        "a": np.arange(100_000.0),
        "b": np.ones((30, 40), dtype="<i4", order="F"),
        "text": "hello",
    }


@pytest.mark.parametrize("compress", [0, 3, ("lz4", 1)])
def test_inspect_joblib_rs_files(tmp_path, compress):
    path = tmp_path / "x.jrs"
    joblib_rs.dump(sample(), path, compress=compress)
    data = run_json("inspect", str(path))
    assert data["format"] == "joblib-rs" and data["version"] == "1.0" and data["ok"] is True
    assert data["file_size"] == path.stat().st_size
    kinds = [f["kind"] for f in data["frames"]]
    assert kinds == ["buffer", "buffer", "pickle"]
    assert [f["raw_size"] for f in data["frames"][:2]] == [800_000, 4800]
    assert data["raw_size"] == sum(f["raw_size"] for f in data["frames"])
    codec = {0: "none", 3: "zstd"}.get(compress, "lz4")  # type: ignore[call-overload]
    assert {f["codec"] for f in data["frames"][:2]} == {codec}
    assert data["compression"] == (None if codec == "none" else codec)
    if compress:
        assert data["ratio"] > 2 and all(
            f["stored_size"] < f["raw_size"] for f in data["frames"][:2]
        )
    assert all(len(f["checksum"]) == 16 for f in data["frames"])
    code, out, err = run_cli("inspect", str(path))
    assert code == 0, err
    assert "format:" in out and "joblib-rs 1.0" in out
    assert out.rstrip().endswith("OK (3 frames, every checksum verified)")


@pytest.mark.parametrize(
    ("compress", "codec"),
    [
        (0, None),
        (3, "zlib"),
        (("gzip", 3), "gzip"),
        ("xz", "xz"),
        ("lzma", "lzma"),
        ("lz4", "lz4"),
    ],
)
def test_inspect_files_written_by_joblib(tmp_path, compress, codec):
    path = tmp_path / "x.pkl"
    value = sample()
    value["objects"] = np.array([1, "two", None], dtype=object)
    joblib.dump(value, path, compress=compress)
    data = run_json("inspect", str(path))
    assert data["format"] == "joblib pickle" and data["ok"] is True
    assert data["compression"] == codec
    assert data["file_size"] == path.stat().st_size
    assert data["protocol"] == pickle.DEFAULT_PROTOCOL
    assert data["arrays"] == [
        {"dtype": "float64", "shape": [100_000], "order": "C", "nbytes": 800_000},
        {"dtype": "int32", "shape": [30, 40], "order": "F", "nbytes": 4800},
        {"dtype": "object", "shape": [3], "order": "C", "nbytes": None},
    ]
    assert "joblib.numpy_pickle.NumpyArrayWrapper" in data["globals"]
    assert data["raw_size"] > 804_800
    if codec is None:
        assert data["raw_size"] == data["file_size"]
    code, out, err = run_cli("inspect", str(path))
    assert code == 0, err
    assert "joblib pickle" in out and "OK (pickle scanned to its end)" in out
    assert "float64" in out and "30x40" in out


def test_inspect_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "ran"
    payload = b"\x80\x04cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    data = run_json("inspect", str(path))
    assert data["ok"] is True and data["arrays"] == []
    assert data["globals"] == ["os.system"]
    assert not marker.exists()


def test_inspect_damaged_files_are_status_1(tmp_path):
    good = tmp_path / "good.jrs"
    joblib_rs.dump(sample(), good)
    raw = bytearray(good.read_bytes())
    flipped = tmp_path / "flipped.jrs"
    raw[5000] ^= 0x10
    flipped.write_bytes(bytes(raw))
    assert_error(run_cli("inspect", str(flipped)), 1, "flipped.jrs", "checksum mismatch")
    code, out, _ = run_cli("inspect", str(flipped), "--json")
    assert code == 1
    assert json.loads(out)["ok"] is False and "checksum" in json.loads(out)["error"]
    code, out, _ = run_cli("inspect", str(flipped))
    assert "DAMAGED: " in out
    truncated = tmp_path / "truncated.jrs"
    truncated.write_bytes(good.read_bytes()[:-100])
    assert_error(run_cli("inspect", str(truncated)), 1, "truncated")
    compressed = tmp_path / "c.jrs"
    joblib_rs.dump(sample(), compressed, compress=3)
    raw = bytearray(compressed.read_bytes())
    raw[200] ^= 0x01
    compressed.write_bytes(bytes(raw))
    assert_error(run_cli("inspect", str(compressed)), 1, "damaged")

    jl = tmp_path / "joblib.pkl"
    joblib.dump(sample(), jl)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(jl.read_bytes()[:-3000])
    assert_error(run_cli("inspect", str(cut)), 1, "truncated")
    gz = tmp_path / "x.pkl.gz"
    joblib.dump(sample(), gz, compress=("gzip", 3))
    raw = bytearray(gz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    gz.write_bytes(bytes(raw))
    assert_error(run_cli("inspect", str(gz)), 1, "gzip")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 definitely not a pickle")
    assert_error(run_cli("inspect", str(junk)), 1, "not a joblib-rs or joblib file")
    assert_error(run_cli("inspect", str(tmp_path / "missing.jrs")), 1, "missing.jrs")


def test_console_script_is_installed(cache):
    script = Path(sys.executable).with_name("joblib-rs")
    assert script.exists()
    proc = subprocess.run(
        [str(script), "cache", "ls", str(cache.location), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["entries"] == 4


# -- parsing and formatting (in process) ---------------------------------------------------------


def test_size_and_age_parsing():
    assert parse_size("123") == 123
    assert parse_size("10K") == parse_size("10KB") == parse_size("10KiB") == 10240
    assert parse_size("1.5G") == 1536 * 1024**2
    assert parse_size("2T") == 2 * 1024**4
    assert parse_size("10mb") == 10 * 1024**2
    for bad in ("", "10X", "K", "-1", "1.2.3", "10iB"):
        with pytest.raises(ValueError, match="invalid size"):
            parse_size(bad)
    assert parse_age("90s") == 90 and parse_age("15m") == 900 and parse_age("12h") == 43200
    assert parse_age("30d") == 30 * 86400 and parse_age("2w") == 14 * 86400
    assert parse_age("45") == 45
    for bad in ("", "3y", "-1d", "d"):
        with pytest.raises(ValueError, match="invalid age"):
            parse_age(bad)


def test_human_formats():
    assert format_size(512) == "512 B"
    assert format_size(1234567) == "1.2 MB"
    assert format_size(None) == "-"
    now = 1_000_000.0
    assert format_age(now - 180, now) == "3 min ago"
    assert format_age(now - 2 * 86400 - 5, now) == "2 days ago"
    assert format_age(now - 3600, now) == "1 hour ago"
    assert format_age(None, now) == "-"


def test_main_module_docstring_lists_every_command():
    import joblib_rs.cli as cli

    doc = textwrap.dedent(cli.__doc__ or "")
    for command in ("cache ls", "cache show", "cache prune", "cache clear", "inspect"):
        assert command in doc
