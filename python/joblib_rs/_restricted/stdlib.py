"""The safe set's builtins and stdlib data types: a validating constructor per name.

``Loader.resolve("datetime", "date")`` ─► ``_STDLIB_SAFE["datetime.date"]`` ─► the VM's
``REDUCE`` calls :func:`_date` with the file's arguments, which checks their types (exact
signatures, no bools for ints, latin-1 only for text to bytes) and only then builds the value.
Names with no arguments to check (``list``, ``dict``...) are values only, never called.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
from typing import Any

from joblib_rs._restricted.base import Resolved, _args, _ctor, _refuse, _value

_SEQUENCES = (list, tuple, set, frozenset)
_NUMBERS = (int, float)
_LATIN1 = ("latin1", "latin-1")


def _set(*args: Any) -> set[Any]:
    _args("set", args, (), (_SEQUENCES,))
    return set(*args)


def _frozenset(*args: Any) -> frozenset[Any]:
    _args("frozenset", args, (), (_SEQUENCES,))
    return frozenset(*args)


def _from_latin1(name: str, args: tuple[Any, ...]) -> bytes:
    _args(name, args, (), ((bytes, bytearray),), (str, str))
    if len(args) == 2:
        if args[1] not in _LATIN1:
            raise _refuse(f"{name}: encoding {args[1]!r} refused (only latin-1)")
        return args[0].encode("latin-1")
    return bytes(*args)


def _bytes(*args: Any) -> bytes:
    return _from_latin1("bytes", args)


def _bytearray(*args: Any) -> bytearray:
    return bytearray(_from_latin1("bytearray", args))


def _codecs_encode(*args: Any) -> bytes:
    _args("_codecs.encode", args, (str, str))
    if args[1] not in _LATIN1:
        raise _refuse(f"_codecs.encode: encoding {args[1]!r} refused (only latin-1)")
    return args[0].encode("latin-1")


def _complex(*args: Any) -> complex:
    _args("complex", args, (_NUMBERS,), (_NUMBERS, _NUMBERS))
    return complex(*args)


def _range(*args: Any) -> range:
    _args("range", args, (int,), (int, int), (int, int, int))
    return range(*args)


def _slice(*args: Any) -> slice:
    scalar = (int, type(None))
    _args("slice", args, (scalar,), (scalar, scalar), (scalar, scalar, scalar))
    return slice(*args)


def _tz(x: Any) -> bool:
    return x is None or isinstance(x, datetime.timezone)


def _date(*args: Any) -> datetime.date:
    _args("datetime.date", args, (bytes,), (int, int, int))
    return datetime.date(*args)


def _datetime(*args: Any) -> datetime.datetime:
    if len(args) == 2 and isinstance(args[0], bytes) and _tz(args[1]):
        return datetime.datetime(*args)
    _args("datetime.datetime", args, (bytes,), *[(int,) * n for n in range(3, 8)])
    return datetime.datetime(*args)


def _time(*args: Any) -> datetime.time:
    if len(args) == 2 and isinstance(args[0], bytes) and _tz(args[1]):
        return datetime.time(*args)
    _args("datetime.time", args, (bytes,), *[(int,) * n for n in range(0, 5)])
    return datetime.time(*args)


def _timedelta(*args: Any) -> datetime.timedelta:
    _args("datetime.timedelta", args, *[(_NUMBERS,) * n for n in range(0, 4)])
    return datetime.timedelta(*args)


def _timezone(*args: Any) -> datetime.timezone:
    _args("datetime.timezone", args, (datetime.timedelta,), (datetime.timedelta, str))
    return datetime.timezone(*args)


def _decimal(*args: Any) -> decimal.Decimal:
    _args("decimal.Decimal", args, (), (str,), (int,), (tuple,))
    return decimal.Decimal(*args)


def _fraction(*args: Any) -> fractions.Fraction:
    _args("fractions.Fraction", args, (str,), (int,), (int, int))
    return fractions.Fraction(*args)


def _ordered_dict(*args: Any) -> collections.OrderedDict[Any, Any]:
    _args("collections.OrderedDict", args, (), (list,), (dict,))
    return collections.OrderedDict(*args)


def _counter(*args: Any) -> collections.Counter[Any]:
    _args("collections.Counter", args, (), (dict,))
    out: collections.Counter[Any] = collections.Counter()
    if args:
        dict.update(out, args[0])
    return out


_FACTORIES = (None, list, dict, set, frozenset, tuple, int, float, complex, str, bytes)


def _defaultdict(*args: Any) -> collections.defaultdict[Any, Any]:
    if args and not any(args[0] is f for f in _FACTORIES):
        raise _refuse(
            f"collections.defaultdict: default factory {args[0]!r} refused in a restricted load "
            "(only None and builtin container or number types)"
        )
    _args("collections.defaultdict", args[1:], (), (dict,))
    return collections.defaultdict(*args)


def _deque(*args: Any) -> collections.deque[Any]:
    seq = (list, tuple)
    _args("collections.deque", args, (), (seq,), (seq, int), (seq, type(None)))
    return collections.deque(*args)


_STDLIB_SAFE: dict[str, Resolved] = {
    "builtins.set": _ctor(_set, set),
    "builtins.frozenset": _ctor(_frozenset, frozenset),
    "builtins.bytes": _ctor(_bytes, bytes),
    "builtins.bytearray": _ctor(_bytearray, bytearray),
    "builtins.complex": _ctor(_complex, complex),
    "builtins.range": _ctor(_range, range),
    "builtins.slice": _ctor(_slice, slice),
    "builtins.list": _value(list),
    "builtins.dict": _value(dict),
    "builtins.tuple": _value(tuple),
    "builtins.int": _value(int),
    "builtins.float": _value(float),
    "builtins.str": _value(str),
    "builtins.bool": _value(bool),
    "builtins.object": _value(object),
    "_codecs.encode": _ctor(_codecs_encode),
    "datetime.date": _ctor(_date, datetime.date),
    "datetime.datetime": _ctor(_datetime, datetime.datetime),
    "datetime.time": _ctor(_time, datetime.time),
    "datetime.timedelta": _ctor(_timedelta, datetime.timedelta),
    "datetime.timezone": _ctor(_timezone, datetime.timezone),
    "decimal.Decimal": _ctor(_decimal, decimal.Decimal),
    "fractions.Fraction": _ctor(_fraction, fractions.Fraction),
    "collections.OrderedDict": _ctor(_ordered_dict, collections.OrderedDict),
    "collections.Counter": _ctor(_counter, collections.Counter),
    "collections.defaultdict": _ctor(_defaultdict, collections.defaultdict),
    "collections.deque": _ctor(_deque, collections.deque),
}
