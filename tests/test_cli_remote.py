"""``joblib-rs cache ...`` and ``inspect`` on an S3 URL, against a real S3 server.

The server is moto's (``_s3server``), started here on 127.0.0.1; the command runs in a
subprocess configured only by the standard ``AWS_*`` environment, as a user's shell would be.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator

import numpy as np
import pytest

import joblib_rs
from joblib_rs import Memory

from _s3server import keys, moto_s3, new_bucket, s3_client

pytest.importorskip("moto.server")
pytest.importorskip("boto3")
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


def run_cli(*args: str) -> tuple[int, str, str]:
    """``python -m joblib_rs ARGS``: (exit status, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "joblib_rs", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr


def run_json(*args: str) -> dict:
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def square(x: int) -> np.ndarray:
    return np.full(1000, x * x, dtype=np.int64)


def double(x: int) -> int:
    return 2 * x


@pytest.fixture
def cache(s3_endpoint: str) -> tuple[str, str]:
    """A bucket holding a cache of two functions (3 and 1 entries): (bucket, location)."""
    bucket = new_bucket(s3_endpoint)
    location = f"s3://{bucket}/team/cache"
    memory = Memory(location, verbose=0)
    for x in (1, 2, 3):
        memory.cache(square)(x)
    memory.cache(double)(5)
    return bucket, location


def test_ls_lists_functions_entries_and_sizes(s3_endpoint, cache):
    bucket, location = cache
    data = run_json("cache", "ls", location)
    assert data["store"] == location + "/joblib_rs"
    by_name = {f["name"].rsplit("/", 1)[-1]: f for f in data["functions"]}
    assert by_name["square"]["entries"] == 3 and by_name["double"]["entries"] == 1
    stored = s3_client(s3_endpoint).list_objects_v2(Bucket=bucket)["Contents"]
    entry_bytes = sum(o["Size"] for o in stored if o["Key"].endswith("/entry.jrs"))
    assert data["size"] == entry_bytes and data["entries"] == 4
    code, out, _ = run_cli("cache", "ls", location + "/joblib_rs")  # the store root itself
    assert code == 0 and "2 functions, 4 entries" in out


def test_show_reads_metadata_and_verify_flags_a_damaged_entry(s3_endpoint, cache):
    bucket, location = cache
    data = run_json("cache", "show", location, "square", "--verify")
    assert sorted(e["input_args"]["x"] for e in data["entries"]) == ["1", "2", "3"]
    assert data["damaged"] == 0
    assert all(e["path"].startswith(location + "/joblib_rs/") for e in data["entries"])
    # Flip one byte of one entry's output: --verify downloads and checks it.
    s3 = s3_client(s3_endpoint)
    key = next(k for k in keys(s3_endpoint, bucket) if "square" in k and k.endswith("entry.jrs"))
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[-10] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    assert run_json("cache", "show", location, "square")["damaged"] == 0  # metadata only
    data = run_json("cache", "show", location, "square", "--verify")
    assert data["damaged"] == 1
    damaged = next(e for e in data["entries"] if e["damaged"])
    assert "output checksum mismatch" in damaged["damage"][0]
    code, out, _ = run_cli("cache", "show", location, "square", "--verify")
    assert code == 0 and "DAMAGED" in out and "1 damaged" in out.splitlines()[-1]


def test_prune_removes_least_recently_used_and_memory_still_works(cache):
    _, location = cache
    code, out, _ = run_cli("cache", "prune", location, "--max-items", "2", "--dry-run")
    assert code == 0 and out.startswith("Would remove 2 of 4 entries")
    assert run_json("cache", "ls", location)["entries"] == 4
    code, out, err = run_cli("cache", "prune", location, "--max-items", "2", "--yes")
    assert code == 0, err
    assert out.startswith("Removed 2 entries")
    assert run_json("cache", "ls", location)["entries"] == 2
    memory = Memory(location, verbose=0)
    assert memory.cache(square)(2)[0] == 4


def test_clear_removes_only_what_the_cache_created(s3_endpoint, cache):
    bucket, location = cache
    s3 = s3_client(s3_endpoint)
    s3.put_object(Bucket=bucket, Key="team/cache/joblib_rs/NOTES.txt", Body=b"mine")
    s3.put_object(Bucket=bucket, Key="team/cache/data.csv", Body=b"1,2")
    double_folder = next(
        f["name"] for f in run_json("cache", "ls", location)["functions"] if "double" in f["name"]
    )
    code, out, err = run_cli("cache", "clear", location, "double", "--yes")
    assert code == 0, err
    assert "1 entries" in out
    assert not [
        k
        for k in keys(s3_endpoint, bucket)
        if k.startswith(f"team/cache/joblib_rs/{double_folder}/")
    ]
    code, out, err = run_cli("cache", "clear", location, "--yes")
    assert code == 0, err
    assert "Removed 1 functions, 3 entries" in out  # double went first
    assert "Skipped 1 item(s)" in out and "NOTES.txt" in out
    assert keys(s3_endpoint, bucket) == ["team/cache/data.csv", "team/cache/joblib_rs/NOTES.txt"]


def test_memory_clear_on_s3_leaves_foreign_objects_with_a_warning(s3_endpoint, cache):
    bucket, location = cache
    s3_client(s3_endpoint).put_object(
        Bucket=bucket, Key="team/cache/joblib_rs/NOTES.txt", Body=b"mine"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Memory(location, verbose=0).clear(warn=False)
    assert keys(s3_endpoint, bucket) == ["team/cache/joblib_rs/NOTES.txt"]
    assert any(
        issubclass(w.category, joblib_rs.CacheWarning) and "NOTES.txt" in str(w.message)
        for w in caught
    )


def test_locations_without_a_cache_are_status_1(s3_endpoint):
    bucket = new_bucket(s3_endpoint)
    code, _, err = run_cli("cache", "ls", f"s3://{bucket}/nothing")
    assert code == 1 and "no joblib-rs cache at" in err and "it is empty" in err
    s3_client(s3_endpoint).put_object(Bucket=bucket, Key="p/joblib_rs/x.bin", Body=b"x")
    code, _, err = run_cli("cache", "clear", f"s3://{bucket}/p", "--yes")
    assert code == 1 and "none written by it" in err
    assert keys(s3_endpoint, bucket) == ["p/joblib_rs/x.bin"]
    code, _, err = run_cli("cache", "ls", "ftp://host/cache")
    assert code == 1 and "unknown URL scheme" in err and "ftp://host/cache" in err


def test_inspect_a_dump_and_a_cache_entry_by_url(s3_endpoint, cache):
    bucket, _location = cache
    s3 = s3_client(s3_endpoint)
    buf = io.BytesIO()
    joblib_rs.dump({"a": np.arange(10)}, buf)
    s3.put_object(Bucket=bucket, Key="files/model.jrs", Body=buf.getvalue())
    report = run_json("inspect", f"s3://{bucket}/files/model.jrs")
    assert report["format"] == "joblib-rs" and report["error"] is None
    assert report["file"] == f"s3://{bucket}/files/model.jrs"
    entry = next(k for k in keys(s3_endpoint, bucket) if k.endswith("entry.jrs"))
    report = run_json("inspect", f"s3://{bucket}/{entry}")
    assert report["format"] == "joblib-rs" and report["error"] is None
    body = bytearray(s3.get_object(Bucket=bucket, Key=entry)["Body"].read())
    body[-5] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=entry, Body=bytes(body))
    code, _out, err = run_cli("inspect", f"s3://{bucket}/{entry}")
    assert code == 1 and "checksum mismatch" in err
    code, _, err = run_cli("inspect", f"s3://{bucket}/files/missing.jrs")
    assert code == 1 and "no object at" in err
