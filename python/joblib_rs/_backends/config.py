"""The active backend configuration: ``parallel_config``, the backend registry and the
resolution of what a ``Parallel()`` call uses.

::

    Parallel(backend=..., prefer=..., require=...) ─► get_active_backend()
         explicit argument ─┐
         parallel_config ───┼─► backend instance + n_jobs (threads forced by
         DEFAULT_BACKEND ───┘   require='sharedmem', swapped by prefer=...)

``parallel_config`` keeps a per-thread stack of settings (a ``with`` block restores the
previous one); ``BACKENDS`` maps names to factories (the builtin ones are registered by
``joblib_rs._backends``, whose modules import this one: nothing here imports a backend).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from joblib_rs._backends.base import NESTED_DEFAULTS, ParallelBackendBase
from joblib_rs._nested import state as _state

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "EXTERNAL_BACKENDS",
    "MAYBE_AVAILABLE_BACKENDS",
    "default_parallel_config",
    "effective_n_jobs",
    "get_active_backend",
    "make_backend",
    "parallel_backend",
    "parallel_config",
    "register_parallel_backend",
]

#: Backend factories by name; ``joblib_rs._backends`` registers the builtin ones.
BACKENDS: dict[str, Callable[..., ParallelBackendBase]] = {}
DEFAULT_BACKEND = "loky"
DEFAULT_THREAD_BACKEND = "threading"
DEFAULT_PROCESS_BACKEND = "loky"
#: Process backends that may be missing (multiprocessing disabled): asking for one falls
#: back to the default backend with a warning, as in joblib.
MAYBE_AVAILABLE_BACKENDS = {"multiprocessing", "loky"}

# Per-thread active configuration, set by parallel_config / parallel_backend, lives in
# ``_nested.state`` (with the nested configuration a worker's batch left pending); joblib's
# name for it is kept.
_backend = _state


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
    # An optional plugin, imported by name only when asked for (dask is heavy to import).
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


def get_config_param(param: Any, context_config: dict[str, Any], key: str) -> Any:
    """Explicit argument, else the context's value, else the default."""
    if param is not default_parallel_config[key]:
        return param
    if context_config[key] is not default_parallel_config[key]:
        return context_config[key]
    return param.default_value


def _active_config() -> dict[str, Any]:
    config = getattr(_state, "config", None)
    if config is not None:
        return config
    spec = getattr(_state, "pending", None)
    if spec is None:
        return default_parallel_config
    # A worker's batch left its nested configuration as data (``_nested``): make the
    # backend now, as the parallel_config block it stands for would have.
    _state.pending = None
    kind, nesting_level, n_jobs = spec
    if kind not in NESTED_DEFAULTS:
        # Deliberately lazy (an upward import): the builtin backends register the nested
        # defaults, and a worker imports them only when a task looks.
        import joblib_rs._backends  # noqa: F401
    parallel_config(backend=NESTED_DEFAULTS[kind](nesting_level=nesting_level), n_jobs=n_jobs)
    return _state.config


def get_active_backend(
    prefer: Any = default_parallel_config["prefer"],
    require: Any = default_parallel_config["require"],
    verbose: Any = default_parallel_config["verbose"],
) -> tuple[ParallelBackendBase, int | None]:
    """Return the backend instance and ``n_jobs`` a ``Parallel()`` would use here."""
    backend, config = resolve_active_backend(prefer, require, verbose)
    n_jobs = get_config_param(default_parallel_config["n_jobs"], config, "n_jobs")
    return backend, n_jobs


def resolve_active_backend(
    prefer: Any = default_parallel_config["prefer"],
    require: Any = default_parallel_config["require"],
    verbose: Any = default_parallel_config["verbose"],
) -> tuple[ParallelBackendBase, dict[str, Any]]:
    """The backend instance a ``Parallel()`` would use here, and the configuration it comes
    from (a thread backend forced by ``require='sharedmem'`` gets ``n_jobs=1`` there)."""
    config = _active_config()
    backend = get_config_param(default_parallel_config["backend"], config, "backend")
    prefer = get_config_param(prefer, config, "prefer")
    require = get_config_param(require, config, "require")
    verbose = get_config_param(verbose, config, "verbose")

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


def make_backend(name: str, **backend_params: Any) -> ParallelBackendBase:
    """An instance of the backend registered as ``name``.

    Registers an external backend (``'dask'``) on first use; a missing process backend
    falls back to the default one with a warning, as joblib does.
    """
    if name not in BACKENDS:
        if name in EXTERNAL_BACKENDS:
            EXTERNAL_BACKENDS[name]()
        elif name in MAYBE_AVAILABLE_BACKENDS:
            warnings.warn(
                f"joblib backend '{name}' is not available on your system, falling back to "
                f"{DEFAULT_BACKEND}.",
                UserWarning,
                stacklevel=3,
            )
            BACKENDS[name] = BACKENDS[DEFAULT_BACKEND]
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
        _state.config = self.parallel_config

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
            backend = make_backend(backend, **backend_params)
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
        _state.config = self.old_parallel_config


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
