"""Helpers for embarrassingly parallel code: ``Parallel``, ``delayed`` and their configuration.

How a call flows
----------------
``Parallel(...)(iterable)`` picks a backend (explicit argument, else the active
:class:`parallel_config`, else the default), configures it, then dispatches the first
``pre_dispatch`` tasks in batches. Each batch carries a :class:`BatchCompletionCallBack`; when
the backend reports the batch done, the callback records the outcome and dispatches the next
batch, consuming the task iterator lazily. The caller's thread only waits on a condition
variable that every outcome notifies: there is no polling loop. With ``return_as='generator'``
dispatching also waits for the consumer, so completed-but-unread results stay bounded.

The first error (or ``timeout``, or ``Ctrl-C``) aborts the call: pending batches are dropped,
the backend cancels what it can, and the exception is re-raised in the caller with its own type
and the worker-side traceback.
"""

from __future__ import annotations

import ast
import collections
import functools
import itertools
import logging
import multiprocessing as mp  # noqa: F401 - joblib.parallel.mp is imported by third parties
import operator
import os
import pprint
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Generator, Iterable
from math import floor, log10, sqrt
from numbers import Integral
from typing import Any

from joblib_rs._cpu import cpu_count
from joblib_rs._interrupts import raise_if_interrupted, watch_interrupts
from joblib_rs._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    LokyBackend,
    MultiprocessingBackend,
    ParallelBackendBase,
    SequentialBackend,
    ThreadingBackend,
    TimeoutError,
    default_mp_context,
)
from joblib_rs._progress import make_progress_bar

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "EXTERNAL_BACKENDS",
    "AutoBatchingMixin",
    "Parallel",
    "ParallelBackendBase",
    "TimeoutError",
    "cpu_count",
    "delayed",
    "effective_n_jobs",
    "parallel_backend",
    "parallel_config",
    "register_parallel_backend",
]

BACKENDS: dict[str, Callable[..., ParallelBackendBase]] = {
    "threading": ThreadingBackend,
    "sequential": SequentialBackend,
    "multiprocessing": MultiprocessingBackend,
    # joblib's name for its default process backend: here the Rust process pool.
    "loky": LokyBackend,
}
DEFAULT_BACKEND = "loky"
DEFAULT_THREAD_BACKEND = "threading"
DEFAULT_PROCESS_BACKEND = "loky"

# Per-thread active configuration, set by parallel_config / parallel_backend.
_backend = threading.local()


class DaskNotInstalledError(ImportError, ValueError):
    """``backend='dask'`` without dask installed: a ``ValueError`` as joblib raises, and an
    ``ImportError`` as the missing package suggests."""


def _register_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise DaskNotInstalledError(
            "You are trying to use 'dask' as a joblib parallel backend but dask is not "
            "installed. Please install dask to fix this error."
        ) from None
    from joblib_rs._dask import DaskDistributedBackend

    register_parallel_backend("dask", DaskDistributedBackend)


# Backends registered on first use, by name: a package adds its own register function here.
EXTERNAL_BACKENDS: dict[str, Callable[[], None]] = {"dask": _register_dask}


class _Sentinel:
    """Marks a parameter left at its default, so a context manager may override it."""

    __slots__ = ("default_value",)

    def __init__(self, default_value: Any) -> None:
        self.default_value = default_value

    def __repr__(self) -> str:
        return f"default({self.default_value!r})"


default_parallel_config: dict[str, Any] = {
    "backend": _Sentinel(default_value=None),
    "n_jobs": _Sentinel(default_value=None),
    "verbose": _Sentinel(default_value=0),
    "temp_folder": _Sentinel(default_value=None),
    "max_nbytes": _Sentinel(default_value="1M"),
    "mmap_mode": _Sentinel(default_value="r"),
    "prefer": _Sentinel(default_value=None),
    "require": _Sentinel(default_value=None),
}

VALID_BACKEND_HINTS = ("processes", "threads", None)
VALID_BACKEND_CONSTRAINTS = ("sharedmem", None)
VALID_RETURN_AS = ("list", "generator", "generator_unordered")
VALID_MMAP_MODES = (None, "r+", "r", "w+", "c")


def _get_config_param(param: Any, context_config: dict[str, Any], key: str) -> Any:
    """Explicit argument, else the context's value, else the default."""
    if param is not default_parallel_config[key]:
        return param
    if context_config[key] is not default_parallel_config[key]:
        return context_config[key]
    return param.default_value


def _active_config() -> dict[str, Any]:
    return getattr(_backend, "config", default_parallel_config)


def get_active_backend(
    prefer: Any = default_parallel_config["prefer"],
    require: Any = default_parallel_config["require"],
    verbose: Any = default_parallel_config["verbose"],
) -> tuple[ParallelBackendBase, int | None]:
    """Return the backend instance and ``n_jobs`` a ``Parallel()`` would use here."""
    backend, config = _get_active_backend(prefer, require, verbose)
    n_jobs = _get_config_param(default_parallel_config["n_jobs"], config, "n_jobs")
    return backend, n_jobs


def _get_active_backend(
    prefer: Any = default_parallel_config["prefer"],
    require: Any = default_parallel_config["require"],
    verbose: Any = default_parallel_config["verbose"],
) -> tuple[ParallelBackendBase, dict[str, Any]]:
    config = _active_config()
    backend = _get_config_param(default_parallel_config["backend"], config, "backend")
    prefer = _get_config_param(prefer, config, "prefer")
    require = _get_config_param(require, config, "require")
    verbose = _get_config_param(verbose, config, "verbose")

    if prefer not in VALID_BACKEND_HINTS:
        raise ValueError(
            f"prefer={prefer} is not a valid backend hint, expected one of {VALID_BACKEND_HINTS}"
        )
    if require not in VALID_BACKEND_CONSTRAINTS:
        raise ValueError(
            f"require={require} is not a valid backend constraint, "
            f"expected one of {VALID_BACKEND_CONSTRAINTS}"
        )
    if prefer == "processes" and require == "sharedmem":
        raise ValueError(
            "prefer == 'processes' and require == 'sharedmem' are inconsistent settings"
        )

    explicit = backend is not None
    if not explicit:
        backend = BACKENDS[DEFAULT_BACKEND](nesting_level=0)

    nesting_level = backend.nesting_level
    uses_threads = getattr(backend, "uses_threads", False)
    supports_sharedmem = getattr(backend, "supports_sharedmem", False)
    force_threads = (require == "sharedmem" and not supports_sharedmem) or (
        not explicit and prefer == "threads" and not uses_threads
    )
    if force_threads:
        thread_backend = BACKENDS[DEFAULT_THREAD_BACKEND](nesting_level=nesting_level)
        if verbose >= 10 and explicit:
            print(
                f"Using {type(thread_backend).__name__} as joblib backend instead of "
                f"{type(backend).__name__} as the latter does not provide shared memory "
                "semantics."
            )
        # A forced thread backend does not inherit the context's worker count.
        thread_config = dict(config)
        thread_config["n_jobs"] = 1
        return thread_backend, thread_config
    if not explicit and prefer == "processes" and uses_threads:
        return BACKENDS[DEFAULT_PROCESS_BACKEND](nesting_level=nesting_level), dict(config)
    return backend, config


