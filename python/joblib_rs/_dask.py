"""joblib's import path of the ``'dask'`` backend (``joblib._dask``); the backend lives in
``joblib_rs._backends.dask``. Also joblib's ``Batch``: the callable a batch of calls runs as
on a dask worker."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dask.sizeof import sizeof
from distributed.utils import thread_state

from joblib_rs._backends.base import AutoBatchingMixin, ParallelBackendBase
from joblib_rs._backends.config import parallel_config
from joblib_rs._backends.dask import DaskDistributedBackend, _batch_name, _weakrefable

__all__ = [
    "AutoBatchingMixin",
    "Batch",
    "DaskDistributedBackend",
    "ParallelBackendBase",
    "is_weakrefable",
    "parallel_config",
    "sizeof",
    "thread_state",
]

#: joblib's name: whether ``obj`` can be weakly referenced (only those are scattered).
is_weakrefable = _weakrefable

Call = tuple[Callable[..., Any], Sequence[Any], dict[str, Any]]


class Batch:
    """A batch of ``(func, args, kwargs)`` calls run as one dask task.

    ``repr`` is the task's name on the dask dashboard: ``batch_of_<func>_<n>_calls``, with a
    ``mixed_`` prefix when the calls use several functions. Calling it runs the calls given
    then (nested ``Parallel`` calls use the ``'dask'`` backend) and returns their results.

    Parameters
    ----------
    tasks : sequence of (callable, args, kwargs)
        The calls the name describes.
    """

    def __init__(self, tasks: Sequence[Call]) -> None:
        tasks = list(tasks)
        self._name = _batch_name(tasks) if tasks else "batch_of_0_calls"

    def __call__(self, tasks: Sequence[Call] | None = None) -> list[Any]:
        with parallel_config(backend=DaskDistributedBackend(_lazy_client=True), n_jobs=-1):
            return [func(*args, **kwargs) for func, args, kwargs in tasks or ()]

    def __repr__(self) -> str:
        return self._name
