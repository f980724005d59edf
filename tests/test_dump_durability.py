"""``dump``'s write to a path: atomic always, flushed to disk only with ``fsync=True``
(issue 17, item 5). System calls are observed with ``strace`` in a child process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import joblib_rs

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


def traced_dump(tmp_path: Path, arguments: str) -> tuple[list[str], list[str]]:
    """Run ``dump(value, path<arguments>)`` under strace: (flush calls, renames)."""
    path = tmp_path / "value.bin"
    code = (
        "import sys, numpy as np, joblib_rs\n"
        f"joblib_rs.dump({{'a': np.arange(100_000)}}, sys.argv[1]{arguments})\n"
    )
    trace = tmp_path / "trace"
    subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,sync_file_range,rename,renameat,renameat2",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            code,
            str(path),
        ],
        check=True,
        timeout=120,
    )
    lines = trace.read_text().splitlines()
    flushes = [line for line in lines if "sync" in line.split("(")[0]]
    renames = [line for line in lines if "rename" in line.split("(")[0] and "value.bin" in line]
    joblib_rs.load(path)  # whatever the settings, a complete file
    return flushes, renames


@pytest.mark.parametrize("fmt", ["jrs", "joblib"])
def test_default_dump_is_atomic_and_not_flushed(tmp_path: Path, fmt: str) -> None:
    arguments = "" if fmt == "jrs" else ", format='joblib'"
    flushes, renames = traced_dump(tmp_path, arguments)
    assert flushes == []
    assert len(renames) == 1, renames  # written under a temporary name, renamed into place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace", "value.bin"]


@pytest.mark.parametrize("fmt", ["jrs", "joblib"])
@pytest.mark.parametrize("compress", [0, 3])
def test_fsync_true_flushes_file_and_folder(tmp_path: Path, fmt: str, compress: int) -> None:
    flushes, renames = traced_dump(tmp_path, f", compress={compress}, fsync=True, format={fmt!r}")
    # The file before the rename, the folder after it.
    assert len(flushes) >= 2, flushes
    assert len(renames) == 1, renames


def test_fsync_must_be_a_bool(tmp_path: Path) -> None:
    for fmt in ("jrs", "joblib"):
        with pytest.raises(TypeError, match="fsync must be True or False"):
            joblib_rs.dump(np.arange(3), tmp_path / "x", fsync=1, format=fmt)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
