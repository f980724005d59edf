"""``joblib.externals.loky``: loky's public names on joblib-rs's Rust process pool.

``get_reusable_executor`` returns a :class:`concurrent.futures.Executor` whose workers are
the ones ``Parallel`` (backend ``'loky'``) reuses; ``set_loky_pickler`` chooses the pickler
tasks travel with, as ``LOKY_PICKLER`` does.
"""

from __future__ import annotations

import os
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    Executor,
    Future,
    TimeoutError,
    as_completed,
    wait,
)

from joblib_rs._cloudpickle_wrapper import wrap_non_picklable_objects
from joblib_rs._cpu import cpu_count
from joblib_rs.externals.loky.process_executor import (
    BrokenProcessPool,
    ShutdownExecutorError,
    TerminatedWorkerError,
)
from joblib_rs.externals.loky.reusable_executor import (
    ProcessPoolExecutor,
    get_reusable_executor,
)

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenProcessPool",
    "CancelledError",
    "Executor",
    "Future",
    "ProcessPoolExecutor",
    "ShutdownExecutorError",
    "TerminatedWorkerError",
    "TimeoutError",
    "as_completed",
    "cpu_count",
    "get_reusable_executor",
    "set_loky_pickler",
    "wait",
    "wrap_non_picklable_objects",
]

__version__ = "3.5.0"


def set_loky_pickler(loky_pickler: str | None = None) -> None:
    """Choose the pickler tasks travel with: a module name with a ``Pickler`` class
    (``"pickle"``, ``"cloudpickle"``...), or None for the default (cloudpickle where needed).
    The same as setting ``LOKY_PICKLER``."""
    if loky_pickler is None or loky_pickler == "":
        os.environ.pop("LOKY_PICKLER", None)
        return
    if not isinstance(loky_pickler, str):
        raise TypeError(f"loky_pickler must be a module name or None, got {loky_pickler!r}")
    __import__(loky_pickler)  # a clear ImportError now rather than at the next task
    os.environ["LOKY_PICKLER"] = loky_pickler
