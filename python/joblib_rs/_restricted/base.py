"""The contract between the Rust unpickler and the policy, and the checks every part shares.

``unpickle`` hands a pickle to the VM (``crates/joblib-py/src/unpickle.rs``) with a loader;
the VM asks ``loader.resolve(module, name, proto)`` for each global and gets a
:class:`Resolved` back: what ``REDUCE``, ``NEWOBJ`` and ``BUILD`` may do with that name. A
refusal is a :class:`pickle.UnpicklingError`; any other error while decoding is reported as
a damaged file. :func:`_args`, :func:`_shape` and :func:`_count` check constructor arguments.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from joblib_rs._restricted.loader import Loader

_MAX_DIMS = 64


def _refuse(msg: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(msg)


class Resolved:
    """What a global of the file stands for in this load.

    ``call`` is what ``REDUCE`` calls, ``value`` what the global is as data (when
    ``has_value``), ``new`` what ``NEWOBJ``/``INST``/``OBJ`` call, ``build`` what ``BUILD``
    applies to objects made from it (``build(obj, state, stream) -> obj``), and
    ``freeze_on_use`` forbids ``BUILD`` on an object already used as data.
    """

    __slots__ = ("build", "call", "freeze_on_use", "has_value", "new", "value")

    def __init__(
        self,
        *,
        call: Callable[..., Any] | None = None,
        value: Any = None,
        has_value: bool = False,
        new: Callable[..., Any] | None = None,
        build: Callable[..., Any] | None = None,
        freeze_on_use: bool = False,
    ) -> None:
        self.call = call
        self.value = value
        self.has_value = has_value
        self.new = new
        self.build = build
        self.freeze_on_use = freeze_on_use


# ---------------------------------------------------------------------------------------------
# Argument checks


def _args(name: str, args: tuple[Any, ...], *allowed: tuple[type | tuple[type, ...], ...]) -> None:
    """Refuse unless ``args`` matches one of the ``allowed`` type signatures exactly."""
    for sig in allowed:
        if len(sig) == len(args) and all(
            (isinstance(a, t) and not isinstance(a, bool)) or (t is bool and isinstance(a, bool))
            for a, t in zip(args, sig, strict=True)
        ):
            return
    got = ", ".join(type(a).__name__ for a in args)
    raise _refuse(f"{name}({got}) is not a data-only call: refused in a restricted load")


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _shape(name: str, shape: Any) -> tuple[int, ...]:
    if _int(shape):
        shape = (shape,)
    if (
        not isinstance(shape, tuple)
        or len(shape) > _MAX_DIMS
        or not all(_int(s) and s >= 0 for s in shape)
    ):
        raise _refuse(f"{name}: bad array shape {shape!r}")
    return shape


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _value(obj: Any) -> Resolved:
    return Resolved(value=obj, has_value=True)


def _ctor(call: Callable[..., Any], value: Any = None) -> Resolved:
    return Resolved(call=call, value=value, has_value=value is not None)


def _is_dunder(part: str) -> bool:
    return part.startswith("__") and part.endswith("__")


def unpickle(
    data: Any,
    loader: Loader,
    buffers: Iterable[Any] | None = None,
    start: int = 0,
    file_offset: int | None = None,
) -> tuple[Any, int]:
    """Decode the pickle at ``start`` of ``data`` under ``loader``: ``(object, end)``.

    Refusals raise :class:`pickle.UnpicklingError`; anything else that goes wrong while
    decoding (a constructor given arguments of the right types but bad values, text that
    is not UTF-8...) means the file is damaged and raises ``CorruptFileError``.
    """
    from joblib_rs._core import CorruptFileError
    from joblib_rs._core import unpickle as _unpickle

    try:
        return _unpickle(data, loader, buffers, start, file_offset)
    except pickle.UnpicklingError:
        raise
    except (ValueError, TypeError, ArithmeticError, LookupError, AttributeError, EOFError) as exc:
        raise CorruptFileError(f"file is damaged: {type(exc).__name__}: {exc}") from exc
