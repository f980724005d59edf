"""Exceptions that joblib-rs users catch, raised in the caller for what happened in workers.

A worker process that dies fails every pending task with :class:`TerminatedWorkerError`; an
exception raised by a task comes back with the worker's formatted traceback attached as its
``__cause__`` (a :class:`RemoteTraceback`).
"""

from __future__ import annotations

try:
    from concurrent.futures.process import BrokenProcessPool
except ImportError:  # no _multiprocessing (Pyodide, WASI): joblib-rs then runs sequentially
    from concurrent.futures import BrokenExecutor

    class BrokenProcessPool(BrokenExecutor):  # type: ignore[no-redef]
        """A process pool is broken (``concurrent.futures.process``'s, on platforms that
        have it)."""


__all__ = ["BrokenProcessPool", "RemoteTraceback", "TerminatedWorkerError"]


class TerminatedWorkerError(BrokenProcessPool):
    """A worker process died while the pool was running tasks.

    The message names the worker's exit code or the signal that killed it (a segmentation
    fault, the kernel's out-of-memory killer, an explicit ``kill -9``...). The pool that lost
    the worker is discarded; the next call starts a fresh one.
    """


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as its ``__cause__``."""

    def __init__(self, traceback_text: str) -> None:
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return f'\n"""\n{self.traceback_text}"""'