def _make_backend(name: str, **backend_params: Any) -> ParallelBackendBase:
    if name not in BACKENDS and name in EXTERNAL_BACKENDS:
        EXTERNAL_BACKENDS[name]()
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ValueError(f"Invalid backend: {name}, expected one of {sorted(BACKENDS)}") from None
    return factory(**backend_params)


class parallel_config:
    """Set the default backend or configuration of :class:`Parallel`.

    Use it as a context manager (the setting holds inside the ``with`` block, in this
    thread) or call it to set the configuration until ``unregister()`` is called. Arguments
    left out keep the value of the enclosing configuration; ``Parallel`` arguments given
    explicitly always win.

    Parameters
    ----------
    backend : str or ParallelBackendBase or None, default=None
        A registered backend name (``'loky'``, ``'threading'``, ``'multiprocessing'``,
        ``'sequential'`` or one added with :func:`register_parallel_backend`) or an instance.
    n_jobs : int or None
        Default number of workers; see :class:`Parallel`.
    verbose : int
        Default verbosity.
    temp_folder : str or None
        Default folder for memmapped arrays of process backends.
    max_nbytes : int or str or None
        Default size threshold for memmapping arrays, e.g. ``'1M'``.
    mmap_mode : {None, 'r+', 'r', 'w+', 'c'}
        Default memmap mode of arrays passed to workers.
    prefer : {'processes', 'threads'} or None
        Soft hint on the kind of backend when none is chosen explicitly.
    require : {'sharedmem'} or None
        Hard constraint: ``'sharedmem'`` forces a thread-based backend.
    inner_max_num_threads : int or None, default=None
        Limit of threads of BLAS/OpenMP pools in worker processes (backends with
        ``supports_inner_max_num_threads``, i.e. ``'loky'``).
    **backend_params : dict
        Passed to the backend's constructor when ``backend`` is a name.

    Examples
    --------
    >>> from operator import neg
    >>> from joblib_rs import Parallel, delayed, parallel_config
    >>> with parallel_config(backend='threading'):
    ...     print(Parallel()(delayed(neg)(i + 1) for i in range(5)))
    [-1, -2, -3, -4, -5]
    """

    def __init__(
        self,
        backend: str | ParallelBackendBase | None = default_parallel_config["backend"],
        *,
        n_jobs: int | None = default_parallel_config["n_jobs"],
        verbose: int = default_parallel_config["verbose"],
        temp_folder: str | None = default_parallel_config["temp_folder"],
        max_nbytes: int | str | None = default_parallel_config["max_nbytes"],
        mmap_mode: str | None = default_parallel_config["mmap_mode"],
        prefer: str | None = default_parallel_config["prefer"],
        require: str | None = default_parallel_config["require"],
        inner_max_num_threads: int | None = None,
        **backend_params: Any,
    ) -> None:
        self.old_parallel_config = _active_config()
        backend = self._check_backend(backend, inner_max_num_threads, **backend_params)
        new_config = {
            "n_jobs": n_jobs,
            "verbose": verbose,
            "temp_folder": temp_folder,
            "max_nbytes": max_nbytes,
            "mmap_mode": mmap_mode,
            "prefer": prefer,
            "require": require,
            "backend": backend,
        }
        self.parallel_config = dict(self.old_parallel_config)
        self.parallel_config.update(
            {k: v for k, v in new_config.items() if not isinstance(v, _Sentinel)}
        )
        _backend.config = self.parallel_config

    def _check_backend(
        self, backend: Any, inner_max_num_threads: int | None, **backend_params: Any
    ) -> Any:
        if backend is default_parallel_config["backend"]:
            if inner_max_num_threads is not None or backend_params:
                raise ValueError(
                    "inner_max_num_threads and other constructor parameters backend_params "
                    "are only supported when backend is not None."
                )
            return backend
        if isinstance(backend, str):
            backend = _make_backend(backend, **backend_params)
        elif backend_params:
            raise ValueError(
                "Constructor parameters backend_params are only supported when backend is a "
                "string."
            )
        elif not isinstance(backend, ParallelBackendBase):
            raise ValueError(
                f"Invalid backend: {backend!r}, expected a registered name "
                f"({sorted(BACKENDS)}) or a ParallelBackendBase instance"
            )
        if inner_max_num_threads is not None:
            if not backend.supports_inner_max_num_threads:
                # AssertionError, as joblib raises here.
                raise AssertionError(
                    f"{type(backend).__name__} does not accept setting the "
                    "inner_max_num_threads argument."
                )
            backend.inner_max_num_threads = inner_max_num_threads
        if backend.nesting_level is None:
            parent = self.old_parallel_config["backend"]
            if parent is default_parallel_config["backend"]:
                backend.nesting_level = 0
            else:
                backend.nesting_level = parent.nesting_level
        return backend

    def __enter__(self) -> Any:
        return self.parallel_config

    def __exit__(self, *exc_info: Any) -> None:
        self.unregister()

    def unregister(self) -> None:
        """Restore the configuration that was active before this one."""
        _backend.config = self.old_parallel_config


