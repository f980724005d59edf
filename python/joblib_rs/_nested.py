"""The per-thread backend configuration, and the nested one a worker keeps as data until used.

``_backends.config`` stores what ``parallel_config`` sets in :data:`state` (``state.config``).
A batch sent to a worker names the backend that ``Parallel`` calls inside its tasks use. When
that backend is a builtin default (``ParallelBackendBase.get_nested_backend``: threads at
the first nesting level, sequential below), the batch carries a :data:`NestedSpec` instead of
a backend object, and the worker runs its tasks with that spec *pending*. The first
configuration lookup inside a task (a nested ``Parallel``, ``get_active_backend``...) turns it
into the backend. A worker whose tasks never look does not import the backends at all: they
cost a fresh worker about 20 ms before its first result.

::

    parent: BatchedCalls.__reduce__ ─ ("threads", 1, n_jobs) ─► worker: BatchedCalls()
                                                                   │ with pending(spec):
    _backends.config._active_config() ◄─ first lookup in a task ───┘ makes the backend once

This module imports nothing of joblib-rs, so a worker can load it at no cost.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["NestedSpec", "pending", "state"]

#: ``(kind, nesting_level, n_jobs)``: kind is a key of ``_backends.base.NESTED_DEFAULTS``.
NestedSpec = tuple[str, int, Any]

#: ``config``: the settings ``parallel_config`` made active in this thread (absent: the
#: defaults); ``pending``: a :data:`NestedSpec` not yet made into a backend (or None).
state = threading.local()

_UNSET = object()


class pending:
    """Runs a block with ``spec`` as the configuration, made into a backend on first use.

    Restores the thread's previous configuration on exit, as the ``parallel_config`` block
    it stands for would.
    """

    def __init__(self, spec: NestedSpec) -> None:
        self._spec = spec

    def __enter__(self) -> None:
        self._saved = (getattr(state, "config", _UNSET), getattr(state, "pending", None))
        if self._saved[0] is not _UNSET:
            del state.config
        state.pending = self._spec

    def __exit__(self, *exc_info: Any) -> None:
        config, spec = self._saved
        if config is _UNSET:
            state.__dict__.pop("config", None)
        else:
            state.config = config
        state.pending = spec
