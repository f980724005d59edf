"""How tasks and results travel between the caller and worker processes: the one home.

::

    parent                                                        worker
    ──────                                                        ──────
    dumps_task(batch, reduce_array) ── bytes ──► TASK frame ──► loads_task(payload)()
      large argument arrays: reduce_array                           │
      (the call's MemmappingContext)                                ▼
    loads_result(payload) ◄────────── DONE frame ◄── bytes ── dumps_result(value, policy)
      large result arrays map the files                    large arrays written once into
      the worker wrote (recycled after)                    policy.folder (ArrayPolicy,
                                                           received once in the init frame)
    loads_failure(payload) ◄───────── FAILED frame ◄─ bytes ── dumps_failure(exc)

Every process backend uses these four pairs ('loky' through ``_process_pool``/``_worker``,
'multiprocessing' through its pool task): a result is pickled exactly once.

Pickling itself: each payload is first pickled by the C pickler with a cheap hook that
refuses whatever cloudpickle would pickle *by value* (functions and classes of ``__main__``,
of modules registered with ``cloudpickle.register_pickle_by_value``, or local ones); a refusal,
or anything the standard pickler cannot handle (lambdas, closures, dynamic classes...), sends
the whole payload through cloudpickle instead. The C pickler is several times faster on the
small batches ``Parallel`` sends; both produce ordinary pickles that load with
``pickle.loads``. ``LOKY_PICKLER=<module>`` (as in loky) makes tasks use that module's
``Pickler`` class instead.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import sys
import types
from typing import TYPE_CHECKING, Any

# A worker imports this module at start-up, before its first task: what only the parent or
# only a failure needs (cloudpickle, traceback, the shared-memory helpers, the exceptions
# module) is imported where it is used. The parent has them all imported already.
if TYPE_CHECKING:
    from collections.abc import Callable

    #: Offered every numpy array met while pickling; returns a pickle reduction (e.g. a
    #: reference to shared memory) or ``NotImplemented`` to pickle the array normally.
    ArrayReducer = Callable[[Any], Any]

__all__ = [
    "ArrayPolicy",
    "RemoteFailure",
    "dumps",
    "dumps_failure",
    "dumps_result",
    "dumps_task",
    "loads_failure",
    "loads_result",
    "loads_task",
]

PROTOCOL = pickle.HIGHEST_PROTOCOL

_FUNCTION = types.FunctionType


class ArrayPolicy:
    """How large numpy arrays travel, fixed for a worker's lifetime (sent in its init frame).

    Parameters
    ----------
    max_nbytes : int or None
        Arrays of at least this many bytes go through files instead of the pipe; None
        disables it (arrays already backed by a file still travel as references).
    folder : str
        Where the worker writes large results (the parent maps and unlinks them).
    mmap_mode : str
        Mode in which workers open the argument arrays the parent wrote.
    """

    __slots__ = ("folder", "max_nbytes", "mmap_mode")

    def __init__(self, max_nbytes: int | None, folder: str, mmap_mode: str = "r") -> None:
        self.max_nbytes = max_nbytes
        self.folder = folder
        self.mmap_mode = mmap_mode

    def _fields(self) -> tuple[int | None, str, str]:
        return self.max_nbytes, self.folder, self.mmap_mode

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArrayPolicy):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"ArrayPolicy(max_nbytes={self.max_nbytes!r}, folder={self.folder!r}, "
            f"mmap_mode={self.mmap_mode!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return ArrayPolicy, self._fields()

    def reduce_result_array(self, array: Any) -> Any:
        """Reduction of a result array: a file in ``folder`` when large, else normal."""
        if self.max_nbytes is None:
            return NotImplemented
        from joblib_rs import _memmapping

        return _memmapping.reduce_result_array(array, self.folder, self.max_nbytes)


class _NeedsCloudpickle(Exception):
    """Raised by the fast pickler's hook: this object must travel by value."""


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


def _with_array_hook(base: type) -> type:
    """``base`` (a ``Pickler`` class) offering numpy arrays to an array reducer first."""

    class ArrayAwarePickler(base):  # type: ignore[misc, valid-type]
        def __init__(self, file: io.BytesIO, reduce_array: ArrayReducer | None) -> None:
            super().__init__(file, protocol=PROTOCOL)
            self._reduce_array = reduce_array
            numpy = sys.modules.get("numpy") if reduce_array is not None else None
            self._ndarray = numpy.ndarray if numpy is not None else None

        def reducer_override(self, obj: Any) -> Any:
            if self._ndarray is not None and isinstance(obj, self._ndarray):
                reduced = self._reduce_array(obj)  # type: ignore[misc]
                if reduced is not NotImplemented:
                    return reduced
            parent = getattr(super(), "reducer_override", None)
            return NotImplemented if parent is None else parent(obj)

    ArrayAwarePickler.__qualname__ = f"ArrayAware{base.__name__}"
    return ArrayAwarePickler


_cloud_picklers: list[type] = []


def _cloud_pickler_class() -> type:
    """cloudpickle's ``Pickler`` with the array hook (made on first use)."""
    if not _cloud_picklers:
        import cloudpickle

        _cloud_picklers.append(_with_array_hook(cloudpickle.Pickler))
    return _cloud_picklers[0]


class _StdlibPickler(pickle.Pickler):
    """``LOKY_PICKLER=pickle``: the standard pickler, refusing what a worker could not import
    by name (functions and classes of ``__main__``) with a message saying what to do."""

    def __init__(self, file: io.BytesIO, reduce_array: ArrayReducer | None) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self._reduce_array = reduce_array
        numpy = sys.modules.get("numpy") if reduce_array is not None else None
        self._ndarray = numpy.ndarray if numpy is not None else None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type | types.FunctionType) and obj.__module__ == "__main__":
            raise pickle.PicklingError(
                f"Can't pickle {obj!r}: it is defined in __main__, which the workers cannot "
                "import (LOKY_PICKLER=pickle; wrap it with wrap_non_picklable_objects)"
            )
        if self._ndarray is not None and isinstance(obj, self._ndarray):
            return self._reduce_array(obj)  # type: ignore[misc]
        return NotImplemented


