"""``loky.backend``: the ``'loky'`` multiprocessing context and the resource tracker."""

from __future__ import annotations

from joblib_rs.externals.loky.backend.context import LokyContext, get_context

__all__ = ["LokyContext", "get_context"]
