"""Pickling of tasks and results for the process pool: the C pickler first, cloudpickle when
something must travel by value.

cloudpickle runs a Python-level hook on nearly every object it meets, which makes it several
times slower than the standard pickler on the small batches ``Parallel`` sends. Most tasks
only hold importable functions and plain data, which the standard pickler handles by
reference exactly as cloudpickle would. So each payload is first pickled by the C pickler
with a cheap hook that refuses whatever cloudpickle would pickle *by value* (functions and
classes of ``__main__``, of modules registered with ``cloudpickle.register_pickle_by_value``,
or without a module); a refusal, or anything the standard pickler cannot handle (lambdas,
closures, dynamic classes...), sends the whole payload through cloudpickle instead. The bytes
either way load with ``pickle.loads``.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
from collections.abc import Callable
from typing import Any

import cloudpickle

__all__ = ["dumps"]

PROTOCOL = pickle.HIGHEST_PROTOCOL

# Modules cloudpickle pickles by value (``register_pickle_by_value``); private in cloudpickle,
# so when it is missing every payload goes through cloudpickle (always correct, just slower).
_BY_VALUE_MODULES: Any = getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", None)


class _NeedsCloudpickle(Exception):
    """Raised by the fast pickler's hook: this object must travel by value."""


ArrayReducer = Callable[[Any], Any]
_FUNCTION = types.FunctionType


class _FastPickler(pickle.Pickler):
    """The C pickler, refusing functions and classes a worker could not import by name."""

    def __init__(self, file: io.BytesIO, reduce_array: ArrayReducer | None) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self._reduce_array = reduce_array
        numpy = sys.modules.get("numpy") if reduce_array is not None else None
        self._ndarray = numpy.ndarray if numpy is not None else None

    def reducer_override(self, obj: Any) -> Any:
        # Called for nearly every object: keep the common case to two type checks.
        kind = type(obj)
        if kind is _FUNCTION or isinstance(obj, type):
            module = getattr(obj, "__module__", None)
            if module is None or module == "__main__" or "<locals>" in obj.__qualname__:
                raise _NeedsCloudpickle
        elif self._ndarray is not None and isinstance(obj, self._ndarray):
            return self._reduce_array(obj)  # type: ignore[misc]
        return NotImplemented


def _fast_path_allowed() -> bool:
    return _BY_VALUE_MODULES is not None and not _BY_VALUE_MODULES


def dumps(
    obj: Any,
    reduce_array: ArrayReducer | None = None,
    cloudpickler: Callable[[io.BytesIO], pickle.Pickler] | None = None,
) -> bytes:
    """Pickle ``obj`` for another interpreter of the same environment.

    Parameters
    ----------
    obj : object
        What to send.
    reduce_array : callable, optional
        Offered every numpy array; returns a pickle reduction (e.g. a reference to shared
        memory) or ``NotImplemented`` to pickle the array normally.
    cloudpickler : callable, optional
        Builds the cloudpickle pickler used when the fast path refuses ``obj`` (it must apply
        ``reduce_array`` itself); plain ``cloudpickle`` by default.

    Raises
    ------
    Exception
        Whatever cloudpickle raises for an object it cannot pickle either.
    """
    if _fast_path_allowed():
        buffer = io.BytesIO()
        try:
            _FastPickler(buffer, reduce_array).dump(obj)
            return buffer.getvalue()
        except Exception:  # refused or not picklable by reference: cloudpickle decides
            pass
    if cloudpickler is None:
        return cloudpickle.dumps(obj, protocol=PROTOCOL)
    buffer = io.BytesIO()
    cloudpickler(buffer).dump(obj)
    return buffer.getvalue()