_chosen_picklers: dict[str, type] = {}


def _task_pickler_class() -> type | None:
    """The ``Pickler`` class ``LOKY_PICKLER`` names, or None for the default strategy."""
    name = os.environ.get("LOKY_PICKLER", "").strip()
    if name in ("", "cloudpickle"):
        return None
    chosen = _chosen_picklers.get(name)
    if chosen is None:
        if name == "pickle":
            chosen = _StdlibPickler
        else:
            try:
                base = importlib.import_module(name).Pickler
            except (ImportError, AttributeError) as exc:
                raise ValueError(
                    f"LOKY_PICKLER={name!r} must name an importable module with a Pickler "
                    f"class: {exc}"
                ) from exc
            chosen = _with_array_hook(base)
        _chosen_picklers[name] = chosen
    return chosen


def _fast_path_allowed() -> bool:
    module = sys.modules.get("cloudpickle.cloudpickle")
    if module is None:  # nothing can be registered by value before cloudpickle is imported
        return True
    # Modules cloudpickle pickles by value (``register_pickle_by_value``); private in
    # cloudpickle, so when it is missing every payload goes through cloudpickle (always
    # correct, just slower).
    by_value = getattr(module, "_PICKLE_BY_VALUE_MODULES", None)
    return by_value is not None and not by_value


def _dump_with(pickler: Callable[[io.BytesIO], pickle.Pickler], obj: Any) -> bytes:
    buffer = io.BytesIO()
    pickler(buffer).dump(obj)
    return buffer.getvalue()


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
        Offered every numpy array; returns a pickle reduction or ``NotImplemented``.
    cloudpickler : callable, optional
        Builds the cloudpickle pickler used when the fast path refuses ``obj`` (it must apply
        ``reduce_array`` itself); cloudpickle with ``reduce_array`` by default.

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
        if reduce_array is None:
            import cloudpickle

            return cloudpickle.dumps(obj, protocol=PROTOCOL)
        pickler = _cloud_pickler_class()
        return _dump_with(lambda buffer: pickler(buffer, reduce_array), obj)
    return _dump_with(cloudpickler, obj)


def dumps_task(task: Callable[[], Any], reduce_array: ArrayReducer | None = None) -> bytes:
    """Pickle a zero-argument callable for a worker.

    Parameters
    ----------
    task : callable
        The batch to run there.
    reduce_array : callable, optional
        The call's shared-memory reducer for large argument arrays.

    Raises
    ------
    pickle.PicklingError
        If the task cannot be pickled; nothing is sent then.
    """
    try:
        chosen = _task_pickler_class()
        if chosen is not None:
            return _dump_with(lambda buffer: chosen(buffer, reduce_array), task)
        return dumps(task, reduce_array)
    except Exception as exc:
        raise pickle.PicklingError(
            f"Could not pickle the task to send it to the workers: {exc}"
        ) from exc


def loads_task(payload: bytes) -> Callable[[], Any]:
    """The callable :func:`dumps_task` pickled."""
    return pickle.loads(payload)


def dumps_result(value: Any, policy: ArrayPolicy | None) -> bytes:
    """Pickle a task's return value once, its large arrays written under ``policy``.

    Raises
    ------
    pickle.PicklingError
        If the value cannot be pickled.
    """
    no_sharing = policy is None or policy.max_nbytes is None
    reduce_array = None if no_sharing else policy.reduce_result_array
    try:
        return dumps(value, reduce_array)
    except Exception as exc:
        error = pickle.PicklingError(
            f"Could not pickle the result of the task ({type(value).__qualname__}): {exc}"
        )
        raise error from exc


def loads_result(payload: bytes) -> Any:
    """The value :func:`dumps_result` pickled (large arrays mapped from their files)."""
    return pickle.loads(payload)


def dumps_failure(exc: BaseException) -> bytes:
    """Pickle an exception raised in a worker with its formatted traceback.

    An exception that cannot travel is replaced by a ``RuntimeError`` naming its type and
    message.
    """
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        return dumps((exc, text))
    except Exception:
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        replacement = RuntimeError(f"{name}: {exc} (the original exception could not be pickled)")
        return dumps((replacement, text))


def loads_failure(payload: bytes) -> BaseException:
    """The exception :func:`dumps_failure` pickled, the worker's traceback as its cause."""
    exc, text = pickle.loads(payload)
    return _rebuild_failure(exc, text)


def _rebuild_failure(exc: BaseException, text: str) -> BaseException:
    from joblib_rs.exceptions import RemoteTraceback

    exc.__cause__ = RemoteTraceback(text)
    return exc


class RemoteFailure:
    """An exception caught in a worker, for transports that pickle results themselves (dask):
    it unpickles as the exception itself, the worker's traceback as its cause.

    An exception that cannot be pickled is replaced by a ``RuntimeError`` naming it.
    """

    __slots__ = ("exc", "text")

    def __init__(self, exc: BaseException) -> None:
        import traceback

        self.text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            pickle.dumps(exc)
            self.exc = exc
        except Exception:
            self.exc = RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")

    def rebuild(self) -> BaseException:
        """The exception, the worker's traceback as its cause (what unpickling gives)."""
        return _rebuild_failure(self.exc, self.text)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_failure, (self.exc, self.text)
