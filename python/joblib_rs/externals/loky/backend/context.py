"""``loky.backend.context``: a ``'loky'`` start method for :mod:`multiprocessing`.

loky registers a ``'loky'`` context on import, so ``multiprocessing.get_context("loky")`` and
``set_start_method("loky")`` work in programs that import joblib. joblib-rs registers the same
name (``import joblib_rs`` does it, through ``_multiprocessing_helpers``); its processes start as
fresh interpreters, like loky's and like joblib-rs's own workers: it is the ``'spawn'`` method
under loky's name. (The class lives in ``_multiprocessing_helpers``, which registers it without
importing this package.)
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context as _mp_context
from typing import Any

from joblib_rs._multiprocessing_helpers import LokyContext

__all__ = ["LokyContext", "get_context", "register_loky_context"]


def register_loky_context() -> None:
    """Make ``'loky'`` a start method :mod:`multiprocessing` knows (``import joblib_rs``
    already did; the default start method is left alone)."""
    _mp_context._concrete_contexts.setdefault("loky", LokyContext())  # type: ignore[attr-defined]


def get_context(method: str | None = None) -> Any:
    """The multiprocessing context of ``method`` (``'loky'`` by default, as loky's)."""
    register_loky_context()
    return multiprocessing.get_context("loky" if method is None else method)