class parallel_backend(parallel_config):
    """Change the default backend used by :class:`Parallel` inside a ``with`` block.

    Older spelling of :class:`parallel_config`, which it wraps. Unlike it, ``n_jobs``
    defaults to -1 (all CPUs) and entering the block returns ``(backend, n_jobs)``.

    Parameters
    ----------
    backend : str or ParallelBackendBase
        A registered backend name or a backend instance.
    n_jobs : int, default=-1
        Default number of workers inside the block.
    inner_max_num_threads : int or None, default=None
        See :class:`parallel_config`.
    **backend_params : dict
        Passed to the backend's constructor when ``backend`` is a name.

    Examples
    --------
    >>> from operator import neg
    >>> from joblib_rs import Parallel, delayed, parallel_backend
    >>> with parallel_backend('threading'):
    ...     print(Parallel()(delayed(neg)(i + 1) for i in range(5)))
    [-1, -2, -3, -4, -5]
    """

    def __init__(
        self,
        backend: str | ParallelBackendBase,
        n_jobs: int | None = -1,
        inner_max_num_threads: int | None = None,
        **backend_params: Any,
    ) -> None:
        super().__init__(
            backend=backend,
            n_jobs=n_jobs,
            inner_max_num_threads=inner_max_num_threads,
            **backend_params,
        )
        self.old_backend_and_jobs = (
            self.old_parallel_config["backend"],
            self.old_parallel_config["n_jobs"],
        )
        self.new_backend_and_jobs = (
            self.parallel_config["backend"],
            self.parallel_config["n_jobs"],
        )

    def __enter__(self) -> Any:
        return self.new_backend_and_jobs


def register_parallel_backend(
    name: str, factory: Callable[..., ParallelBackendBase], make_default: bool = False
) -> None:
    """Register a new Parallel backend factory.

    Parameters
    ----------
    name : str
        The name to select the backend with (``Parallel(backend=name)``,
        ``parallel_config(name)``).
    factory : callable
        Returns a :class:`ParallelBackendBase` instance; called with the keyword arguments
        given to ``parallel_config`` and with ``nesting_level``.
    make_default : bool, default=False
        Also make it the default backend of every later ``Parallel``.
    """
    global DEFAULT_BACKEND
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a str, got {name!r}")
    if not callable(factory):
        raise TypeError(f"backend factory must be callable, got {factory!r}")
    BACKENDS[name] = factory
    if make_default:
        DEFAULT_BACKEND = name


def effective_n_jobs(n_jobs: int | None = -1) -> int:
    """Number of jobs that can really run in parallel with the active backend.

    Parameters
    ----------
    n_jobs : int or None, default=-1
        Requested number of workers (-1: all CPUs, -2: all but one, ...). None takes the
        active configuration's value.

    Returns
    -------
    int
        What the active backend would use; 1 for ``n_jobs=1``.
    """
    if n_jobs == 1:
        return 1
    backend, backend_n_jobs = get_active_backend()
    if n_jobs is None:
        n_jobs = backend_n_jobs
    return backend.effective_n_jobs(n_jobs=n_jobs)


class _DelayedFunction:
    # What delayed() returns. A slotted object instead of joblib's functools.wraps closure:
    # delayed() runs once per task in the caller's generator, and wrapping cost ~5x more.
    __slots__ = ("__wrapped__",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self.__wrapped__ = function

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Callable[..., Any], tuple, dict]:
        return self.__wrapped__, args, kwargs

    def __getattr__(self, name: str) -> Any:
        # __name__, __qualname__ and other attributes come from the function, as
        # functools.wraps would have copied them.
        if name == "__wrapped__":
            raise AttributeError(name)
        try:
            return getattr(self.__wrapped__, name)
        except AttributeError:
            if name in ("__name__", "__qualname__"):
                # e.g. functools.partial objects have no name: use their type's.
                return type(self.__wrapped__).__name__
            raise

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self.__wrapped__.__doc__

    def __repr__(self) -> str:
        return f"delayed({self.__wrapped__!r})"


def delayed(function: Callable[..., Any]) -> Callable[..., tuple[Callable[..., Any], tuple, dict]]:
    """Capture the arguments of a call to ``function`` for :class:`Parallel`.

    Parameters
    ----------
    function : callable
        The function to run later.

    Returns
    -------
    callable
        ``F`` such that ``F(*args, **kwargs)`` returns ``(function, args, kwargs)``. It
        carries the name, docstring and signature of ``function`` (``__wrapped__``), and
        pickles when ``function`` does.

    Examples
    --------
    >>> from math import sqrt
    >>> from joblib_rs import delayed
    >>> delayed(sqrt)(4)
    (<built-in function sqrt>, (4,), {})
    """
    return _DelayedFunction(function)


class BatchedCalls:
    """A list of ``(func, args, kwargs)`` run as one unit, under the nested backend config."""

    def __init__(
        self,
        iterator_slice: Iterable[tuple[Callable[..., Any], tuple, dict]],
        backend_and_jobs: tuple[ParallelBackendBase, int | None] | ParallelBackendBase,
        reducer_callback: Callable[[], None] | None = None,
        pickle_cache: dict | None = None,
    ) -> None:
        self.items = list(iterator_slice)
        self._size = len(self.items)
        self._reducer_callback = reducer_callback
        if isinstance(backend_and_jobs, tuple):
            self._backend, self._n_jobs = backend_and_jobs
        else:
            self._backend, self._n_jobs = backend_and_jobs, None
        self._pickle_cache = pickle_cache if pickle_cache is not None else {}

    def __call__(self) -> list[Any]:
        with parallel_config(backend=self._backend, n_jobs=self._n_jobs):
            return [func(*args, **kwargs) for func, args, kwargs in self.items]

    def __reduce__(self) -> tuple[Any, ...]:
        if self._reducer_callback is not None:
            self._reducer_callback()
        return BatchedCalls, (self.items, (self._backend, self._n_jobs), None, self._pickle_cache)

    def __len__(self) -> int:
        return self._size


TASK_DONE = "Done"
TASK_ERROR = "Error"
TASK_PENDING = "Pending"


def _verbosity_filter(index: int, verbose: int) -> bool:
    """True to skip the progress message of batch ``index``.

    Messages get sparser as the index grows (the gap grows as its square root); above 10
    every batch is reported.
    """
    if not verbose:
        return True
    if verbose > 10:
        return False
    if index == 0:
        return False
    scale = 0.5 * (11 - verbose) ** 2
    return int(sqrt((index + 1) / scale)) == int(sqrt(index / scale))


