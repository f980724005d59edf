"""``loky.process_executor``: the exceptions code written for loky catches."""

from __future__ import annotations

from joblib_rs.exceptions import BrokenProcessPool, TerminatedWorkerError

__all__ = ["BrokenProcessPool", "ShutdownExecutorError", "TerminatedWorkerError"]


class ShutdownExecutorError(RuntimeError):
    """Raised when submitting to an executor that was shut down."""
