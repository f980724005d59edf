"""Memory on object storage: ``Memory("s3://bucket/prefix")`` against a real S3 server.

The server is moto's server mode, started by this module on 127.0.0.1 (``moto[server]``);
the client is joblib-rs's Rust ``object_store`` client, configured only through the standard
``AWS_*`` environment variables, as a user's would be. Behaviour tests run against both a
local folder and the S3 server.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import joblib_rs
from joblib_rs import Memory, expires_after
from joblib_rs._remote_store import ObjectStoreBackend

from _s3server import keys, moto_s3, new_bucket, s3_client

pytest.importorskip("moto.server")
pytest.importorskip("boto3")

PYTHON = sys.executable
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 and the AWS environment pointing at it."""
    with moto_s3() as endpoint:
        yield endpoint


_s3 = s3_client


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A new, empty bucket."""
    return new_bucket(s3_endpoint)


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A cache location: a local folder or a prefix of a fresh S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "cache")
    name = request.getfixturevalue("bucket")
    return f"s3://{name}/team/cache"


_keys = keys


# --------------------------------------------------------------------------------------------
# Memory behaves the same on both stores


def test_cache_hit_miss_call_and_check(location: str) -> None:
    memory = Memory(location, verbose=0)
    calls: list[tuple[int, int]] = []

    @memory.cache
    def add(x: int, y: int = 1) -> int:
        calls.append((x, y))
        return x + y

    assert add(1) == 2
    assert add(1) == 2
    assert add(1, y=1) == 2
    assert add(2, 3) == 5
    assert calls == [(1, 1), (2, 3)]
    assert add.check_call_in_cache(1)
    assert not add.check_call_in_cache(9)
    output, metadata = add.call(1)
    assert output == 2 and calls[-1] == (1, 1)
    assert metadata["input_args"] == {"x": "1", "y": "1"}
    assert memory.eval(add, 2, 3) == 5
    assert len(calls) == 3
    # A new Memory (another process, another machine) hits the same entries.
    again = Memory(location, verbose=0).cache(add.func)
    assert again(2, 3) == 5
    assert len(calls) == 3


def test_call_and_shelve_and_memorized_result(location: str) -> None:
    memory = Memory(location, verbose=0)

    @memory.cache
    def square(x: int) -> list[int]:
        return [x * x]

    result = square.call_and_shelve(4)
    assert result.get() == [16]
    assert square.call_and_shelve(4).get() == [16]
    import pickle

    assert pickle.loads(pickle.dumps(result)).get() == [16]
    result.clear()
    with pytest.raises(KeyError):
        result.get()


def test_arrays_and_compression_round_trip(location: str) -> None:
    for compress in (False, 3):
        memory = Memory(location, verbose=0, compress=compress)

        @memory.cache
        def make(n: int) -> dict[str, object]:
            return {"a": np.arange(n, dtype=np.float64), "s": "x" * n}

        first = make(1000)
        second = make(1000)
        np.testing.assert_array_equal(first["a"], second["a"])
        assert second["s"] == "x" * 1000
        memory.clear(warn=False)


def test_ignore_and_clear(location: str) -> None:
    memory = Memory(location, verbose=0)
    calls: list[int] = []

    @memory.cache(ignore=["verbose"])
    def f(x: int, verbose: bool = False) -> int:
        calls.append(x)
        return x

    f(1)
    f(1, verbose=True)
    assert calls == [1]
    f.clear(warn=False)
    f(1)
    assert calls == [1, 1]
    memory.clear(warn=False)
    f(1)
    assert calls == [1, 1, 1]


def test_cache_validation_callback(location: str) -> None:
    memory = Memory(location, verbose=0)
    calls: list[int] = []

    @memory.cache(cache_validation_callback=expires_after(seconds=3600))
    def fresh(x: int) -> int:
        calls.append(x)
        return x

    @memory.cache(cache_validation_callback=lambda metadata: False)
    def never(x: int) -> int:
        calls.append(-x)
        return x

    fresh(1), fresh(1), never(2), never(2)
    assert calls == [1, -2, -2]


def test_reduce_size_items_bytes_and_age(location: str) -> None:
    memory = Memory(location, verbose=0)

    @memory.cache
    def blob(i: int) -> bytes:
        return bytes(10_000) + bytes([i])

    for i in range(4):
        blob(i)
    assert len(memory.store_backend.get_items()) == 4
    memory.reduce_size(items_limit=3)
    assert len(memory.store_backend.get_items()) == 3
    memory.reduce_size(bytes_limit="15K")
    assert len(memory.store_backend.get_items()) == 1
    memory.reduce_size(age_limit=datetime.timedelta(days=1))
    assert len(memory.store_backend.get_items()) == 1
    memory.reduce_size(age_limit=datetime.timedelta(0))
    assert memory.store_backend.get_items() == []


@pytest.mark.parametrize("verbose", [1, 2, 11])
def test_verbose_messages(location: str, verbose: int, capsys: pytest.CaptureFixture) -> None:
    memory = Memory(location, verbose=verbose)

    @memory.cache
    def f(x: int) -> int:
        return x

    f(1)
    out = capsys.readouterr().out
    assert "[Memory] Calling" in out and "f(1)" in out
    f(1)
    out = capsys.readouterr().out
    if verbose > 1:
        assert "[Memory]" in out and "Loading f" in out
    else:
        assert out == ""


def test_damaged_entry_recomputes_with_cache_warning(s3_endpoint: str, bucket: str) -> None:
    memory = Memory(f"s3://{bucket}/c", verbose=0)
    calls: list[int] = []

    @memory.cache
    def f(x: int) -> int:
        calls.append(x)
        return x * 2

    assert f(3) == 6
    s3 = _s3(s3_endpoint)
    (entry,) = [k for k in _keys(s3_endpoint, bucket) if k.endswith("/entry.jrs")]
    data = s3.get_object(Bucket=bucket, Key=entry)["Body"].read()
    s3.put_object(Bucket=bucket, Key=entry, Body=data[:-3])  # truncated
    with pytest.warns(joblib_rs.CacheWarning, match="could not be loaded"):
        assert f(3) == 6
    assert calls == [3, 3]
    assert f(3) == 6
    assert calls == [3, 3]


# --------------------------------------------------------------------------------------------
# URLs and configuration


def test_unknown_scheme_is_an_error_not_a_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="unknown URL scheme 'ftp://'"):
        Memory("ftp://host/cache")
    assert list(tmp_path.iterdir()) == []


def test_gcs_and_azure_urls_configure_or_fail_clearly(monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith(("AZURE_", "GOOGLE_"))]:
        monkeypatch.delenv(key)
    # No request is sent before the first call: configuration alone is checked here.
    assert isinstance(Memory("gs://bucket/p").store_backend, ObjectStoreBackend)
    with pytest.raises(ValueError, match="Account must be specified"):
        Memory("az://container/p")
    azure = Memory(
        "az://container/p", backend_options={"account_name": "acct", "use_emulator": True}
    )
    assert azure.store_backend.location == "az://container/p/joblib_rs"


def test_environment_alone_configures_s3(s3_endpoint: str, bucket: str) -> None:
    memory = Memory(f"s3://{bucket}/p", verbose=0)
    assert isinstance(memory.store_backend, ObjectStoreBackend)
    assert memory.cache(abs)(-3) == 3
    keys = _keys(s3_endpoint, bucket)
    assert keys and all(k.startswith("p/joblib_rs/") for k in keys), keys
    assert any(k.endswith("/entry.jrs") for k in keys), keys


def test_backend_options_configure_endpoint_and_credentials(
    s3_endpoint: str, bucket: str, monkeypatch
) -> None:
    for key in ("AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(key)
    options = {
        "endpoint": s3_endpoint,
        "allow_http": True,
        "access_key_id": "test",
        "secret_access_key": "test",
        "region": "us-east-1",
    }
    memory = Memory(f"s3://{bucket}/opts", verbose=0, backend_options=options)
    assert memory.cache(abs)(-4) == 4
    with pytest.raises(ValueError, match="unknown option 'no_such'"):
        Memory(f"s3://{bucket}/x", backend_options={"no_such": 1})


def test_mmap_mode_loads_into_memory_with_a_warning(s3_endpoint: str, bucket: str) -> None:
    with pytest.warns(UserWarning, match="cannot be memory-mapped"):
        memory = Memory(f"s3://{bucket}/m", mmap_mode="r", verbose=0)

    @memory.cache
    def arr(n: int) -> np.ndarray:
        return np.ones(n)

    for _ in range(2):
        out = arr(10)
        assert isinstance(out, np.ndarray) and not isinstance(out, np.memmap)
        assert out.sum() == 10


def test_memory_pickles_to_a_new_client(s3_endpoint: str, bucket: str) -> None:
    import pickle

    memory = Memory(f"s3://{bucket}/pk", verbose=0)
    copy = pickle.loads(pickle.dumps(memory))
    assert copy.cache(abs)(-5) == 5
    assert memory.cache(abs).check_call_in_cache(-5)


def _forked_call(memory: Memory, queue: object) -> None:
    queue.put(memory.cache(abs)(-6))  # type: ignore[attr-defined]


def test_forked_children_use_their_own_client(s3_endpoint: str, bucket: str) -> None:
    import multiprocessing

    memory = Memory(f"s3://{bucket}/fork", verbose=0)
    assert memory.cache(abs)(-6) == 6  # the parent's client is in use
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_forked_call, args=(memory, queue))
    child.start()
    assert queue.get(timeout=60) == 6
    child.join(timeout=60)
    assert child.exitcode == 0


# --------------------------------------------------------------------------------------------
# Cost model: requests per hit and per miss


def test_requests_per_hit_and_miss(s3_endpoint: str, bucket: str) -> None:
    memory = Memory(f"s3://{bucket}/cost", verbose=0)
    backend = memory.store_backend

    @memory.cache
    def f(x: int) -> int:
        return x + 1

    f(0)  # the function's code is checked once per process
    before = backend.requests
    f(1)
    miss = backend.requests - before
    before = backend.requests
    f(1)
    first_hit = backend.requests - before
    before = backend.requests
    for _ in range(10):
        f(1)
    hits = backend.requests - before
    assert miss <= 3, miss  # GET (404), lease PUT If-None-Match, entry PUT
    assert first_hit <= 2, first_hit
    assert hits == 10, hits  # one GET each


# --------------------------------------------------------------------------------------------
# One computation per key across processes and machines

WORKER = """
import os, sys, time
import joblib_rs