def short_format_time(t: float) -> str:
    """Elapsed time as joblib prints it: ``'  0.6s'`` or ``' 1.5min'``."""
    if t > 60:
        return f"{t / 60.0:4.1f}min"
    return f" {t:5.1f}s"


_BIN_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


@functools.lru_cache(maxsize=64)
def _eval_expr(expr: str) -> float:
    """Evaluate an arithmetic ``pre_dispatch`` expression such as ``'1.5*4'``, safely."""
    if len(expr) > 30:
        raise ValueError(
            f"Expression {expr[:30]!r}... is too long. Max length is 30, got {len(expr)}."
        )

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            value = node.value
        elif isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
            value = _BIN_OPS[type(node.op)](walk(node.left), walk(node.right))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = -walk(node.operand)
        else:
            raise TypeError(node)
        if abs(value) > 10**6:
            raise ValueError(f"Numeric literal {value} is too large, max is {10**6}.")
        return value

    try:
        return walk(ast.parse(expr, mode="eval").body)
    except (TypeError, SyntaxError, OverflowError, ZeroDivisionError) as exc:
        raise ValueError(f"{expr!r} is not a valid or supported arithmetic expression.") from exc


_MEM_UNITS = {"K": 1, "M": 2, "G": 3}


def _memstr_to_bytes(text: str) -> int:
    """``'1M'`` -> 1048576; ``'10K'``, ``'2G'`` alike."""
    unit = text[-1:].upper()
    try:
        if unit in _MEM_UNITS:
            return int(float(text[:-1]) * 1024 ** _MEM_UNITS[unit])
        return int(text)
    except ValueError:
        raise ValueError(
            f"Invalid literal for size: {text!r} should be a string like '10G', '500M', '50K'."
        ) from None


class BatchCompletionCallBack:
    """Tracks one dispatched batch; the backend calls it when the batch is done.

    Records the outcome (results or exception), reports the duration to the auto-batching
    policy, prints progress, dispatches the next batch and wakes the caller's thread.
    """

    __slots__ = (
        "_result",
        "batch_size",
        "dispatch_timestamp",
        "job",
        "parallel",
        "parallel_call_id",
        "status",
    )

    def __init__(self, dispatch_timestamp: float, batch_size: int, parallel: Parallel) -> None:
        self.dispatch_timestamp = dispatch_timestamp
        self.batch_size = batch_size
        self.parallel = parallel
        self.parallel_call_id = parallel._call_id
        self.job: Any = None
        self.status = TASK_PENDING
        self._result: Any = None

    def register_job(self, job: Any) -> None:
        """Keep the future-like object that ``submit`` returned."""
        self.job = job

    def get_result(self, timeout: float | None) -> Any:
        """Results of the batch, or raise its exception."""
        parallel = self.parallel
        if self.status == TASK_PENDING and not parallel._backend.supports_retrieve_callback:
            try:
                outcome = (TASK_DONE, parallel._backend.retrieve_result(self.job, timeout=timeout))
            except BaseException as exc:
                outcome = (TASK_ERROR, exc)
            self._register_outcome(*outcome)
        try:
            if self.status == TASK_ERROR:
                raise self._result
            return self._result
        finally:
            self._result = None

    def __call__(self, out: Any) -> None:
        """Called by the backend, usually from one of its threads, when the batch is done."""
        parallel = self.parallel
        backend = parallel._backend
        if not backend.supports_retrieve_callback:
            # The caller's thread retrieves the result; just keep the workers fed.
            with parallel._lock:
                if parallel._call_id == self.parallel_call_id and not parallel._aborting:
                    self._account_completion()
            return
        with parallel._lock:
            if parallel._call_id != self.parallel_call_id or parallel._aborting:
                return
            try:
                status, result = TASK_DONE, backend.retrieve_result_callback(out)
            except BaseException as exc:
                status, result = TASK_ERROR, exc
            self._register_outcome(status, result)
            if status == TASK_DONE:
                self._account_completion()

    def _account_completion(self) -> None:
        # Called with parallel._lock held.
        parallel = self.parallel
        duration = time.time() - self.dispatch_timestamp
        parallel._backend.batch_completed(self.batch_size, duration)
        parallel.n_completed_tasks += self.batch_size
        parallel._n_completed_batches += 1
        parallel.print_progress()
        if parallel._original_iterator is not None:
            parallel.dispatch_next()
        # The caller's thread waits for the head job (woken by _register_outcome) or, with
        # no job left, for the end of the input: wake it only when it has something to see.
        if not parallel.return_ordered or not parallel._iterating or parallel._aborting:
            parallel._cond.notify_all()

    def _register_outcome(self, status: str, result: Any) -> None:
        parallel = self.parallel
        with parallel._lock:
            if self.status != TASK_PENDING:
                # A timeout and a late result race: the first one wins.
                return
            self.status = status
            self._result = result
            self.job = None
            if status == TASK_ERROR:
                parallel._exception = True
                parallel._aborting = True
            if not parallel.return_ordered:
                parallel._jobs_set.discard(self)
                parallel._jobs.append(self)
            elif status == TASK_DONE and parallel._jobs and parallel._jobs[0] is not self:
                # In order, the caller's thread waits for the head job only: a later one
                # finishing first would wake it (and take the GIL) for nothing.
                return
            parallel._cond.notify_all()


