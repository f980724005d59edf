"""Memory on a local S3 server: requests per hit and miss, hit latency, throughput.

Run: ``python benchmarks/remote_store.py [--gb 1.0] [--s3s-fs PATH]`` (needs boto3, and
``moto[server]`` unless ``--s3s-fs`` is given). Starts an S3 server on 127.0.0.1 — moto's
(a Python server: its own time dominates small requests), or with ``--s3s-fs`` the Rust
``s3s-fs`` server over a temporary folder (``cargo install s3s-fs --features binary``) —
points the AWS environment at it and measures joblib-rs's ``Memory("s3://...")``, next to a
bare ``boto3`` GET of a small object and of one large entry (the server's own cost).
Numbers are for this machine and run only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np

import joblib_rs


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server in this process."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def s3s_fs_server(binary: str) -> Iterator[str]:
    """The ``s3s-fs`` server over a temporary folder."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="s3s-fs-") as root:
        argv = [binary, "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--access-key", "test", "--secret-key", "test", root]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("s3s-fs did not start") from None
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


def bare_get_ms(client: Any, bucket: str, key: str, n: int) -> float:
    """Median time of a plain boto3 GET of ``key`` (the server's own cost), in ms."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        client.get_object(Bucket=bucket, Key=key)["Body"].read()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def small_result(x: int) -> int:
    return x + 1


def block_result(i: int, n: int) -> np.ndarray:
    return np.full(n, i, dtype=np.uint8)


def run(args: argparse.Namespace, endpoint: str) -> None:
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_REGION="us-east-1",
        AWS_ALLOW_HTTP="true",
    )
    print(f"server: {'s3s-fs' if args.s3s_fs else 'moto'} at {endpoint}")
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="probe/small", Body=b"x" * 100)
    small_ms = bare_get_ms(client, bucket, "probe/small", 50)
    print(f"bare boto3 GET of 100 bytes: median {small_ms:.2f} ms")

    options = {} if args.range_size is None else {"range_size": args.range_size}
    memory = joblib_rs.Memory(f"s3://{bucket}/bench", verbose=0, backend_options=options)
    backend = memory.store_backend

    small = memory.cache(small_result)
    small(-1)  # function code checked once per process
    before = backend.requests
    small(0)
    miss = backend.requests - before
    before = backend.requests
    small(0)
    first_hit = backend.requests - before
    times = []
    before = backend.requests
    for _ in range(args.hits):
        start = time.perf_counter()
        small(0)
        times.append(time.perf_counter() - start)
    per_hit = (backend.requests - before) / args.hits
    print(
        f"miss: {miss} requests; first hit in a process: {first_hit}; "
        f"later hits: {per_hit:.2f} requests"
    )
    print(
        f"hit latency (small arguments): median {statistics.median(times) * 1e3:.2f} ms, "
        f"p90 {sorted(times)[int(0.9 * len(times))] * 1e3:.2f} ms over {args.hits}"
    )

    block = memory.cache(block_result)
    n_blocks = max(1, round(args.gb * 1e9 / 128e6))
    size = int(args.gb * 1e9 / n_blocks)
    start = time.perf_counter()
    for i in range(n_blocks):
        block(i, size)
    write = time.perf_counter() - start
    reads = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        total = 0
        for i in range(n_blocks):
            total += block(i, size).nbytes
        reads.append(time.perf_counter() - start)
    read = statistics.median(reads)
    print(
        f"{total / 1e9:.2f} GB in {n_blocks} results of {size / 1e6:.0f} MB: "
        f"write (compute+upload) {total / write / 1e6:.0f} MB/s, "
        f"read back {total / read / 1e6:.0f} MB/s (median of {args.repeat})"
    )
    key = next(
        o["Key"]
        for o in client.list_objects_v2(Bucket=bucket)["Contents"]
        if o["Key"].endswith("entry.jrs") and o["Size"] > 1e6
    )
    seconds = bare_get_ms(client, bucket, key, 3) / 1e3
    print(f"bare boto3 GET of one {size / 1e6:.0f} MB entry: {size / seconds / 1e6:.0f} MB/s")
    memory.clear(warn=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=1.0, help="GB of results read back")
    parser.add_argument("--hits", type=int, default=200, help="hits timed")
    parser.add_argument("--repeat", type=int, default=3, help="read-backs timed")
    parser.add_argument(
        "--range-size", type=int, default=None, help="backend option range_size (bytes)"
    )
    parser.add_argument("--s3s-fs", metavar="PATH", help="run against this s3s-fs binary")
    args = parser.parse_args()
    server = s3s_fs_server(args.s3s_fs) if args.s3s_fs else moto_server()
    with server as endpoint:
        run(args, endpoint)


if __name__ == "__main__":
    main()
