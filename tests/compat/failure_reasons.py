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
    "_memmapping_reducer": "importpaths (this branch) / parallel-engine engineer",
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


#: Known causes, most specific first.
RULES: list[Rule] = [
    Rule(
        r"No module named 'joblib\.externals",
        Reason(
            "loky",
            "`joblib.externals.loky` / `joblib.externals.cloudpickle` do not exist",
            "missing",
            "parallel-engine engineer",
            "`get_reusable_executor` needs a real Executor on the Rust process pool (engine "
            "redesign).",
        ),
    ),
    Rule(
        r"No module named 'joblib\.pool'",
        Reason(
            "pool",
            "`joblib.pool` (`MemmappingPool`, `PicklingPool`) does not exist",
            "missing",
            "parallel-engine engineer",
        ),
    ),
]


def classify(test_file: str, test_id: str, message: str) -> Reason:
    """The reason a test that passes on joblib fails on joblib-rs."""
    text = f"{test_file}::{test_id}\n{message}"
    for rule in RULES:
        if re.search(rule.pattern, text):
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
