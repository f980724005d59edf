"""``joblib.externals.cloudpickle``: the installed cloudpickle package, under joblib's path."""

from __future__ import annotations

from typing import Any

import cloudpickle as _cloudpickle
from cloudpickle import *  # noqa: F403

__version__ = _cloudpickle.__version__


def __getattr__(name: str) -> Any:
    return getattr(_cloudpickle, name)