class Parallel:
    """Helper class for readable parallel mapping.

    ``Parallel(n_jobs=2)(delayed(f)(x) for x in data)`` computes ``[f(x) for x in data]``
    with two workers.

    Parameters
    ----------
    n_jobs : int or None, default=None
        Maximum number of concurrently running jobs (worker processes or threads). -1 means
        all CPUs (see :func:`cpu_count`), -2 all but one, and so on; above the CPU count
        oversubscribes. 1 runs a plain loop in the caller's thread, handy for debugging.
        None means 1 unless a :class:`parallel_config` sets another value. Converted to int;
        0 raises ``ValueError``.
    backend : str, ParallelBackendBase or None, default=None
        ``'loky'`` (the default: worker processes of the Rust process pool),
        ``'multiprocessing'``, ``'threading'``,
        ``'sequential'``, a name registered with :func:`register_parallel_backend`, a backend
        instance, or a ``multiprocessing`` context. Libraries should rather set ``prefer`` or
        ``require`` so users can choose with :class:`parallel_config`.
    return_as : {'list', 'generator', 'generator_unordered'}, default='list'
        ``'list'`` returns all results at the end; ``'generator'`` yields them in submission
        order as they become available; ``'generator_unordered'`` yields them in completion
        order. Generators keep the number of finished-but-unread results bounded.
    verbose : int, default=0
        Progress messages on stderr (on stdout above 50); more frequent as it grows, every
        batch above 10.
    timeout : float or None, default=None
        Seconds each task may take once the caller waits for it; beyond, the call is aborted
        with :class:`TimeoutError`. Not applied when ``n_jobs=1``.
    pre_dispatch : {'all', int, str}, default='2 * n_jobs'
        Number of batches dispatched ahead; an arithmetic expression of ``n_jobs`` is allowed.
        The task iterator is consumed lazily beyond it.
    batch_size : int or 'auto', default='auto'
        Tasks per dispatch. ``'auto'`` adapts it so a batch lasts a target duration: a fraction
        of a second for processes, a few milliseconds for threads.
    temp_folder : str or None, default=None
        Folder for memmapped large arrays of process backends (``JOBLIB_TEMP_FOLDER``, then
        ``/dev/shm``, then the system temporary folder).
    max_nbytes : int, str or None, default='1M'
        Size above which arrays are memmapped for process backends; None disables it.
    mmap_mode : {None, 'r+', 'r', 'w+', 'c'}, default='r'
        Memmap mode of arrays passed to workers.
    prefer : {'processes', 'threads'} or None, default=None
        Soft hint on the backend when none is chosen explicitly.
    require : {'sharedmem'} or None, default=None
        Hard constraint: ``'sharedmem'`` forces a thread-based backend.
    progress : bool, default=False
        Show a progress bar on stderr (tqdm when installed). Not in joblib.
    **backend_kwargs : dict
        Passed to the backend's ``configure`` (e.g. ``initializer`` for process backends).

    Notes
    -----
    One call at a time: calling an instance while it is still running (e.g. an unfinished
    generator) raises ``RuntimeError``. Used as a context manager, the instance keeps its
    workers between calls.

    Examples
    --------
    >>> from math import sqrt
    >>> from joblib_rs import Parallel, delayed
    >>> Parallel(n_jobs=1)(delayed(sqrt)(i**2) for i in range(10))
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    >>> Parallel(n_jobs=2, prefer="threads")(delayed(sqrt)(i**2) for i in range(4))
    [0.0, 1.0, 2.0, 3.0]
    """

    def __init__(
        self,
        n_jobs: int | None = default_parallel_config["n_jobs"],
        backend: str | ParallelBackendBase | None = default_parallel_config["backend"],
        return_as: str = "list",
        verbose: int = default_parallel_config["verbose"],
        timeout: float | None = None,
        pre_dispatch: str | int = "2 * n_jobs",
        batch_size: int | str = "auto",
        temp_folder: str | None = default_parallel_config["temp_folder"],
        max_nbytes: int | str | None = default_parallel_config["max_nbytes"],
        mmap_mode: str | None = default_parallel_config["mmap_mode"],
        prefer: str | None = default_parallel_config["prefer"],
        require: str | None = default_parallel_config["require"],
        progress: bool = False,
        **backend_kwargs: Any,
    ) -> None:
        if n_jobs is None:
            n_jobs = default_parallel_config["n_jobs"]
        active_backend, context_config = _get_active_backend(
            prefer=prefer, require=require, verbose=verbose
        )
        nesting_level = active_backend.nesting_level
        self.verbose = _get_config_param(verbose, context_config, "verbose")
        if not isinstance(self.verbose, Integral | float):
            raise ValueError(f"verbose must be an int, got {self.verbose!r}")
        self.timeout = timeout
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be a positive number or None, got {timeout!r}")
        self.pre_dispatch = pre_dispatch
        if return_as not in VALID_RETURN_AS:
            raise ValueError(
                'Expected `return_as` parameter to be a string equal to "list","generator" or '
                f'"generator_unordered", but got {return_as} instead.'
            )
        self.return_as = return_as
        self.return_generator = return_as != "list"
        self.return_ordered = return_as != "generator_unordered"
        self.progress = bool(progress)

        self._backend_kwargs = {
            **backend_kwargs,
            **{
                key: _get_config_param(param, context_config, key)
                for param, key in (
                    (max_nbytes, "max_nbytes"),
                    (temp_folder, "temp_folder"),
                    (mmap_mode, "mmap_mode"),
                    (prefer, "prefer"),
                    (require, "require"),
                    (verbose, "verbose"),
                )
            },
        }
        if self._backend_kwargs["mmap_mode"] not in VALID_MMAP_MODES:
            raise ValueError(
                f"mmap_mode must be one of {VALID_MMAP_MODES}, "
                f"got {self._backend_kwargs['mmap_mode']!r}"
            )
        if isinstance(self._backend_kwargs["max_nbytes"], str):
            self._backend_kwargs["max_nbytes"] = _memstr_to_bytes(
                self._backend_kwargs["max_nbytes"]
            )
        self._backend_kwargs["verbose"] = max(0, self._backend_kwargs["verbose"] - 50)
        # The multiprocessing context for process pools, as joblib passes it to configure().
        self._backend_kwargs["context"] = default_mp_context()

        if backend is default_parallel_config["backend"] or backend is None:
            backend = active_backend
        elif isinstance(backend, ParallelBackendBase):
            if backend.nesting_level is None:
                backend.nesting_level = nesting_level
        elif hasattr(backend, "Pool") and hasattr(backend, "Lock"):
            # A multiprocessing context: its start method is used by the process pool.
            self._backend_kwargs["context"] = backend
            backend = MultiprocessingBackend(nesting_level=nesting_level)
        elif isinstance(backend, str):
            backend = _make_backend(backend, nesting_level=nesting_level)
        else:
            raise ValueError(
                f"Invalid backend: {backend!r}, expected one of {sorted(BACKENDS)} or a "
                "ParallelBackendBase instance"
            )

        n_jobs = _get_config_param(n_jobs, context_config, "n_jobs")
        if n_jobs is None:
            n_jobs = backend.default_n_jobs
        try:
            n_jobs = int(n_jobs)
        except (TypeError, ValueError):
            raise ValueError(f"n_jobs could not be converted to int: {n_jobs!r}") from None
        self.n_jobs = n_jobs

        if require == "sharedmem" and not getattr(backend, "supports_sharedmem", False):
            raise ValueError(f"Backend {backend} does not support shared memory")
        if batch_size == "auto" or (
            isinstance(batch_size, Integral)
            and not isinstance(batch_size, bool)
            and batch_size > 0
        ):
            self.batch_size = batch_size
        else:
            raise ValueError(
                f"batch_size must be 'auto' or a positive integer, got: {batch_size!r}"
            )
        if pre_dispatch != "all" and not isinstance(pre_dispatch, str | Integral):
            raise ValueError(
                "pre_dispatch must be 'all', an int or an expression of n_jobs, "
                f"got {pre_dispatch!r}"
            )
        if (
            self.return_generator
            and not isinstance(backend, SequentialBackend)
            and not backend.supports_return_generator
        ):
            raise ValueError(f"Backend {backend} does not support return_as={return_as}")

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._jobs: collections.deque[BatchCompletionCallBack] = collections.deque()
        self._jobs_set: set[BatchCompletionCallBack] = set()
        self._ready_batches: collections.deque[BatchedCalls] = collections.deque()
        self._reducer_callback: Callable[[], None] | None = None
        self._pickle_cache: dict = {}
        self._backend = backend
        self._running = False
        self._managed_backend = False
        self._calling = False
        self._id = os.urandom(16).hex()
        self._call_id: str | None = None
        self._call_ref: Any = None
        self._original_iterator: Any = None
        self._iterating = False
        self._aborting = False
        self._aborted = False
        self._exception = False
        self._progress_bar: Any = None
        self._cleanup_thread: threading.Thread | None = None
        self.n_tasks: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Parallel:
        self._managed_backend = True
        self._calling = False
        self._initialize_backend()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._managed_backend = False
        if self.return_generator and self._calling:
            self._abort()
        self._terminate_and_reset()

    def _initialize_backend(self) -> int:
        try:
            n_jobs = self._backend.configure(
                n_jobs=self.n_jobs, parallel=self, **self._backend_kwargs
            )
            if self.timeout is not None and not self._backend.supports_timeout:
                warnings.warn(
                    f"The backend class {type(self._backend).__name__!r} does not support "
                    f"timeout. You have set 'timeout={self.timeout}' in Parallel but the "
                    "'timeout' parameter will not be used.",
                    stacklevel=3,
                )
        except FallbackToBackend as fallback:
            self._backend = fallback.backend
            n_jobs = self._initialize_backend()
        return n_jobs

    def _effective_n_jobs(self) -> int:
        return self._backend.effective_n_jobs(self.n_jobs) if self._backend else 1

    def _terminate_and_reset(self) -> None:
        if self._calling and hasattr(self._backend, "stop_call"):
            self._backend.stop_call()
        self._calling = False
        if not self._managed_backend:
            self._backend.terminate()

    # ------------------------------------------------------------------ dispatching

    def _dispatch(self, batch: BatchedCalls) -> None:
        # Called with self._lock held.
        if self._aborting:
            return
        self.n_dispatched_tasks += len(batch)
        self.n_dispatched_batches += 1
        tracker = BatchCompletionCallBack(time.time(), len(batch), self)
        if self.return_ordered:
            self._jobs.append(tracker)
        else:
            self._jobs_set.add(tracker)
        job = self._backend.submit(batch, callback=tracker)
        if tracker.status == TASK_PENDING:
            tracker.register_job(job)

    def dispatch_next(self) -> None:
        """Dispatch one more batch; called as batches complete.

        In generator modes, dispatching pauses while too many finished results wait to be
        read; the consumer resumes it.
        """
        with self._lock:
            if self._too_many_unread():
                self._dispatch_owed += 1
                return
            if not self.dispatch_one_batch(self._original_iterator):
                self._iterating = False
                self._original_iterator = None
                self._on_input_exhausted()

    def _too_many_unread(self) -> bool:
        limit = self._max_unread_batches
        return limit is not None and self._n_completed_batches - self._n_read_batches >= limit

    def dispatch_one_batch(self, iterator: Any) -> bool:
        """Take the next batch from ``iterator`` and dispatch it; False when there is none.

        Thread-safe: the task iterator is only consumed under the instance lock. An
        exception raised by the iterator is reported as a failed task.
        """
        if self._aborting or iterator is None:
            return False
        with self._lock:
            batch_size = 1
            try:
                if self._ready_batches:
                    self._dispatch(self._ready_batches.popleft())
                    return True
                batch_size = self._get_batch_size()
                n_jobs = self._cached_effective_n_jobs
                big_batch_size = batch_size * n_jobs
                tasks = list(itertools.islice(iterator, big_batch_size))
                if not tasks:
                    return False
                if iterator is self._original_iterator and len(tasks) < big_batch_size:
                    # The end of the input: smaller batches even out the last stragglers.
                    final_batch_size = max(1, len(tasks) // (10 * n_jobs))
                else:
                    final_batch_size = max(1, len(tasks) // n_jobs)
                nested = self._backend.get_nested_backend()
                for i in range(0, len(tasks), final_batch_size):
                    self._ready_batches.append(
                        BatchedCalls(
                            tasks[i : i + final_batch_size],
                            nested,
                            self._reducer_callback,
                            self._pickle_cache,
                        )
                    )
                self._dispatch(self._ready_batches.popleft())
            except BaseException as exc:
                # Raised by the task iterator or by submit, maybe in a backend thread:
                # report it through a failed batch so the caller's thread raises it.
                tracker = BatchCompletionCallBack(0.0, batch_size, self)
                if self.return_ordered:
                    self._jobs.append(tracker)
                tracker._register_outcome(TASK_ERROR, exc)
                return False
            return True

    def _get_batch_size(self) -> int:
        if self.batch_size == "auto":
            return self._backend.compute_batch_size()
        return self.batch_size

    def _on_input_exhausted(self) -> None:
        if self._progress_bar is not None and self.n_tasks is None:
            self._progress_bar.set_total(self.n_dispatched_tasks)

    # ------------------------------------------------------------------ progress

    def _print(self, msg: str) -> None:
        """Write ``[Parallel(n_jobs=..)]: msg`` to stderr (stdout when verbose > 50)."""
        if not self.verbose:
            return
        writer = sys.stderr.write if self.verbose < 50 else sys.stdout.write
        writer(f"[{self}]: {msg}\n")

    def _is_completed(self) -> bool:
        return self.n_completed_tasks == self.n_dispatched_tasks and not (
            self._iterating or self._aborting
        )

    def print_progress(self) -> None:
        """Report progress, at a frequency set by ``verbose``; update the progress bar."""
        if self._progress_bar is not None:
            self._progress_bar.update_to(self.n_completed_tasks)
        if not self.verbose:
            return
        if self._finished_printed:
            return
        width = floor(log10(self.n_tasks)) + 1 if self.n_tasks else 3
        elapsed = time.time() - self._start_time
        if self._is_completed():
            self._finished_printed = True
            self._print(
                f"Done {self.n_completed_tasks:{width}d} out of {self.n_completed_tasks:{width}d}"
                f" | elapsed: {short_format_time(elapsed)} finished"
            )
            return
        index = self.n_completed_tasks
        if self._original_iterator is not None:
            # Still reading the input: the total may be unknown.
            if _verbosity_filter(self.n_dispatched_batches, self.verbose):
                return
            fmt_time = f"| elapsed: {short_format_time(elapsed)}"
            if self.n_tasks is not None:
                self._print(f"Done {index:{width}d} out of {self.n_tasks:{width}d} {fmt_time}")
            else:
                pad = " " * (len("out of ") + width - len("tasks"))
                self._print(f"Done {index:{width}d} tasks {pad}{fmt_time}")
            return
        total = self.n_dispatched_tasks
        if index != 0:
            # Everything is dispatched: report about `verbose` times until the end.
            cursor = total - index + 1 - self._pre_dispatch_amount
            frequency = (total // self.verbose) + 1
            if index + 1 == total or cursor % frequency:
                return
        remaining = (elapsed / max(index, 1)) * (total - index)
        self._print(
            f"Done {index:{width}d} out of {total:{width}d} | elapsed: "
            f"{short_format_time(elapsed)} remaining: {short_format_time(remaining)}"
        )

    # ------------------------------------------------------------------ aborting

    def _abort(self) -> None:
        # Must run without self._lock: a backend may join threads that need it.
        self._aborting = True
        if not self._aborted:
            self._backend.abort_everything(ensure_ready=self._managed_backend)
        self._aborted = True

    def _warn_exit_early(self) -> None:
        unread = self.n_completed_tasks - self._nb_consumed
        completed = self._is_completed()
        msg = ""
        if unread:
            msg += f"{unread} tasks have been successfully executed  but not used."
            if not completed:
                msg += " Additionally, "
        if not completed:
            msg += (
                f"{self.n_dispatched_tasks - self.n_completed_tasks} tasks which were still "
                "being processed by the workers have been cancelled."
            )
        if msg:
            msg += (
                " You could benefit from adjusting the input task iterator to limit "
                "unnecessary computation time."
            )
            warnings.warn(msg, stacklevel=3)

    # ------------------------------------------------------------------ retrieval

    def _start(self, iterator: Any, pre_dispatch: Any) -> None:
        self._iterating = False
        if self.dispatch_one_batch(iterator):
            self._iterating = self._original_iterator is not None
        while self.dispatch_one_batch(iterator):
            pass
        if pre_dispatch == "all":
            self._iterating = False
            self._on_input_exhausted()

    def _next_ready_job(self) -> BatchCompletionCallBack | None:
        """Wait for the next job to read; None when the call is complete.

        Raises the first error as soon as one is known.
        """
        callback_backend = self._backend.supports_retrieve_callback
        deadline = None
        with self._lock:
            while True:
                raise_if_interrupted()
                if self._aborting:
                    error_job = next((j for j in self._jobs if j.status == TASK_ERROR), None)
                    if error_job is not None:
                        return error_job
                    raise RuntimeError("The Parallel call was aborted.")
                if (
                    self._dispatch_owed
                    and self._original_iterator is not None
                    and not self._too_many_unread()
                ):
                    self._dispatch_owed -= 1
                    self.dispatch_next()
                    continue
                if self.return_ordered:
                    if self._jobs:
                        head = self._jobs[0]
                        if not callback_backend or head.status != TASK_PENDING:
                            return self._jobs.popleft()
                        waited_on = head
                    elif not self._iterating:
                        return None
                    else:
                        waited_on = None
                else:
                    if self._jobs:
                        return self._jobs.popleft()
                    if not self._jobs_set and not self._iterating:
                        return None
                    waited_on = next(iter(self._jobs_set), None)
                if self.timeout is None or waited_on is None:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.timeout
                if now >= deadline:
                    waited_on._register_outcome(TASK_ERROR, TimeoutError())
                    continue
                self._cond.wait(deadline - now)

    def _retrieve(self) -> Generator[Any, None, None]:
        while True:
            job = self._next_ready_job()
            if job is None:
                return
            results = job.get_result(self.timeout)
            with self._lock:
                self._n_read_batches += 1
            for result in results:
                self._nb_consumed += 1
                yield result

    def _get_outputs(self, iterator: Any, pre_dispatch: Any) -> Generator[Any, None, None]:
        dispatch_thread_id = threading.get_ident()
        detached = False
        interrupts = watch_interrupts()
        try:
            interrupts.__enter__()
            self._start(iterator, pre_dispatch)
            # The first yield only makes the generator enter this try block.
            yield
            with self._backend.retrieval_context():
                yield from self._retrieve()
            self._iterating = False
            self.print_progress()
        except GeneratorExit:
            self._exception = True
            if dispatch_thread_id != threading.get_ident():
                # Collected in another thread: clean up in a thread of our own so no
                # thread ever joins itself.
                detached = True
                self._cleanup_thread = threading.Thread(
                    target=self._abort_and_reset, name="joblib_rs-generator-exit", daemon=True
                )
                self._cleanup_thread.start()
                return
            self._abort()
            if self.return_generator:
                self._warn_exit_early()
            raise
        except BaseException:
            self._exception = True
            self._abort()
            raise
        finally:
            interrupts.__exit__(None, None, None)
            with self._lock:
                self._jobs = collections.deque()
                self._jobs_set = set()
                self._ready_batches.clear()
                if not detached:
                    # Otherwise the detached clean-up frees the instance when it is done.
                    self._running = False
            if not detached:
                self._close_progress_bar()
                self._terminate_and_reset()

    def _abort_and_reset(self) -> None:
        try:
            self._abort()
            if self.return_generator:
                self._warn_exit_early()
            self._close_progress_bar()
            self._terminate_and_reset()
        finally:
            self._running = False

    def _close_progress_bar(self) -> None:
        if self._progress_bar is not None:
            self._progress_bar.update_to(self.n_completed_tasks)
            self._progress_bar.close()
            self._progress_bar = None

    def _get_sequential_output(self, iterable: Iterable[Any]) -> Generator[Any, None, None]:
        try:
            self._iterating = True
            self._original_iterator = iterable
            batch_size = self._get_batch_size()
            if batch_size != 1:
                # Read the input by batches, as the parallel path does.
                it = iter(iterable)
                chunks = iter(lambda: tuple(itertools.islice(it, batch_size)), ())
                iterable = itertools.chain.from_iterable(chunks)
            yield None
            for func, args, kwargs in iterable:
                self.n_dispatched_batches += 1
                self.n_dispatched_tasks += 1
                result = func(*args, **kwargs)
                self.n_completed_tasks += 1
                self.print_progress()
                yield result
                self._nb_consumed += 1
        except BaseException:
            self._exception = True
            self._aborting = True
            self._aborted = True
            raise
        finally:
            self._running = False
            self._iterating = False
            self._original_iterator = None
            self.print_progress()
            self._close_progress_bar()

    def _reset_run_tracking(self) -> None:
        cleanup = self._cleanup_thread
        if cleanup is not None and cleanup is not threading.current_thread():
            # A generator collected in another thread is still being cleaned up.
            cleanup.join()
            self._cleanup_thread = None
        with self._lock:
            if self._running:
                msg = "This Parallel instance is already running !"
                if self.return_generator:
                    msg += (
                        " Before submitting new tasks, you must wait for the completion of all "
                        "the previous tasks, or clean all references to the output generator."
                    )
                raise RuntimeError(msg)
            self._running = True
        self.n_dispatched_batches = 0
        self.n_dispatched_tasks = 0
        self.n_completed_tasks = 0
        self._n_completed_batches = 0
        self._n_read_batches = 0
        self._dispatch_owed = 0
        self._max_unread_batches: int | None = None
        self._nb_consumed = 0
        self._exception = False
        self._aborting = False
        self._aborted = False
        self._finished_printed = False
        self._pre_dispatch_amount = 0

    def __call__(self, iterable: Iterable[Any]) -> Any:
        """Run the tasks of ``iterable`` (``delayed(f)(...)`` triples).

        Returns a list, or a generator with ``return_as='generator'`` or
        ``'generator_unordered'`` (typed ``Any``: which one depends on ``return_as``).
        """
        self._reset_run_tracking()
        try:
            self.n_tasks = len(iterable) if hasattr(iterable, "__len__") else None
            self._start_time = time.time()
            if self.progress:
                self._progress_bar = make_progress_bar(self.n_tasks)
            n_jobs = (
                self._effective_n_jobs() if self._managed_backend else self._initialize_backend()
            )
        except BaseException:
            self._running = False
            self._close_progress_bar()
            raise

        if n_jobs == 1:
            # A plain loop in this thread: least overhead, simplest tracebacks.
            output = self._get_sequential_output(iterable)
            next(output)
            return output if self.return_generator else list(output)

        try:
            output = self._prepare_parallel_run(iterable, n_jobs)
        except BaseException:
            # Bad pre_dispatch, no workers, a non-iterable...: leave the instance reusable.
            self._running = False
            self._close_progress_bar()
            self._terminate_and_reset()
            raise
        # Run the generator to its first yield: this dispatches the first batches.
        next(output)
        return output if self.return_generator else list(output)

    def _prepare_parallel_run(
        self, iterable: Iterable[Any], n_jobs: int
    ) -> Generator[Any, None, None]:
        with self._lock:
            self._call_id = os.urandom(16).hex()
        self._cached_effective_n_jobs = n_jobs
        backend_name = type(self._backend).__name__
        if n_jobs == 0:
            raise RuntimeError(f"{backend_name} has no active worker.")
        self._print(f"Using backend {backend_name} with {n_jobs} concurrent workers.")
        if hasattr(self._backend, "start_call"):
            self._backend.start_call()
        self._calling = True

        iterator = iter(iterable)
        pre_dispatch = self.pre_dispatch
        if pre_dispatch == "all":
            self._original_iterator = None
            self._pre_dispatch_amount = 0
        else:
            self._original_iterator = iterator
            if isinstance(pre_dispatch, str):
                pre_dispatch = _eval_expr(pre_dispatch.replace("n_jobs", str(n_jobs)))
            self._pre_dispatch_amount = pre_dispatch = max(int(pre_dispatch), 1)
            if self.return_generator:
                self._max_unread_batches = max(pre_dispatch, 2 * n_jobs)
            iterator = itertools.islice(iterator, self._pre_dispatch_amount)
        self._pickle_cache = {}
        output = self._get_outputs(iterator, pre_dispatch)
        self._call_ref = weakref.ref(output)
        return output

    # joblib's Parallel inherits these from its Logger: messages go to the `logging` module.

    def debug(self, msg: str) -> None:
        """Log ``msg`` at DEBUG level on the ``'joblib'`` logger."""
        logging.getLogger("joblib").debug("[%s]: %s", self, msg)

    def info(self, msg: str) -> None:
        """Log ``msg`` at INFO level."""
        logging.getLogger("joblib").info("[%s]: %s", self, msg)

    def warn(self, msg: str) -> None:
        """Log ``msg`` at WARNING level on the ``'joblib'`` logger."""
        logging.getLogger("joblib").warning("[%s]: %s", self, msg)

    def format(self, obj: Any, indent: int = 0) -> str:
        """Pretty-print ``obj`` to a string, nesting at most 3 levels."""
        return pprint.pformat(obj, indent=indent, depth=3)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_jobs={self.n_jobs})"
