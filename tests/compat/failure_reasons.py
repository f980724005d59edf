"""Why a test of joblib's suite that passes on joblib fails on joblib-rs.

:func:`classify` maps a failure (test file, test id, error text) to a :class:`Reason`: a
deliberate difference (with the line of ``docs/differences.md`` that documents it), a name that
joblib-rs lacks, or a bug; each with the owner of the code concerned. The rules are tried in
order; unmatched failures are grouped by their error line as "unclassified".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Owner of each joblib module (who would fix a failure there).
OWNERS: dict[str, str] = {
    "parallel": "parallel-engine engineer",
    "_parallel_backends": "parallel-engine engineer",
    "pool": "parallel-engine engineer",
    "executor": "parallel-engine engineer",
    "externals": "parallel-engine engineer",
    "_dask": "parallel-engine engineer",
    "_memmapping_reducer": "parallel-engine engineer (pool reducers)",
    "_cloudpickle_wrapper": "parallel-engine engineer",
    "exceptions": "parallel-engine engineer",
    "memory": "memory/store engineer",
    "_store_backends": "memory/store engineer",
    "numpy_pickle": "lead (load) / issue 17 (dump)",
    "numpy_pickle_utils": "lead (load) / issue 17 (dump)",
    "numpy_pickle_compat": "lead (load) / issue 17 (dump)",
    "compressor": "lead (load) / issue 17 (dump)",
    "hashing": "importpaths (this branch)",
    "func_inspect": "importpaths (this branch)",
    "disk": "importpaths (this branch)",
    "logger": "importpaths (this branch)",
    "backports": "importpaths (this branch)",
    "_utils": "importpaths (this branch)",
    "_multiprocessing_helpers": "importpaths (this branch)",
}

#: Owner of each test file when the error text does not name a module.
FILE_OWNERS: dict[str, str] = {
    "test_parallel": "parallel-engine engineer",
    "test_memmapping": "parallel-engine engineer",
    "test_dask": "parallel-engine engineer",
    "test_config": "parallel-engine engineer",
    "test_cloudpickle_wrapper": "parallel-engine engineer",
    "test_missing_multiprocessing": "parallel-engine engineer",
    "test_memory": "memory/store engineer",
    "test_memory_async": "memory/store engineer",
    "test_store_backends": "memory/store engineer",
    "test_numpy_pickle": "lead (load) / issue 17 (dump)",
    "test_numpy_pickle_compat": "lead (load) / issue 17 (dump)",
    "test_numpy_pickle_utils": "lead (load) / issue 17 (dump)",
}


@dataclass(frozen=True)
class Reason:
    """One cause of failure."""

    key: str
    title: str
    kind: str  # "difference", "missing", "bug" or "unclassified"
    owner: str
    detail: str = ""


@dataclass(frozen=True)
class Rule:
    """A pattern over ``"<file>::<test id>\\n<error text>"`` and the reason it means."""

    pattern: str
    reason: Reason


def _owner_of(module: str) -> str:
    top = module.split(".")[0]
    return OWNERS.get(top, "unassigned")


_DEFAULT_HASH = Reason(
    "hash-default",
    "`hash(obj)` defaults to xxh3 over joblib-rs's canonical encoding, not joblib's md5 "
    "pickle digest",
    "difference",
    "importpaths (this branch)",
    'differences.md, Hashing: "The default `hash` values differ from joblib\'s" (C and '
    "Fortran copies hash alike, lambdas hash, values are not joblib's; "
    "`hash_name='md5'` gives joblib's values).",
)

_MEMORY_LAYOUT = Reason(
    "memory-layout",
    "the `Memory` folder is `<location>/joblib_rs` and entries store `output.jrs`; tests look "
    "for joblib's paths (or damage `output.pkl`, which joblib-rs does not read)",
    "difference",
    "memory/store engineer",
    'differences.md, Files and caches: "The `Memory` folder is `<location>/joblib_rs`".',
)

#: Known causes, most specific first.
RULES: list[Rule] = [
    Rule(
        r"Non-zero return code: -15",
        Reason(
            "subprocess-timeout",
            "a 5-second subprocess (`python -c 'import joblib ...'`) was killed: importing "
            "takes 6-8 s for joblib and joblib-rs alike on this loaded 2-core machine",
            "environment",
            "none (flaky under load)",
        ),
    ),
    Rule(
        r"^test_hashing::.*::(test_hashes_stay_the_same|test_hash_numpy_noncontiguous|"
        r"test_hashes_are_different_between_c_and_fortran|test_hashing_pickling_error)",
        _DEFAULT_HASH,
    ),
    Rule(
        r"^test_hashing::.*::test_hash_numpy_performance",
        Reason(
            "hash-speed",
            "joblib's speed test expects `hash(array)` to cost about what md5 costs; the "
            "default xxh3 hash is much faster",
            "difference",
            "importpaths (this branch)",
            "differences.md, Hashing: the default is xxh3 (timing assertion, not behaviour).",
        ),
    ),
    Rule(
        r"^test_memory(_async)?::.*(check_mmap_mode|recomputes_after_an_error_while_loading)",
        _MEMORY_LAYOUT,
    ),
    Rule(
        r"^test_memory::.*test_memory_reduce_size_bytes_limit",
        Reason(
            "memory-entry-size",
            "entries are joblib-rs files (`output.jrs`, a checksummed container): a 1000-byte "
            "result takes ~1.5 kB on disk, so a `bytes_limit` tuned to joblib's entry size "
            "keeps one entry fewer",
            "difference",
            "memory/store engineer",
            'differences.md, Files and caches: "New file format for `dump`" and "The '
            '`Memory` folder is `<location>/joblib_rs`" (entries store `output.jrs`).',
        ),
    ),
    Rule(
        r"^test_memory::.*test_memory_clear\b",
        Reason(
            "store-marker",
            "`clear()` keeps the store's `.joblib-rs-store` marker (the folder stays a known "
            "joblib-rs cache); joblib leaves the location empty",
            "difference",
            "memory/store engineer",
            'differences.md, Files and caches: "`clear()` keeps the marker file".',
        ),
    ),
    Rule(
        r"^test_store_backends::.*test_store_cached_func_code_is_not_written_in_place",
        Reason(
            "store-atomic-writer",
            "`FileSystemStoreBackend` writes `func_code.py` and entries with joblib-rs's "
            "atomic writer (temporary file + rename, in Rust), not through `_open_item`: the "
            "test's failing `_open_item` is never called (the property it protects holds)",
            "difference",
            "memory/store engineer",
            'differences.md, Files and caches: "The store writes through its atomic writer".',
        ),
    ),
    Rule(
        r"^test_memmapping::.*\[multiprocessing",
        Reason(
            "memmapping-pool",
            "`joblib.pool.MemmappingPool` has its own array reducer and folder "
            "(`pool._ArrayToMemmap`), not `_memmapping_reducer.get_memmapping_reducers` / "
            "`TemporaryResourcesManager`: it makes a sub-folder of `temp_folder` up front, "
            "copies memmaps with an offset or a view, has no result reducer",
            "bug",
            "owner of `python/joblib_rs/pool.py` (ray backend work)",
            "The executor side (`joblib.executor`, the `[loky]` cases) passes; `MemmappingPool` "
            "can build on the same reducers.",
        ),
    ),
    Rule(
        r"^test_memmapping::.*test_memmap_returned_as_regular_array",
        Reason(
            "shared-results",
            "results of at least `max_nbytes` come back memory-mapped (copy-on-write, from the "
            "call's temporary folder) and a returned temporary memmap stays a memmap; joblib "
            "returns in-memory copies",
            "difference",
            "parallel-engine engineer",
            'differences.md, Parallel: "Large results come back memory-mapped".',
        ),
    ),
    Rule(
        r"^test_parallel::.*test_multiple_generator_call_separated_gc\[.*loky-True\]",
        Reason(
            "generator-own-pool",
            "two `return_as='generator'` calls alive at once each get their own pool; joblib "
            "raises `RuntimeError` for the second",
            "difference",
            "parallel-engine engineer",
            "differences.md, Parallel: \"two `return_as='generator'` calls alive at once each "
            'get their own pool (joblib raises)".',
        ),
    ),
    Rule(
        r"^test_parallel::.*test_parallel_unordered_generator_returns_fastest_first\[loky",
        Reason(
            "pool-prefetch",
            "a busy worker of the Rust pool may hold one prefetched task, which then waits "
            "for the long task ahead of it; joblib's loky hands tasks out from one shared queue",
            "difference",
            "parallel-engine engineer",
            'differences.md, Parallel: "A busy worker holds one prefetched task".',
        ),
    ),
    Rule(
        r"^test_parallel::.*test_batching_auto_threading",
        Reason(
            "threading-batches",
            "the threading backend batches tiny tasks for dispatch (joblib never batches "
            "threads); tasks still start one by one",
            "difference",
            "parallel-engine engineer",
            'differences.md, Parallel: "The threading backend batches tiny tasks for dispatch".',
        ),
    ),
    Rule(
        r"^test_dask::.*test_joblib_warning_inside_dask_daemonic_worker\[multiprocessing",
        Reason(
            "dask-daemon-message-mp",
            "the multiprocessing backend's refusal inside a daemonic dask worker does not "
            "name `distributed.worker.daemon` (the loky backend's does: "
            "`_backends.base.DASK_DAEMON_REFUSAL`, `inside_dask_worker()`)",
            "bug",
            "owner of `python/joblib_rs/_backends/multiprocessing_pool.py` (ray backend work)",
        ),
    ),
    Rule(
        r"^test_dask::.*test_auto_scatter",
        Reason(
            "dask-scatter-threshold",
            "the `'dask'` backend scatters arguments from `max_nbytes` (1 MiB by default) on, "
            "not from 1 kB: the test's 10 kB arrays travel inside the tasks",
            "difference",
            "parallel-engine engineer",
            "differences.md, Parallel: \"'dask' backend: arguments are scattered to the cluster "
            'from `max_nbytes`".',
        ),
    ),
    Rule(
        r"^test_dask::.*test_manual_scatter",
        Reason(
            "dask-scatter-once",
            "`scatter=[...]` objects are serialized once for all workers; joblib's count "
            "equals `client.scatter(obj, broadcast=True)` per object (more serializations)",
            "difference",
            "parallel-engine engineer",
            'differences.md, Parallel: "`scatter=[...]` serializes each object once".',
        ),
    ),
    Rule(
        r"^test_dask::.*test_simple.*thread\(s\) were leaked",
        Reason(
            "dask-callback-thread",
            "results are collected through dask futures' done-callbacks, which start "
            "distributed's callback thread once per process; the first test doing so sees it "
            "as a leaked thread (joblib collects in the client's event loop)",
            "difference",
            "parallel-engine engineer",
            'differences.md, Parallel: "dask results arrive through future callbacks".',
        ),
    ),
    Rule(
        r"^test_memory(_async)?::.*(joblib_rs/joblib|/joblib_rs/|output\.pkl|Created by joblib)",
        _MEMORY_LAYOUT,
    ),
    Rule(
        r"^test_memory(_async)?::.*(test_func_dir|test_call_and_shelve_lazily_load_stored_result|"
        r"test__get_items|test_memory_creates_gitignore|"
        r"test_parallel_call_cached_function_defined_in_jupyter)",
        _MEMORY_LAYOUT,
    ),
    Rule(
        r"'not-compressed' == '|^test_numpy_pickle::.*(test_load_externally_decompressed_files|"
        r"test_file_handle_persistence_compressed_mmap|test_memmap_alignment_padding|"
        r"test_compress_mmap_mode_warning)",
        Reason(
            "dump-format",
            "`dump` writes joblib-rs's container, not joblib's pickle layout: tests reading "
            "the file themselves (compressor magic bytes, external gunzip, array alignment) "
            "do not find joblib's format",
            "difference",
            "issue 17 (dump in joblib's format) / lead",
            'differences.md, Files and caches: "New file format for `dump`". '
            "`joblib_rs.numpy_pickle.NumpyPickler` already writes joblib's format.",
        ),
    ),
    Rule(
        r"^test_numpy_pickle::.*test_lz4_compression",
        Reason(
            "lz4-native",
            "the registered `'lz4'` compressor is the Rust codec (`fileobj_factory` is None, "
            "not `lz4.frame.LZ4FrameFile`)",
            "difference",
            "lead",
            'differences.md, Files and caches: "lz4 has one level" (built-in lz4).',
        ),
    ),
    Rule(
        r"first byte b''\)",
        Reason(
            "load-fileobj-position",
            "`load(fileobj)` reads from the file object's current position; joblib happens "
            "to rewind a file object without `peek()` (e.g. `BytesIO` right after `dump`)",
            "bug",
            "lead (load)",
        ),
    ),
    Rule(
        r"^test_numpy_pickle::.*test_joblib_pickle_across_python_versions",
        Reason(
            "load-old-files",
            "`load` refuses joblib < 0.10 files (arrays in separate files) and does not give "
            "joblib's message for Python 2 pickles",
            "missing",
            "lead (load)",
            "`joblib_rs.numpy_pickle.NumpyUnpickler` / `numpy_pickle_compat` read the old "
            "layout: `load` can route such files to them.",
        ),
    ),
    Rule(
        r"^test_numpy_pickle::.*test_object_array_inner_stream_uses_caller_find_class",
        Reason(
            "dump-format",
            "`dump` writes joblib-rs's container, not joblib's pickle layout: tests reading "
            "the file themselves (compressor magic bytes, external gunzip, array alignment) "
            "do not find joblib's format",
            "difference",
            "issue 17 (dump in joblib's format) / lead",
            'differences.md, Files and caches: "New file format for `dump`". '
            "`joblib_rs.numpy_pickle.NumpyPickler` already writes joblib's format.",
        ),
    ),
]


def classify(test_file: str, test_id: str, message: str) -> Reason:
    """The reason a test that passes on joblib fails on joblib-rs."""
    text = f"{test_file}::{test_id}\n{message}"
    for rule in RULES:
        if re.search(rule.pattern, text, re.S):
            return rule.reason
    missing_module = re.search(r"No module named '(joblib\.[\w.]+)'", message)
    if missing_module:
        name = missing_module.group(1)
        return Reason(
            f"module:{name}",
            f"module `{name}` does not exist",
            "missing",
            _owner_of(name.split(".", 1)[1]),
        )
    missing_name = re.search(
        r"cannot import name '(\w+)' from '(joblib(?:_rs)?)\.?([\w.]*)'", message
    )
    if missing_name:
        attr, module = missing_name.group(1), missing_name.group(3) or "__init__"
        return Reason(
            f"name:{module}.{attr}",
            f"`joblib.{module}.{attr}` does not exist",
            "missing",
            _owner_of(module),
        )
    missing_attr = re.search(
        r"module '(joblib(?:_rs)?)\.?([\w.]*)' has no attribute '(\w+)'", message
    )
    if missing_attr:
        module, attr = missing_attr.group(2) or "__init__", missing_attr.group(3)
        return Reason(
            f"name:{module}.{attr}",
            f"`joblib.{module}.{attr}` does not exist",
            "missing",
            _owner_of(module),
        )
    first = next((ln.strip() for ln in message.splitlines() if ln.strip()), "no error text")
    first = re.sub(r"0x[0-9a-f]+|/tmp/\S+|\d{3,}", "…", first)[:120]
    return Reason(
        f"other:{test_file}:{first}",
        f"unclassified failure in `{test_file}`: {first}",
        "unclassified",
        FILE_OWNERS.get(test_file, "importpaths (this branch)"),
    )