def slow_square(x):
    with open(os.environ["COUNTER"], "a") as f:
        f.write("computed\\n")
    time.sleep(float(os.environ.get("SLOW", "1")))
    return [x * x] * 1000

def hangs(x):
    with open(os.environ["MARKER"], "w") as f:
        f.write("computing")
    time.sleep(600)
    return x
"""


@pytest.fixture
def worker_env(tmp_path: Path, s3_endpoint: str) -> dict[str, str]:
    (tmp_path / "rworker.py").write_text(WORKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    env["COUNTER"] = str(tmp_path / "counter.txt")
    env["MARKER"] = str(tmp_path / "marker.txt")
    return env


def _spawn(code: str, env: dict[str, str], url: str, options: str = "{}") -> subprocess.Popen:
    script = (
        "import joblib_rs, rworker\n"
        f"memory = joblib_rs.Memory({url!r}, verbose=0, backend_options={options})\n" + code
    )
    return subprocess.Popen(
        [PYTHON, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_threads_missing_one_key_compute_once(location: str) -> None:
    memory = Memory(location, verbose=0)
    calls: list[int] = []

    @memory.cache
    def slow(x: int) -> int:
        calls.append(x)
        time.sleep(0.3)
        return x * 3

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(slow(5))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [15] * 6
    assert calls == [5]


def test_four_processes_missing_one_key_compute_once(
    tmp_path: Path, worker_env: dict[str, str], bucket: str
) -> None:
    url = f"s3://{bucket}/shared"
    code = "print(sum(memory.cache(rworker.slow_square)(7)))"
    procs = [_spawn(code, worker_env, url) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outs]
    assert {o.strip() for o, _ in outs} == {str(49 * 1000)}
    assert (tmp_path / "counter.txt").read_text() == "computed\n"


def test_killed_lease_holder_is_taken_over_after_expiry(
    tmp_path: Path, worker_env: dict[str, str], bucket: str
) -> None:
    url = f"s3://{bucket}/lease"
    options = "{'lease_ttl': 2.0}"
    holder = _spawn("memory.cache(rworker.hangs)(3)", worker_env, url, options)
    deadline = time.monotonic() + 60
    while not (tmp_path / "marker.txt").exists():
        assert holder.poll() is None, holder.stderr.read() if holder.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.02)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    # Its lease stays, unexpired for up to 2 s more: a new process waits for the expiry,
    # takes the lease over and computes (the dead holder published nothing).
    marker = tmp_path / "takeover.txt"
    takeover = _spawn(
        "memory.cache(rworker.hangs)(3)", dict(worker_env, MARKER=str(marker)), url, options
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert takeover.poll() is None, takeover.stderr.read() if takeover.stderr else ""
        assert time.monotonic() < deadline, "the expired lease was never taken over"
        time.sleep(0.05)
    takeover.kill()
    takeover.wait(timeout=60)


def test_dask_cluster_shares_one_cache(tmp_path: Path, worker_env: dict[str, str], bucket: str):
    distributed = pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    os.environ["PYTHONPATH"] = worker_env["PYTHONPATH"]
    os.environ["COUNTER"] = worker_env["COUNTER"]
    os.environ["SLOW"] = "0.2"
    try:
        with (
            LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            url = f"s3://{bucket}/dask"
            folder = str(tmp_path)

            def task(x: int) -> int:
                import sys

                if folder not in sys.path:
                    sys.path.insert(0, folder)
                import rworker

                memory = joblib_rs.Memory(url, verbose=0)
                return sum(memory.cache(rworker.slow_square)(x))

            keys = [1, 2, 3] * 4
            futures = client.map(task, keys, pure=False)
            results = client.gather(futures)
            workers = {w for w in client.run(os.getpid).values()}
    finally:
        for key in ("COUNTER", "SLOW"):
            os.environ.pop(key, None)
        os.environ["PYTHONPATH"] = os.environ.get("PYTHONPATH", "").split(os.pathsep, 1)[-1]
    assert len(workers) == 2
    assert results == [x * x * 1000 for x in keys]
    # Each key computed once by the whole cluster.
    assert (tmp_path / "counter.txt").read_text().count("computed") == 3
    del distributed


# --------------------------------------------------------------------------------------------
# Network failures


class _Proxy:
    """A TCP proxy to the S3 server that can be cut (connections reset, new ones refused)
    and restored, or cut after forwarding a byte budget to the server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.budget: int | None = None
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            self.up = False
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()

    def restore(self) -> None:
        with self.lock:
            self.up = True
            self.budget = None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if upstream and self.budget is not None:
                    self.budget -= len(data)
                    if self.budget < 0:
                        self.cut()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


