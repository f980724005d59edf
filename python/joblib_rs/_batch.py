"""A batch of tasks, as ``Parallel`` dispatches it and as it travels to a worker, and the
batch sizes learned per function.

::

    [(func, args, kwargs), ...] ──► BatchedCalls ──pickle──► worker: run under the nested
                                      │                      backend configuration
       one function, no kwargs ──► (func, [args...]) or (func, [arg, ...]) on the wire:
                                     no per-task tuples for the pickler's hook to visit

Auto-batching learns how many tasks of a function make a batch of the right duration;
:func:`remember_batch_size` keeps that per backend type and function (module and qualified
name) so the next call of the same function starts there (:func:`learned_batch_size`),
instead of ramping up from one task again.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable
from typing import Any

from joblib_rs._backends.base import ParallelBackendBase
from joblib_rs._backends.config import parallel_config
from joblib_rs._core import compact_tasks

__all__ = ["BatchedCalls", "learned_batch_size", "remember_batch_size"]

Task = tuple[Callable[..., Any], tuple, dict]


class BatchedCalls:
    """A list of ``(func, args, kwargs)`` run under the nested backend config.

    ``splittable`` (set for auto-sized batches) lets a thread backend schedule its tasks one
    by one (see ``_threads``); otherwise the batch runs as one unit, as in joblib. A batch
    whose tasks all call one function without keyword arguments travels as that function
    and the list of arguments, and runs from that form in the worker (``items`` is then
    built only if asked for).
    """

    splittable = False

    def __init__(
        self,
        iterator_slice: Iterable[Task],
        backend_and_jobs: tuple[ParallelBackendBase, int | None] | ParallelBackendBase,
        reducer_callback: Callable[[], None] | None = None,
        pickle_cache: dict | None = None,
    ) -> None:
        self._items: list[Task] | None = list(iterator_slice)
        self._size = len(self._items)
        # The compact form: one function, and its arguments (single values or tuples).
        self._func: Callable[..., Any] | None = None
        self._arguments: list[Any] | None = None
        self._one_argument = False
        self._reducer_callback = reducer_callback
        if isinstance(backend_and_jobs, tuple):
            self._backend, self._n_jobs = backend_and_jobs
        else:
            self._backend, self._n_jobs = backend_and_jobs, None
        self._pickle_cache = pickle_cache if pickle_cache is not None else {}

    @classmethod
    def _compact(
        cls, func: Callable[..., Any], arguments: list[Any], one_argument: bool, nested: tuple
    ) -> BatchedCalls:
        batch = cls((), nested)
        batch._items = None
        batch._size = len(arguments)
        batch._func, batch._arguments, batch._one_argument = func, arguments, one_argument
        return batch

    @property
    def items(self) -> list[Task]:
        """The batch's ``(func, args, kwargs)`` triples."""
        if self._items is None:
            func, arguments = self._func, self._arguments or []
            if self._one_argument:
                self._items = [(func, (value,), {}) for value in arguments]  # type: ignore[misc]
            else:
                self._items = [(func, args, {}) for args in arguments]  # type: ignore[misc]
        return self._items

    def nested_config(self) -> parallel_config:
        """The configuration its tasks run under (what nested ``Parallel`` calls use)."""
        return parallel_config(backend=self._backend, n_jobs=self._n_jobs)

    def __call__(self) -> list[Any]:
        with self.nested_config():
            if self._items is not None:
                return [func(*args, **kwargs) for func, args, kwargs in self._items]
            func, arguments = self._func, self._arguments or []
            if self._one_argument:
                return list(map(func, arguments))  # type: ignore[arg-type]
            return [func(*args) for args in arguments]  # type: ignore[misc]

    def __reduce__(self) -> tuple[Any, ...]:
        if self._reducer_callback is not None:
            self._reducer_callback()
        nested = (self._backend, self._n_jobs)
        if self._items is None:
            return _compact_batch, (self._func, self._arguments, self._one_argument, nested)
        compact = compact_tasks(self._items)
        if compact is not None:
            return _compact_batch, (*compact, nested)
        return BatchedCalls, (self._items, nested, None, self._pickle_cache)

    def __len__(self) -> int:
        return self._size


def _compact_batch(
    func: Callable[..., Any], arguments: list[Any], one_argument: bool, nested: tuple
) -> BatchedCalls:
    return BatchedCalls._compact(func, arguments, one_argument, nested)


# Learned sizes, most recently used last; bounded so a long session does not grow it.
_MAX_LEARNED = 256
_learned: collections.OrderedDict[tuple, int] = collections.OrderedDict()
_learned_lock = threading.Lock()


def _key(backend: Any, func: Any) -> tuple:
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return type(backend), getattr(func, "__module__", None), name


def learned_batch_size(backend: Any, func: Any) -> int | None:
    """The batch size an earlier call of ``func`` on this kind of backend ended with."""
    with _learned_lock:
        return _learned.get(_key(backend, func))


def remember_batch_size(backend: Any, func: Any, size: int) -> None:
    """Keep ``size`` as the starting batch size of the next call of ``func``."""
    key = _key(backend, func)
    with _learned_lock:
        _learned[key] = size
        _learned.move_to_end(key)
        while len(_learned) > _MAX_LEARNED:
            _learned.popitem(last=False)
