"""Helpers for embarrassingly parallel code: ``Parallel`` and ``delayed``.

How a call flows
----------------
``Parallel(...)`` resolves its configuration once: the backend (explicit argument, else the
active :class:`parallel_config`, else the default; ``_backends.config``), ``n_jobs``,
batching, memmapping and timeout settings. Each call ``Parallel(...)(iterable)`` configures
the backend and hands the tasks to a fresh :class:`~joblib_rs._call.ParallelCall`, which
holds everything about that one run: it dispatches ``pre_dispatch`` batches, each completion
callback dispatches the next (reading the input lazily), and the caller's thread waits on a
condition variable (no polling). The first error, ``timeout`` or ``Ctrl-C`` aborts the call.

::

    parallel.py   Parallel (configuration, backend lifecycle), delayed
      ▼
    _call.py      ParallelCall (per-call state, dispatch/retrieve loop), BatchedCalls
      ▼
    _backends/    config (parallel_config, registry) ◄ base ◄ sequential, threads,
                  multiprocessing_pool, loky (► _process_pool ► Rust pool), dask
"""

from __future__ import annotations

import logging
import multiprocessing as mp  # noqa: F401 - joblib.parallel.mp is imported by third parties
import os
import pprint
import sys
import threading
import types
import warnings
import weakref
from collections.abc import Callable, Iterable
from numbers import Integral
from typing import Any

from joblib_rs._backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    LokyBackend,
    MultiprocessingBackend,
    ParallelBackendBase,
    SequentialBackend,
    ThreadingBackend,
    TimeoutError,
    config,
    default_mp_context,
)
from joblib_rs._backends.config import (
    BACKENDS,
    EXTERNAL_BACKENDS,
    MAYBE_AVAILABLE_BACKENDS,
    VALID_MMAP_MODES,
    VALID_RETURN_AS,
    DaskNotInstalledError,
    _backend,
    _Sentinel,
    default_parallel_config,
    effective_n_jobs,
    get_active_backend,
    get_config_param,
    make_backend,
    parallel_backend,
    parallel_config,
    register_parallel_backend,
    resolve_active_backend,
)
from joblib_rs._batch import BatchedCalls
from joblib_rs._call import (
    TASK_DONE,
    TASK_ERROR,
    TASK_PENDING,
    BatchCompletionCallBack,
    ParallelCall,
)
from joblib_rs._cpu import cpu_count
from joblib_rs._progress import short_format_time

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",  # noqa: F822 - forwarded to _backends.config by _ParallelModule
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

# Names joblib's parallel module has, kept importable from here.
_REEXPORTED = (
    BACKENDS,
    EXTERNAL_BACKENDS,
    MAYBE_AVAILABLE_BACKENDS,
    DaskNotInstalledError,
    FallbackToBackend,
    LokyBackend,
    SequentialBackend,
    ThreadingBackend,
    TASK_DONE,
    TASK_ERROR,
    TASK_PENDING,
    BatchCompletionCallBack,
    BatchedCalls,
    get_active_backend,
    _backend,
    _Sentinel,
    short_format_time,
)

# The public configuration API lives in _backends.config; its home for users (as in joblib)
# is this module: what reprs, pickling by reference and ``__module__`` show.
for _public in (parallel_config, parallel_backend, register_parallel_backend, effective_n_jobs):
    _public.__module__ = __name__
del _public

#: The multiprocessing context named by ``JOBLIB_START_METHOD`` at import, else None (the
#: platform's default is used), as in joblib.
DEFAULT_MP_CONTEXT = (
    default_mp_context() if os.environ.get("JOBLIB_START_METHOD", "").strip() else None
)


