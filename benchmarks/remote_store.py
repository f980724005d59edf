"""Memory on a local S3 server (moto): requests per hit and miss, hit latency, throughput.

Run: ``python benchmarks/remote_store.py [--gb 1.0]`` (needs ``moto[server]`` and boto3).
Starts moto's server on 127.0.0.1, points the AWS environment at it and measures joblib-rs's
``Memory("s3://...")``. Numbers are for this machine and run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import boto3
import numpy as np
from moto.server import ThreadedMotoServer

import joblib_rs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=1.0, help="GB of results read back")
    parser.add_argument("--hits", type=int, default=200, help="hits timed")
    parser.add_argument(
        "--range-size", type=int, default=None, help="backend option range_size (bytes)"
    )
    args = parser.parse_args()

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_REGION="us-east-1",
        AWS_ALLOW_HTTP="true",
    )
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    try:
        options = {} if args.range_size is None else {"range_size": args.range_size}
        memory = joblib_rs.Memory(f"s3://{bucket}/bench", verbose=0, backend_options=options)
        backend = memory.store_backend

        @memory.cache
        def small(x: int) -> int:
            return x + 1

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

        @memory.cache
        def block(i: int, n: int) -> np.ndarray:
            return np.full(n, i, dtype=np.uint8)

        n_blocks = max(1, round(args.gb * 1e9 / 128e6))
        size = int(args.gb * 1e9 / n_blocks)
        start = time.perf_counter()
        for i in range(n_blocks):
            block(i, size)
        write = time.perf_counter() - start
        start = time.perf_counter()
        total = 0
        for i in range(n_blocks):
            total += block(i, size).nbytes
        read = time.perf_counter() - start
        print(
            f"{total / 1e9:.2f} GB in {n_blocks} results of {size / 1e6:.0f} MB: "
            f"write (compute+upload) {total / write / 1e6:.0f} MB/s, "
            f"read back {total / read / 1e6:.0f} MB/s"
        )
        memory.clear(warn=False)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
