"""Logging helpers of joblib's public API: :class:`Logger` and :class:`PrintTime`.

:class:`Logger` subclasses send their messages to the standard ``'joblib'`` logger
(:func:`pformat` renders objects); :class:`PrintTime` prints the time elapsed between its
calls to stderr and, optionally, appends it to a log file.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from joblib_rs._func_inspect import format_time, pformat
from joblib_rs.disk import mkdirp  # noqa: F401  (joblib.logger has it)

__all__ = ["Logger", "PrintTime", "format_time", "pformat", "short_format_time"]


def short_format_time(t: float) -> str:
    """A duration in a fixed-width, compact form, as joblib's verbose lines print it.

    Parameters
    ----------
    t : float
        Duration in seconds.

    Returns
    -------
    str
        ``' %5.1fs'`` (e.g. ``'   42.0s'``) up to a minute, ``'%4.1fmin'`` (e.g.
        ``' 1.2min'``) above.

    Examples
    --------
    >>> short_format_time(42)
    '  42.0s'
    >>> short_format_time(90)
    ' 1.5min'
    """
    if t > 60:
        return f"{t / 60.0:4.1f}min"
    return f" {t:5.1f}s"


#: Older log files kept by :class:`PrintTime` (``joblib.log.1`` ... ``joblib.log.9``).
_KEPT_LOGS = 9


class Logger:
    """Base class of the objects that log to the ``'joblib'`` logger, as joblib's do.

    Parameters
    ----------
    depth : int, default=3
        Depth to which :meth:`format` shows nested objects.
    name : str, optional
        Name of the :mod:`logging` logger; ``'joblib'`` by default.
    """

    def __init__(self, depth: int = 3, name: str | None = None) -> None:
        self.depth = depth
        self._name = name or "joblib"

    def warn(self, msg: str) -> None:
        """Log ``msg`` as a warning."""
        logging.getLogger(self._name).warning(f"[{self}]: {msg}")

    def info(self, msg: str) -> None:
        """Log ``msg`` at the info level."""
        logging.info(f"[{self}]: {msg}")

    def debug(self, msg: str) -> None:
        """Log ``msg`` at the debug level."""
        logging.getLogger(self._name).debug(f"[{self}]: {msg}")

    def format(self, obj: Any, indent: int = 0) -> str:
        """The formatted representation of ``obj``."""
        return pformat(obj, indent=indent, depth=self.depth)


class PrintTime:
    """Print the time elapsed between calls, on stderr and optionally in a log file.

    Parameters
    ----------
    logfile : str, optional
        File the messages are appended to as well. An existing file is kept as
        ``logfile.1`` (older ones shift up to ``.9``) and a fresh one is started.
    logdir : str, optional
        Folder in which to write ``joblib.log`` instead (not together with ``logfile``).

    Examples
    --------
    >>> timer = PrintTime()
    >>> timer("loaded the data")  # doctest: +SKIP
    loaded the data: 0.0s, 0.0min
    >>> timer("whole run", total=True)  # doctest: +SKIP
    whole run: 0.00s, 0.0 min
    """

    def __init__(self, logfile: str | None = None, logdir: str | None = None) -> None:
        if logfile is not None and logdir is not None:
            raise ValueError("Cannot specify both logfile and logdir")
        self.start_time = self.last_time = time.time()
        if logdir is not None:
            logfile = os.path.join(logdir, "joblib.log")
        self.logfile = logfile
        if logfile is None:
            return
        folder = os.path.dirname(logfile)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if os.path.exists(logfile):
            # Keep the previous runs' logs: log.1 is the last one.
            for n in range(_KEPT_LOGS - 1, 0, -1):
                older = f"{logfile}.{n}"
                if os.path.exists(older):
                    os.replace(older, f"{logfile}.{n + 1}")
            os.replace(logfile, f"{logfile}.1")
        with open(logfile, "w") as fh:
            fh.write(f"\nLogging joblib python script\n\n---{time.ctime(self.last_time)}---\n")

    def __call__(self, msg: str = "", total: bool = False) -> None:
        """Print ``msg`` with the time since the previous call (since creation when
        ``total``)."""
        now = time.time()
        if total:
            lapse = now - self.start_time
            line = f"{msg}: {lapse:.2f}s, {lapse / 60:.1f} min"
        else:
            line = f"{msg}: {format_time(now - self.last_time)}"
        print(line, file=sys.stderr)
        if self.logfile is not None:
            try:
                with open(self.logfile, "a") as fh:
                    fh.write(line + "\n")
            except OSError:
                # The log is a convenience: a vanished folder must not stop the computation.
                pass
        self.last_time = time.time()
