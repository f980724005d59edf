"""``wrap_non_picklable_objects``: make an object travel with cloudpickle under plain pickle.

``pickle.dumps(wrapped)`` ─► ``__reduce__`` ─► ``cloudpickle.dumps(obj)`` inside the pickle
─► ``pickle.loads`` ─► :func:`_rebuild` / :func:`_rebuild_wrapper` ─► the object (wrapped
again with ``keep_wrapper``). A class becomes a subclass whose instances do the same.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, TypeVar

import cloudpickle

__all__ = ["wrap_non_picklable_objects"]

T = TypeVar("T")


def _my_wrap_non_picklable_objects(obj: T, keep_wrapper: bool = True) -> T:
    """joblib's fallback of :func:`wrap_non_picklable_objects` where multiprocessing is
    missing: nothing is ever sent to another process, so ``obj`` is returned as is."""
    return obj


def _rebuild(payload: bytes) -> Any:
    return cloudpickle.loads(payload)


class CloudpickledObjectWrapper:
    """Wraps an object so that pickling it uses cloudpickle (calls and attributes pass
    through to the object)."""

    def __init__(self, obj: Any, keep_wrapper: bool = True) -> None:
        self._obj = obj
        self._keep_wrapper = keep_wrapper
        if callable(obj):
            functools.update_wrapper(self, obj, updated=())

    def __reduce__(self) -> tuple[Any, ...]:
        payload = cloudpickle.dumps(self._obj)
        if self._keep_wrapper:
            return _rebuild_wrapper, (payload,)
        return _rebuild, (payload,)

    def __getattr__(self, name: str) -> Any:
        if name in ("_obj", "_keep_wrapper"):
            raise AttributeError(name)
        return getattr(self._obj, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._obj(*args, **kwargs)

    def __repr__(self) -> str:
        return f"CloudpickledObjectWrapper({self._obj!r})"


def _rebuild_wrapper(payload: bytes) -> CloudpickledObjectWrapper:
    return CloudpickledObjectWrapper(cloudpickle.loads(payload), keep_wrapper=True)


def _wrap_class(cls: type, keep_wrapper: bool) -> type:
    def __reduce__(self: Any) -> tuple[Any, ...]:
        return _rebuild, (cloudpickle.dumps(_unwrapped_instance(self, cls)),)

    namespace = {
        "__reduce__": __reduce__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
    }
    return type(cls.__name__, (cls,), namespace)


def _unwrapped_instance(obj: Any, cls: type) -> Any:
    # Rebuild the instance as the original class so cloudpickle sends that class by value.
    clone = cls.__new__(cls)
    if hasattr(obj, "__dict__"):
        clone.__dict__.update(obj.__dict__)
    return clone


def wrap_non_picklable_objects(obj: T, keep_wrapper: bool = True) -> T:
    """Wrapper for non-picklable objects to use cloudpickle to serialize them.

    Objects defined interactively or in ``__main__``, lambdas and closures cannot be pickled
    by the standard library's pickle. Wrapped, they pickle through cloudpickle whatever the
    pickler used (joblib-rs's own process pool already uses cloudpickle for everything; this
    matters for the ``'multiprocessing'`` backend and for user code that pickles).

    Parameters
    ----------
    obj : callable or class
        The function or class to wrap. Can be used as a decorator.
    keep_wrapper : bool, default=True
        Whether the unpickled object is wrapped again (so it can travel further).

    Returns
    -------
    The wrapped function, or for a class, a subclass whose instances pickle with cloudpickle.
    """
    if inspect.isclass(obj):
        return _wrap_class(obj, keep_wrapper)  # type: ignore[return-value]
    return CloudpickledObjectWrapper(obj, keep_wrapper=keep_wrapper)  # type: ignore[return-value]
