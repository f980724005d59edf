"""A batch of tasks, as ``Parallel`` dispatches it and as it travels to a worker, and the
batch sizes learned per function.

::

    [(func, args, kwargs), ...] ──► BatchedCalls ──pickle──► worker: run under the nested
                                      │                      backend configuration
       one function, no kwargs ──► (func, [args...]) or (func, [arg, ...]) on the wire:
                                     no per-task tuples for the pickler's hook to visit

On the wire, a batch's nested backend (what ``Parallel`` calls inside its tasks use) is a
plain description when it is a builtin default (``_nested``): a worker then imports no
backend module unless a task asks for the configuration.

Auto-batching learns how many tasks of a function make a batch of the right duration;
:func:`remember_batch_size` keeps that per backend type and function (module and qualified
name) so the next call of the same function starts there (:func:`learned_batch_size`),
instead of ramping up from one task again.
"""

from __future__ import annotations

import collections
import itertools
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from joblib_rs import _nested
from joblib_rs._core import compact_tasks, take_tasks

# Workers unpickle batches: this module imports no backend at load time (see _nested).
if TYPE_CHECKING:
    from joblib_rs._backends.base import ParallelBackendBase
    from joblib_rs._backends.config import parallel_config

__all__ = ["BatchedCalls", "TaskChunk", "learned_batch_size", "remember_batch_size"]

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
            backend, self._n_jobs = backend_and_jobs
        else:
            backend, self._n_jobs = backend_and_jobs, None
        # A (kind, nesting_level) pair when it travelled as a description (_nested).
        self._nested_kind: tuple[str, int] | None = None
        self._backend: ParallelBackendBase | None = None
        if isinstance(backend, tuple):
            self._nested_kind = backend
        else:
            self._backend = backend
        self._pickle_cache = pickle_cache if pickle_cache is not None else {}

    @classmethod
    def _compact(
        cls,
        func: Callable[..., Any],
        arguments: list[Any],
        one_argument: bool,
        nested: tuple,
        reducer_callback: Callable[[], None] | None = None,
        pickle_cache: dict | None = None,
    ) -> BatchedCalls:
        batch = cls((), nested, reducer_callback, pickle_cache)
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
        from joblib_rs._backends.config import parallel_config

        if self._backend is None and self._nested_kind is not None:
            import joblib_rs._backends  # noqa: F401  (registers the builtin nested defaults)
            from joblib_rs._backends.base import NESTED_DEFAULTS

            kind, nesting_level = self._nested_kind
            self._backend = NESTED_DEFAULTS[kind](nesting_level=nesting_level)
        return parallel_config(backend=self._backend, n_jobs=self._n_jobs)

    def _run_context(self) -> Any:
        if self._backend is None and self._nested_kind is not None:
            return _nested.pending((*self._nested_kind, self._n_jobs))
        return self.nested_config()

    def __call__(self) -> list[Any]:
        with self._run_context():
            if self._items is not None:
                return [func(*args, **kwargs) for func, args, kwargs in self._items]
            func, arguments = self._func, self._arguments or []
            if self._one_argument:
                return list(map(func, arguments))  # type: ignore[arg-type]
            return [func(*args) for args in arguments]  # type: ignore[misc]

    def __reduce__(self) -> tuple[Any, ...]:
        if self._reducer_callback is not None:
            self._reducer_callback()
        nested = (_describe_nested(self._backend) or self._backend, self._n_jobs)
        if self._items is None:
            return _compact_batch, (self._func, self._arguments, self._one_argument, nested)
        compact = compact_tasks(self._items)
        if compact is not None:
            return _compact_batch, (*compact, nested)
        return BatchedCalls, (self._items, nested, None, self._pickle_cache)

    def __len__(self) -> int:
        return self._size


class TaskChunk:
    """Tasks read from the input for one dispatch, before they are cut into batches.

    Read with ``compact=True`` (:func:`_core.take_tasks`), tasks that all call one function
    without keyword arguments are kept as that function and their arguments only: the task
    tuples die as they are read instead of lingering for the garbage collector (for 100k
    tiny tasks, collecting them cost more than everything else). Otherwise ``tasks`` holds
    the ``(func, args, kwargs)`` triples.
    """

    __slots__ = ("arguments", "func", "one_argument", "tasks")

    def __init__(
        self,
        func: Callable[..., Any] | None,
        arguments: list[Any] | None,
        one_argument: bool,
        tasks: list[Any] | None,
    ) -> None:
        self.func, self.arguments, self.one_argument, self.tasks = (
            func,
            arguments,
            one_argument,
            tasks,
        )

    @classmethod
    def read(cls, iterator: Any, n: int, compact: bool) -> TaskChunk:
        """Up to ``n`` tasks of ``iterator``; raises what the iterator raises."""
        if not compact:
            return cls(None, None, False, list(itertools.islice(iterator, n)))
        is_compact, func, items, one_argument = take_tasks(iterator, n)
        if is_compact:
            return cls(func, items, one_argument, None)
        return cls(None, None, False, items)

    def __len__(self) -> int:
        return len(self.tasks if self.tasks is not None else self.arguments)  # type: ignore[arg-type]

    def first_function(self) -> Any:
        """The function of the first task."""
        return self.func if self.tasks is None else self.tasks[0][0]

    def as_tasks(self) -> list[Any]:
        """The ``(func, args, kwargs)`` triples."""
        if self.tasks is not None:
            return self.tasks
        func, arguments = self.func, self.arguments or []
        if self.one_argument:
            return [(func, (value,), {}) for value in arguments]
        return [(func, args, {}) for args in arguments]

    def extend(self, other: TaskChunk) -> None:
        """Append the tasks of ``other`` (read after these)."""
        if not len(other):
            return
        if (
            self.tasks is None
            and other.tasks is None
            and other.func is self.func
            and other.one_argument == self.one_argument
        ):
            self.arguments += other.arguments  # type: ignore[operator]
            return
        self.tasks = self.as_tasks() + other.as_tasks()
        self.func, self.arguments, self.one_argument = None, None, False

    def batch(
        self,
        start: int,
        stop: int,
        nested: tuple,
        reducer_callback: Callable[[], None] | None,
        pickle_cache: dict,
    ) -> BatchedCalls:
        """A batch of the tasks ``start:stop``."""
        if self.tasks is not None:
            return BatchedCalls(self.tasks[start:stop], nested, reducer_callback, pickle_cache)
        return BatchedCalls._compact(
            self.func,  # type: ignore[arg-type]
            self.arguments[start:stop],  # type: ignore[index]
            self.one_argument,
            nested,
            reducer_callback,
            pickle_cache,
        )


# vars() of each builtin nested default as get_nested_backend makes it, per (class, level).
_default_states: dict[tuple[Any, int], dict[str, Any]] = {}


def _describe_nested(backend: Any) -> tuple[str, int] | None:
    """``(kind, nesting_level)`` when ``backend`` is a builtin nested default exactly as
    ``get_nested_backend`` makes it (so a worker can make an equal one), else None."""
    if backend is None:
        return None
    base = sys.modules.get("joblib_rs._backends.base")
    for kind, factory in getattr(base, "NESTED_DEFAULTS", {}).items():
        if type(backend) is not factory:
            continue
        level = getattr(backend, "nesting_level", None)
        if not isinstance(level, int):
            return None
        default = _default_states.get((factory, level))
        if default is None:
            default = _default_states[(factory, level)] = vars(factory(nesting_level=level))
        return (kind, level) if vars(backend) == default else None
    return None


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
