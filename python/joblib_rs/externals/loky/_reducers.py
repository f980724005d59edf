"""Tasks pickled with custom reducers, as loky's ``job_reducers`` / ``result_reducers``.

::

    parent: ReducedCall(fn, args, kwargs, job_reducers, result_reducers)
              .__reduce__ ─► cloudpickle with job_reducers ─► bytes
    worker: call() ─► fn(*args, **kwargs) ─► ReducedValue(result, result_reducers)
              .__reduce__ ─► cloudpickle with result_reducers ─► bytes ─► parent: the value

The Rust pool sends and receives plain pickles; a table of reducers is applied by pickling
the payload once more, inside, with a pickler that consults the table first.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import cloudpickle

__all__ = ["ReducedCall", "ReducedValue", "dumps_with_reducers"]


class _TablePickler(cloudpickle.Pickler):
    """cloudpickle, with ``{type: reducer}`` consulted first (exact type match)."""

    def __init__(self, file: io.BytesIO, reducers: dict[type, Any]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._reducers = reducers

    def reducer_override(self, obj: Any) -> Any:
        reducer = self._reducers.get(type(obj))
        if reducer is not None:
            return reducer(obj)
        return super().reducer_override(obj)


def dumps_with_reducers(obj: Any, reducers: dict[type, Any]) -> bytes:
    """Pickle ``obj``, the objects whose type is in ``reducers`` reduced by their reducer."""
    buffer = io.BytesIO()
    _TablePickler(buffer, reducers).dump(obj)
    return buffer.getvalue()


class ReducedValue:
    """A worker's result, pickled with the executor's result reducers."""

    __slots__ = ("reducers", "value")

    def __init__(self, value: Any, reducers: dict[type, Any]) -> None:
        self.value = value
        self.reducers = reducers

    def __reduce__(self) -> tuple[Any, ...]:
        return pickle.loads, (dumps_with_reducers(self.value, self.reducers),)


class ReducedCall:
    """``fn(*args, **kwargs)`` sent with the job reducers; its result comes back with the
    result reducers."""

    __slots__ = ("args", "fn", "job_reducers", "kwargs", "result_reducers")

    def __init__(
        self,
        fn: Any,
        args: tuple,
        kwargs: dict[str, Any],
        job_reducers: dict[type, Any],
        result_reducers: dict[type, Any],
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.job_reducers = job_reducers
        self.result_reducers = result_reducers

    def __call__(self) -> Any:
        value = self.fn(*self.args, **self.kwargs)
        if self.result_reducers:
            return ReducedValue(value, self.result_reducers)
        return value

    def __reduce__(self) -> tuple[Any, ...]:
        # The result reducers travel with the call (plain cloudpickle: they are functions).
        payload = dumps_with_reducers(
            (self.fn, self.args, self.kwargs, self.result_reducers), self.job_reducers
        )
        return _rebuild_call, (payload,)


def _rebuild_call(payload: bytes) -> ReducedCall:
    fn, args, kwargs, result_reducers = pickle.loads(payload)
    return ReducedCall(fn, args, kwargs, {}, result_reducers)
