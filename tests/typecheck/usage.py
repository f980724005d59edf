"""Typed use of joblib-rs's public API, checked by ``mypy --strict`` (``make typecheck``).

Not a test module (pytest collects ``test_*.py`` only) and never run: it exists so that the
type hints users see through ``py.typed`` and ``_core.pyi`` stay complete and correct. Every
annotation below is what a user would naturally write; a hole in the package's hints (an
``Any`` where a type is known, a wrong type) shows up here as a mypy error.
"""

from __future__ import annotations

import datetime
import gzip
import io
import pathlib
from collections.abc import Generator, Iterator
from typing import Any

import joblib_rs
from joblib_rs import (
    BrokenProcessPool,
    CacheWarning,
    CorruptFileError,
    JobLibCollisionWarning,
    MemorizedResult,
    Memory,
    Parallel,
    ParallelBackendBase,
    TerminatedWorkerError,
    _core,
    cpu_count,
    delayed,
    dump,
    effective_n_jobs,
    expires_after,
    hash,
    load,
    parallel_backend,
    parallel_config,
    register_compressor,
    register_joblib_backend,
    register_parallel_backend,
    register_store_backend,
    wrap_non_picklable_objects,
)
from joblib_rs._parallel_backends import ThreadingBackend
from joblib_rs._store_backends import FileSystemStoreBackend
from joblib_rs.compressor import CompressorWrapper
from joblib_rs.memory import MemorizedFunc, NotMemorizedFunc, NotMemorizedResult


def square(x: int) -> int:
    return x * x


def hashing() -> list[str]:
    digests = [hash({"a": [1, 2.0]}), hash(b"x", hash_name="md5"), hash((), "sha1")]
    digests.append(hash(object, coerce_mmap=True))
    return digests


def persistence(folder: pathlib.Path) -> Any:
    written: list[str] | None = dump({"w": [1.0]}, folder / "a.jrs", compress=3)
    dump([1, 2], str(folder / "b.jrs"), compress=("lz4", 1), protocol=5)
    dump("text", folder / "c.jrs", compress=True)
    dump(1, folder / "d.jrs", compress="zstd")
    dump({"w": [1.0]}, folder / "e.pkl", compress=("lz4", 3), format="joblib", fsync=True)
    buffer = io.BytesIO()
    assert dump(2, buffer) is None
    with gzip.open(folder / "e.gz", "wb") as stream:
        dump(3, stream)
    register_compressor("gz2", CompressorWrapper(gzip.GzipFile, prefix=b"\x1f\x8b"), force=True)
    value = load(folder / "a.jrs", mmap_mode="r")
    load(str(folder / "b.jrs"), allowed="safe")
    load(folder / "b.jrs", allowed=["builtins.list", "numpy.*"], ensure_native_byte_order=False)
    try:
        load(io.BytesIO(b"junk"))
    except CorruptFileError as error:
        message: str = str(error)
        assert message
    assert written is not None
    return value


def memory(folder: pathlib.Path) -> int:
    mem = Memory(folder, verbose=0, compress=("zstd", 3), backend_options={"fsync": True})
    Memory(str(folder), mmap_mode="r", bytes_limit="1G")
    Memory(None).cache(square)(2)

    cached: MemorizedFunc | NotMemorizedFunc = mem.cache(square)
    assert isinstance(cached, MemorizedFunc)
    n: int = cached(3)

    @mem.cache(ignore=["verbose"], verbose=0, cache_validation_callback=expires_after(hours=1))
    def slow(x: int, verbose: bool = False) -> int:
        return x + 1

    slow(1, verbose=True)
    shelved: MemorizedResult | NotMemorizedResult = cached.call_and_shelve(4)
    n += shelved.get()
    shelved.clear()
    output, metadata = cached.call(5)
    duration: float = metadata["duration"]
    in_cache: bool = cached.check_call_in_cache(5)
    cached.clear(warn=False)
    plain = Memory(None).cache(square)
    assert isinstance(plain, NotMemorizedFunc)
    n += plain(2) + mem.eval(square, 6)
    mem.reduce_size(bytes_limit="10M", items_limit=100, age_limit=datetime.timedelta(days=1))
    mem.clear(warn=False)
    register_store_backend("local2", FileSystemStoreBackend)
    warnings: list[type[Warning]] = [CacheWarning, JobLibCollisionWarning]
    assert duration >= 0 and in_cache in (True, False) and warnings
    return n + int(output)


def parallel() -> list[int]:
    results: list[int] = Parallel(n_jobs=2)(delayed(square)(i) for i in range(4))
    Parallel(n_jobs=-1, backend="threading", verbose=5, timeout=10.0, batch_size=4)(
        delayed(square)(i) for i in range(4)
    )
    lazy: Generator[int, None, None] = Parallel(return_as="generator", progress=True)(
        delayed(square)(i) for i in range(4)
    )
    unordered: Iterator[int] = Parallel(return_as="generator_unordered", prefer="threads")(
        delayed(square)(i) for i in range(4)
    )
    results += list(lazy) + sorted(unordered)
    with Parallel(n_jobs=2, max_nbytes="1M", mmap_mode="r", temp_folder="/tmp") as pool:
        results += pool(delayed(square)(i) for i in range(2))
    with parallel_config(backend="threading", n_jobs=2, inner_max_num_threads=None, verbose=0):
        results.append(effective_n_jobs())
    with parallel_config(prefer="processes", require=None, max_nbytes=None):
        pass
    with parallel_backend("loky", n_jobs=2, idle_worker_timeout=10):
        results.append(effective_n_jobs(-1))
    with parallel_backend(ThreadingBackend()):
        pass
    register_parallel_backend("threads2", ThreadingBackend, make_default=False)
    register_joblib_backend(name="joblib_rs", make_default=False)
    backend: type[ParallelBackendBase] = ThreadingBackend
    errors: list[type[Exception]] = [TerminatedWorkerError, BrokenProcessPool]
    assert backend and errors
    results.append(cpu_count() + cpu_count(only_physical_cores=True))
    return results


def wrapped() -> int:
    add_one = wrap_non_picklable_objects(square)
    result: int = add_one(1)
    return result


def core() -> tuple[str, int]:
    version: str = joblib_rs.__version__ + _core.__version__
    digest: str = _core.hash([1], "xxh3", False)
    codecs: list[str] = _core.CODECS
    magic: bytes = _core.CONTAINER_MAGIC
    blob: bytes = _core.compress_stream("zstd", 3, b"abc")
    assert _core.decompress_stream("zstd", blob) == b"abc"
    entries: list[tuple[str, int, float]] = _core.store_scan("/nonexistent")
    lock = _core.store_lock("/tmp/entry", 1.0)
    if lock is not None:
        held: bool = lock.held
        lock.release()
        assert held
    assert codecs and magic and entries is not None
    return version + digest, _core.HASH_FORMAT_VERSION