def test_server_lost_mid_call_never_leaves_a_damaged_entry(s3_endpoint: str, bucket: str) -> None:
    proxy = _Proxy(int(s3_endpoint.rsplit(":", 1)[1]))
    options = {
        "endpoint": f"http://127.0.0.1:{proxy.port}",
        "lease_ttl": 1.0,
        "max_retries": 1,
        "retry_timeout": 2.0,
        "connect_timeout": 1.0,
    }
    memory = Memory(f"s3://{bucket}/net", verbose=0, backend_options=options)
    calls: list[int] = []
    cut_next_upload = [True]

    @memory.cache
    def big(n: int) -> np.ndarray:
        calls.append(n)
        if cut_next_upload:
            # The server goes away while the first result is being uploaded.
            cut_next_upload.clear()
            proxy.budget = 5 << 20
        return np.arange(n, dtype=np.float64)

    n = 4 << 20  # 32 MB: a multipart upload
    with pytest.warns(joblib_rs.CacheWarning, match="Unable to cache"):
        out = big(n)
    assert out.shape == (n,) and calls == [n]
    # Server unreachable: a clear warning and a computation, never a failure.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert big(10).shape == (10,)
    assert any(issubclass(w.category, joblib_rs.CacheWarning) for w in caught)
    proxy.restore()
    # Nothing partial was published: the entry is computed again (no damage warning), whole,
    # then hit.
    calls.clear()
    time.sleep(1.1)  # the lease of the failed computation expires
    with warnings.catch_warnings():
        warnings.simplefilter("error", joblib_rs.CacheWarning)
        np.testing.assert_array_equal(big(n), np.arange(n, dtype=np.float64))
        np.testing.assert_array_equal(big(n), np.arange(n, dtype=np.float64))
    assert calls == [n]
    proxy.cut()
    proxy.listener.close()
