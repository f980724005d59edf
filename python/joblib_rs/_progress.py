"""Progress of a ``Parallel`` call: the bar of ``progress=True`` (tqdm when installed, a
plain one otherwise) and the pacing of joblib's ``verbose`` messages.

Updated by the running call (``_call.ParallelCall``) each time a batch completes; the total
may be unknown until the task iterator is exhausted (a generator), in which case it is filled
in later.
"""

from __future__ import annotations

import sys
import time
import warnings
from math import floor, log10, sqrt
from typing import Any, TextIO

__all__ = [
    "make_progress_bar",
    "report_progress",
    "short_format_time",
    "verbosity_filter",
    "warn_exit_early",
]


def verbosity_filter(index: int, verbose: int) -> bool:
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


class PlainProgressBar:
    """A one-line bar redrawn with ``\\r`` on a text stream (stderr by default)."""

    WIDTH = 30
    # Redraw at most this often, except for the final state.
    MIN_INTERVAL = 0.1

    def __init__(self, total: int | None, stream: TextIO | None = None) -> None:
        self.total = total
        self.n = 0
        self._stream = stream if stream is not None else sys.stderr
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._closed = False

    def set_total(self, total: int) -> None:
        """Fix the total once it is known."""
        self.total = total

    def update_to(self, n: int) -> None:
        """Show ``n`` completed tasks."""
        self.n = n
        now = time.monotonic()
        if now - self._last_draw >= self.MIN_INTERVAL or n == self.total:
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self._start
        self._last_draw = now
        if self.total:
            filled = int(self.WIDTH * min(self.n, self.total) / self.total)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            text = f"\r[{bar}] {self.n}/{self.total} tasks | {elapsed:.1f}s"
        else:
            text = f"\r{self.n} tasks | {elapsed:.1f}s"
        self._stream.write(text)
        self._stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self._closed:
            return
        self._closed = True
        self._draw(time.monotonic())
        self._stream.write("\n")
        self._stream.flush()


class _TqdmProgressBar:
    def __init__(self, total: int | None) -> None:
        import tqdm

        self._bar = tqdm.tqdm(total=total, unit="tasks")

    def set_total(self, total: int) -> None:
        self._bar.total = total
        self._bar.refresh()

    def update_to(self, n: int) -> None:
        self._bar.update(n - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def make_progress_bar(total: int | None) -> Any:
    """A tqdm bar when tqdm can be imported, else a :class:`PlainProgressBar`."""
    try:
        return _TqdmProgressBar(total)
    except ImportError:
        return PlainProgressBar(total)


def report_progress(call: Any) -> None:
    """Report a running call's progress (``_call.ParallelCall``), at a frequency set by
    ``verbose``; update its progress bar."""
    if call.progress_bar is not None:
        call.progress_bar.update_to(call.n_completed_tasks)
    verbose = call.parallel.verbose
    if not verbose or call.finished_printed:
        return
    print_ = call.parallel._print
    width = floor(log10(call.n_tasks)) + 1 if call.n_tasks else 3
    elapsed = time.time() - call.start_time
    if call.is_completed():
        call.finished_printed = True
        print_(
            f"Done {call.n_completed_tasks:{width}d} out of {call.n_completed_tasks:{width}d}"
            f" | elapsed: {short_format_time(elapsed)} finished"
        )
        return
    index = call.n_completed_tasks
    if call.original_iterator is not None:
        # Still reading the input: the total may be unknown.
        if verbosity_filter(call.n_dispatched_batches, verbose):
            return
        fmt_time = f"| elapsed: {short_format_time(elapsed)}"
        if call.n_tasks is not None:
            print_(f"Done {index:{width}d} out of {call.n_tasks:{width}d} {fmt_time}")
        else:
            pad = " " * (len("out of ") + width - len("tasks"))
            print_(f"Done {index:{width}d} tasks {pad}{fmt_time}")
        return
    total = call.n_dispatched_tasks
    if index != 0:
        # Everything is dispatched: report about `verbose` times until the end.
        cursor = total - index + 1 - call.pre_dispatch_amount
        frequency = (total // verbose) + 1
        if index + 1 == total or cursor % frequency:
            return
    remaining = (elapsed / max(index, 1)) * (total - index)
    print_(
        f"Done {index:{width}d} out of {total:{width}d} | elapsed: "
        f"{short_format_time(elapsed)} remaining: {short_format_time(remaining)}"
    )


def warn_exit_early(call: Any) -> None:
    """Warn that a call ended early: results computed but not read, or tasks cancelled."""
    unread = call.n_completed_tasks - call.nb_consumed
    completed = call.is_completed()
    msg = ""
    if unread:
        msg += f"{unread} tasks have been successfully executed  but not used."
        if not completed:
            msg += " Additionally, "
    if not completed:
        msg += (
            f"{call.n_dispatched_tasks - call.n_completed_tasks} tasks which were still "
            "being processed by the workers have been cancelled."
        )
    if msg:
        msg += (
            " You could benefit from adjusting the input task iterator to limit "
            "unnecessary computation time."
        )
        warnings.warn(msg, stacklevel=3)
