"""The command line's error type: a message and an exit status."""

from __future__ import annotations

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "CliError"]

#: Success.
EXIT_OK = 0
#: Something not found or damaged, or a declined confirmation.
EXIT_FAILURE = 1
#: Bad arguments (argparse's own status).
EXIT_USAGE = 2


class CliError(Exception):
    """A failure reported as ``joblib-rs: error: <message>`` with exit status ``status``.

    Parameters
    ----------
    message : str
        What went wrong, naming the bad value.
    status : int, default=EXIT_FAILURE
        The process exit status.
    """

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status