class _ParallelModule(types.ModuleType):
    """This module, with the default backend names living in ``_backends.config``: reading
    or assigning ``joblib_rs.parallel.DEFAULT_BACKEND`` (as joblib's tests and some libraries
    do) reads or changes the one setting."""

    _FORWARDED = ("DEFAULT_BACKEND", "DEFAULT_THREAD_BACKEND", "DEFAULT_PROCESS_BACKEND")

    def __getattr__(self, name: str) -> Any:
        if name in _ParallelModule._FORWARDED:
            return getattr(config, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _ParallelModule._FORWARDED:
            setattr(config, name, value)
        else:
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _ParallelModule


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
        active_backend, context_config = resolve_active_backend(
            prefer=prefer, require=require, verbose=verbose
        )
        nesting_level = active_backend.nesting_level
        self.verbose = get_config_param(verbose, context_config, "verbose")
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
                key: get_config_param(param, context_config, key)
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
        self._backend_kwargs["context"] = DEFAULT_MP_CONTEXT or default_mp_context()

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
            backend = make_backend(backend, nesting_level=nesting_level)
        else:
            raise ValueError(
                f"Invalid backend: {backend!r}, expected one of {sorted(BACKENDS)} or a "
                "ParallelBackendBase instance"
            )

        n_jobs = get_config_param(n_jobs, context_config, "n_jobs")
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

        # Instance state across calls; a call's own state lives in its ParallelCall.
        self._lock = threading.Lock()
        self._reducer_callback: Callable[[], None] | None = None
        self._backend = backend
        self._running = False
        self._managed_backend = False
        self._calling = False
        self._id = os.urandom(16).hex()
        self._call: ParallelCall | None = None
        self._call_ref: Any = None
        self._cleanup_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Parallel:
        self._managed_backend = True
        self._calling = False
        self._initialize_backend()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._managed_backend = False
        if self.return_generator and self._calling and self._call is not None:
            self._call.abort()
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

    def _print(self, msg: str) -> None:
        """Write ``[Parallel(n_jobs=..)]: msg`` to stderr (stdout when verbose > 50)."""
        if not self.verbose:
            return
        writer = sys.stderr.write if self.verbose < 50 else sys.stdout.write
        writer(f"[{self}]: {msg}\n")

    # ------------------------------------------------------------------ the current call
    # joblib exposes these on the instance; here they read the current (or last) call.

    @property
    def n_dispatched_batches(self) -> int:
        """Batches dispatched by the current (or last) call."""
        return self._call.n_dispatched_batches if self._call is not None else 0

    @property
    def n_dispatched_tasks(self) -> int:
        """Tasks dispatched by the current (or last) call."""
        return self._call.n_dispatched_tasks if self._call is not None else 0

    @property
    def n_completed_tasks(self) -> int:
        """Tasks completed by the current (or last) call."""
        return self._call.n_completed_tasks if self._call is not None else 0

    @property
    def n_tasks(self) -> int | None:
        """Number of tasks of the current (or last) call, when its input has a length."""
        return self._call.n_tasks if self._call is not None else None

    @property
    def _aborting(self) -> bool:
        """Whether the current (or last) call is aborting (an error, or its generator closed)."""
        return self._call is not None and self._call.aborting

    def dispatch_next(self) -> None:
        """Dispatch one more batch of the current call (joblib's hook for backends)."""
        if self._call is not None:
            self._call.dispatch_next()

    def dispatch_one_batch(self, iterator: Any) -> bool:
        """Dispatch the next batch of ``iterator`` in the current call."""
        return self._call.dispatch_one_batch(iterator) if self._call is not None else False

    def print_progress(self) -> None:
        """Report the current call's progress (see ``verbose``)."""
        if self._call is not None:
            self._call.print_progress()

    # ------------------------------------------------------------------ calling

    def _start_call(self, n_tasks: int | None) -> ParallelCall:
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
        try:
            self._call = ParallelCall(self, n_tasks)
        except BaseException:
            self._running = False
            raise
        return self._call

    def __call__(self, iterable: Iterable[Any]) -> Any:
        """Run the tasks of ``iterable`` (``delayed(f)(...)`` triples).

        Returns a list, or a generator with ``return_as='generator'`` or
        ``'generator_unordered'`` (typed ``Any``: which one depends on ``return_as``).
        """
        call = self._start_call(len(iterable) if hasattr(iterable, "__len__") else None)
        try:
            n_jobs = (
                self._effective_n_jobs() if self._managed_backend else self._initialize_backend()
            )
            call.backend = self._backend
        except BaseException:
            self._running = False
            call.close_progress_bar()
            raise

        if n_jobs == 1:
            # A plain loop in this thread: least overhead, simplest tracebacks.
            output = call.sequential_outputs(iterable)
            next(output)
            return output if self.return_generator else list(output)

        try:
            output = call.run(iterable, n_jobs, whole_batches=not self.return_generator)
        except BaseException:
            # Bad pre_dispatch, no workers, a non-iterable...: leave the instance reusable.
            self._running = False
            call.close_progress_bar()
            self._terminate_and_reset()
            raise
        self._call_ref = weakref.ref(output)
        # Run the generator to its first yield: this dispatches the first batches.
        next(output)
        if self.return_generator:
            return output
        results: list[Any] = []
        for batch_results in output:
            results.extend(batch_results)
        return results

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
