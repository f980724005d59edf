"""The ``'sequential'`` backend: every task in the caller's thread (``n_jobs=1``).

``Parallel`` never submits to it: a call whose backend resolves to one worker runs a plain
loop. It exists to be chosen by name, to be fallen back to, and as the nested backend below
the first nesting level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from joblib_rs._backends.base import NESTED_DEFAULTS, ParallelBackendBase, check_n_jobs
from joblib_rs._backends.config import get_active_backend

__all__ = ["SequentialBackend"]


class SequentialBackend(ParallelBackendBase):
    """Runs every task in the caller's thread, one after another (``n_jobs=1``)."""

    uses_threads = True
    supports_timeout = False
    supports_retrieve_callback = False
    supports_sharedmem = True

    def effective_n_jobs(self, n_jobs: int) -> int:
        """Always 1."""
        check_n_jobs(n_jobs)
        return 1

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None):
        """Never called: ``Parallel`` runs sequential calls inline."""
        raise RuntimeError("Should never be called for SequentialBackend.")

    def retrieve_result_callback(self, out: Any) -> Any:
        """Never called: ``Parallel`` runs sequential calls inline."""
        raise RuntimeError("Should never be called for SequentialBackend.")

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """Sequential code changes nothing: nested calls see the active configuration."""
        return get_active_backend()


NESTED_DEFAULTS["sequential"] = SequentialBackend
