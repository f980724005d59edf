"""A Ctrl-C that is never lost while a parallel call is running.

CPython runs a signal handler in the main thread at the next Python code it executes. When
that code happens to be a weakref callback or a ``__del__`` method, the ``KeyboardInterrupt``
is printed as an "unraisable" exception and dropped, and the call would go on to the end.
While a call runs in the main thread, :func:`watch_interrupts` puts in a handler that raises
as usual *and* records the interrupt; the call's wait loop calls :func:`raise_if_interrupted`,
so a dropped interrupt still stops the call.
"""

from __future__ import annotations

import _signal
import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["raise_if_interrupted", "watch_interrupts"]

_pending = False


def _record_and_raise(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def watch_interrupts() -> Iterator[None]:
    """Record interrupts for the duration: in the main thread, when the SIGINT handler is
    Python's default one (or ours, left by a call finalised elsewhere); otherwise do nothing."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # _signal's functions: signal's wrappers convert to and from enums (a few microseconds per
    # call, twice per Parallel call); the handlers here are plain functions.
    current = _signal.getsignal(signal.SIGINT)
    if current is not signal.default_int_handler and current is not _record_and_raise:
        yield
        return
    # Only interrupts of this call count: forget any left by an earlier one.
    _pending = False
    installed = current is signal.default_int_handler
    if installed:
        _signal.signal(signal.SIGINT, _record_and_raise)
    try:
        yield
    finally:
        # A generator may be finalised from another thread, where handlers cannot be set;
        # the recording handler then stays (it behaves as the default one).
        if installed and threading.current_thread() is threading.main_thread():
            _signal.signal(signal.SIGINT, signal.default_int_handler)


def raise_if_interrupted() -> None:
    """Raise the ``KeyboardInterrupt`` recorded since the call started, once."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt
