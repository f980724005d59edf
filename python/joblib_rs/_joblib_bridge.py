"""joblib-rs's process pool as a backend of the real ``joblib`` package.

Libraries such as scikit-learn call ``joblib.Parallel`` themselves. After
:func:`register_joblib_backend`, ``joblib.parallel_config(backend='joblib_rs')`` makes those
calls run on joblib-rs's Rust process pool (the one behind ``joblib_rs``'s ``'loky'``),
large arrays through shared memory included::

    joblib.Parallel ──► JoblibRsBackend (a joblib backend) ──► joblib_rs LokyBackend ──► pool

The adapter speaks joblib's backend protocol to ``joblib.Parallel`` and forwards each hook to
joblib-rs's own ``LokyBackend``; the two protocols are the same, apart from the exception
joblib expects for a fallback to sequential, and the options joblib passes that our pool does
not take (``context``: workers are always fresh interpreters).
"""

from __future__ import annotations

from typing import Any

from joblib_rs._parallel_backends import FallbackToBackend, LokyBackend

__all__ = ["register_joblib_backend"]

#: Options ``joblib.Parallel`` gives every backend's ``configure`` that mean nothing to the
#: Rust pool (it never forks, so no multiprocessing context).
_DROPPED_OPTIONS = ("context",)

_backend_class: type | None = None


def _make_backend_class() -> type:
    """Build the adapter class, a subclass of the installed joblib's backend base class."""
    from joblib._parallel_backends import FallbackToBackend as JoblibFallback
    from joblib._parallel_backends import ParallelBackendBase as JoblibBase
    from joblib._parallel_backends import SequentialBackend as JoblibSequential

    class JoblibRsBackend(JoblibBase):
        """joblib backend running batches on joblib-rs's Rust process pool.

        Registered as ``'joblib_rs'`` by :func:`register_joblib_backend`. Accepts the options
        of joblib-rs's ``'loky'``: ``idle_worker_timeout``, ``initializer``, ``initargs``,
        plus ``inner_max_num_threads`` through ``joblib.parallel_config``.
        """

        supports_retrieve_callback = True
        supports_return_generator = True
        supports_timeout = True
        supports_inner_max_num_threads = True
        supports_sharedmem = False
        uses_threads = False

        def __init__(
            self,
            nesting_level: int | None = None,
            inner_max_num_threads: int | None = None,
            **backend_kwargs: Any,
        ) -> None:
            super().__init__(
                nesting_level=nesting_level,
                inner_max_num_threads=inner_max_num_threads,
                **backend_kwargs,
            )
            self._impl: LokyBackend | None = None
            self._configure_kwargs: dict[str, Any] = {}

        def _new_impl(self) -> LokyBackend:
            # nesting_level and inner_max_num_threads may be set by joblib after __init__.
            return LokyBackend(
                nesting_level=self.nesting_level,
                inner_max_num_threads=self.inner_max_num_threads,
                **self.backend_kwargs,
            )

        def effective_n_jobs(self, n_jobs: int) -> int:
            """As joblib-rs's ``'loky'``: CPUs for negative values, 1 inside workers."""
            return (self._impl or self._new_impl()).effective_n_jobs(n_jobs)

        def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
            """Get the pool ready; fall back to joblib's sequential backend for one job."""
            kwargs = {k: v for k, v in backend_kwargs.items() if k not in _DROPPED_OPTIONS}
            impl = self._impl = self._new_impl()
            try:
                n_jobs = impl.configure(n_jobs=n_jobs, parallel=parallel, **kwargs)
            except FallbackToBackend:
                self._impl = None
                raise JoblibFallback(JoblibSequential(nesting_level=self.nesting_level)) from None
            self.parallel = parallel
            self._configure_kwargs = kwargs
            return n_jobs

        def submit(self, func: Any, callback: Any = None) -> Any:
            """Send the batch (a joblib ``BatchedCalls``) to a pool worker."""
            return self._impl.submit(func, callback)

        def retrieve_result_callback(self, out: Any) -> Any:
            """The batch's results, or its exception (worker traceback as ``__cause__``)."""
            return self._impl.retrieve_result_callback(out)

        def compute_batch_size(self) -> int:
            """joblib-rs's adaptive batch size."""
            return self._impl.compute_batch_size() if self._impl is not None else 1

        def batch_completed(self, batch_size: int, duration: float) -> None:
            """Feed the adaptive batch size."""
            if self._impl is not None:
                self._impl.batch_completed(batch_size, duration)

        def terminate(self) -> None:
            """Keep the workers for the next call; remove the call's temporary files."""
            if self._impl is not None:
                self._impl.terminate()
                self._impl = None

        def abort_everything(self, ensure_ready: bool = True) -> None:
            """Kill the workers; get a fresh pool when the backend stays in use."""
            if self._impl is not None:
                self._impl.abort_everything(ensure_ready=False)
                self._impl = None
            if ensure_ready and self.parallel is not None:
                self.configure(
                    n_jobs=self.parallel.n_jobs, parallel=self.parallel, **self._configure_kwargs
                )

    return JoblibRsBackend


def register_joblib_backend(name: str = "joblib_rs", make_default: bool = False) -> None:
    """Register joblib-rs's process pool as a backend of the installed ``joblib`` package.

    Afterwards, code that calls ``joblib.Parallel`` itself (scikit-learn, for instance) runs
    its tasks on joblib-rs's pool inside ``joblib.parallel_config(backend=name)``.

    Parameters
    ----------
    name : str, default='joblib_rs'
        The backend name to register in joblib.
    make_default : bool, default=False
        Also make it joblib's default backend.

    Raises
    ------
    ImportError
        joblib is not installed.

    Examples
    --------
    >>> import joblib
    >>> import joblib_rs
    >>> joblib_rs.register_joblib_backend()
    >>> from math import sqrt
    >>> with joblib.parallel_config(backend='joblib_rs', n_jobs=2):
    ...     print(joblib.Parallel()(joblib.delayed(sqrt)(i ** 2) for i in range(4)))
    [0.0, 1.0, 2.0, 3.0]
    """
    global _backend_class
    try:
        import joblib
    except ImportError as exc:
        raise ImportError(
            "register_joblib_backend needs the joblib package: pip install joblib"
        ) from exc
    if _backend_class is None:
        _backend_class = _make_backend_class()
    joblib.register_parallel_backend(name, _backend_class, make_default=make_default)
