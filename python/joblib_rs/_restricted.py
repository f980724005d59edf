"""What a restricted ``load(..., allowed=...)`` may build: the policy of the Rust unpickler.

``joblib_rs._core.unpickle`` runs the pickle opcodes itself (``crates/joblib-py/src/
unpickle.rs``): containers, numbers, strings and bytes are built without naming anything.
For every global the file names it asks :meth:`Loader.resolve`, which answers with a
:class:`Resolved` or raises :class:`pickle.UnpicklingError`::

    file ── GLOBAL numpy dtype ──► Loader.resolve ──► Resolved(call=_dtype_new,
                                                               build=_dtype_build)
         ── REDUCE ──────────────► _dtype_new("f8", False, True)     (validating constructor)
         ── BUILD ───────────────► _dtype_build(dtype, state, stream)  (validated setstate)

``allowed="safe"`` is data only: the safe set below maps each name to a constructor of ours
that checks its arguments (types, lengths, shapes, dtypes) before building anything, so no
callable of the file's choosing ever runs. A user allow-list adds exact globals or the
classes of a package (see :class:`Rules`); their own code is trusted. The threat model is
in ``docs/security.md``.
"""

from __future__ import annotations

import _compat_pickle
import collections
import datetime
import decimal
import fractions
import importlib
import keyword
import pickle
import sys
import types
import warnings
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Loader", "Rules", "TrustedLoader", "rules_for", "unpickle"]

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


_SEQUENCES = (list, tuple, set, frozenset)
_NUMBERS = (int, float)
_LATIN1 = ("latin1", "latin-1")


# ---------------------------------------------------------------------------------------------
# The safe set: builtins, stdlib data types


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


def _value(obj: Any) -> Resolved:
    return Resolved(value=obj, has_value=True)


def _ctor(call: Callable[..., Any], value: Any = None) -> Resolved:
    return Resolved(call=call, value=value, has_value=value is not None)


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


# ---------------------------------------------------------------------------------------------
# numpy: dtypes and arrays, validated before numpy sees them

_DATETIME_UNITS = frozenset("Y M W D h m s ms us ns ps fs as generic \u03bcs".split())


def _np() -> Any:
    import numpy as np

    return np


def _safe_dtype(np: Any, dtype: Any, where: str, allow_object: bool) -> Any:
    if not isinstance(dtype, np.dtype):
        raise _refuse(f"{where}: {type(dtype).__name__} is not a numpy dtype")
    if dtype.hasobject and not allow_object:
        raise _refuse(
            f"{where}: object dtype {dtype} refused by load(..., allowed='safe') (object "
            "arrays hold pointers, not data)"
        )
    return dtype


class _Wrapper:
    """Stands for joblib's ``NumpyArrayWrapper`` until its BUILD reads the array data."""

    __slots__ = ()


class Loader:
    """One restricted load: the rules, and what the file's arrays need (file, mmap mode)."""

    def __init__(
        self,
        rules: Rules,
        filename: str | None = None,
        mmap_mode: str | None = None,
        ensure_native: bool = False,
    ) -> None:
        self.rules = rules
        self.generic = rules.generic
        #: Types besides list that APPENDS may extend (deque pickles its items that way).
        self.appendable = (collections.deque,)
        self.filename = filename
        self.mmap_mode = "r+" if mmap_mode == "w+" else mmap_mode
        self.ensure_native = ensure_native
        #: A decoded stream this load owns (a whole-file compressed file decoded into a
        #: ``bytearray`` nobody else holds): its arrays are views of it, not copies.
        self.viewable: Any = None
        self._user_classes: set[int] = set()

    # -- names ------------------------------------------------------------------------------

    def resolve(self, module: str, name: str, proto: int) -> Resolved:
        """The meaning of global ``module.name`` (pickle protocol ``proto``), or refuse."""
        if proto < 3:
            module, name = _fix_import(module, name)
        full = f"{module}.{name}"
        fmt = self._format_global(full)
        if fmt is not None:
            return fmt
        if self.rules.safe:
            safe = _STDLIB_SAFE.get(full) or self._numpy_global(module, name)
            if safe is not None:
                return safe
        return self._user_global(module, name, full)

    def _format_global(self, full: str) -> Resolved | None:
        """Globals of the file formats themselves (arrays from their own data): always on."""
        if full == "joblib_rs.numpy_pickle._rebuild_array":
            return Resolved(call=self._rebuild_array)
        if full == "joblib.numpy_pickle.NumpyArrayWrapper":
            return Resolved(new=_Wrapper, build=self._wrapper_build, freeze_on_use=True)
        if full in ("numpy.dtype", "numpy.ndarray", "numpy.memmap"):
            return self._numpy_global(*full.rsplit(".", 1))
        if full == "copyreg._reconstructor":
            return Resolved(call=self._reconstructor, build=self._build_reconstructed)
        return None

    def _numpy_global(self, module: str, name: str) -> Resolved | None:
        if module != "numpy" and not module.startswith("numpy."):
            return None
        np = _np()
        if module == "numpy" and name == "dtype":
            return Resolved(call=self._dtype_new, build=self._dtype_build, freeze_on_use=True)
        if module == "numpy" and name in ("ndarray", "memmap"):
            return _value(getattr(np, name))
        core = ("numpy.core.multiarray", "numpy._core.multiarray")
        if module in core and name == "_reconstruct":
            return Resolved(call=self._array_new, build=self._array_build, freeze_on_use=True)
        if module in core and name == "scalar":
            return Resolved(call=self._scalar)
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return Resolved(call=self._frombuffer)
        if module == "numpy" and name.isidentifier() and not name.startswith("_"):
            # Scalar types (numpy.float64...) as values, e.g. an estimator's dtype parameter.
            obj = vars(np).get(name)
            if isinstance(obj, type) and issubclass(obj, np.generic) and obj is not np.object_:
                return _value(obj)
        return None

    def _user_global(self, module: str, name: str, full: str) -> Resolved:
        rules = self.rules
        exact = full in rules.exact
        package = next(
            (p for p in rules.packages if module == p or module.startswith(p + ".")), None
        )
        if not exact and package is None:
            raise _refuse(
                f"global '{full}' is forbidden by load(..., allowed={rules.spec!r}): "
                f"{rules.why_not(full)}; add '{full}' to allowed if this file is trusted"
            )
        parts = name.split(".")
        for part in [*module.split("."), *parts]:
            if not part.isidentifier() or keyword.iskeyword(part) or _is_dunder(part):
                raise _refuse(
                    f"global '{full}' is forbidden by load(..., allowed={rules.spec!r}): "
                    f"'{part}' is not a plain name (no dunder names, no attribute tricks)"
                )
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise _refuse(
                f"global '{full}': module '{module}' cannot be imported: {exc}"
            ) from None
        obj: Any = mod
        for i, part in enumerate(parts):
            members = vars(obj)
            if part not in members:
                raise _refuse(f"global '{full}' is not a member of module '{module}'")
            obj = members[part]
            if i < len(parts) - 1 and not isinstance(obj, type):
                raise _refuse(
                    f"global '{full}' is forbidden: '{part}' is not a class (no attribute "
                    "chains through other objects)"
                )
        if isinstance(obj, types.ModuleType):
            raise _refuse(f"global '{full}' is a module: modules are never allowed")
        defined_in = getattr(obj, "__module__", None)
        if not exact:
            if not isinstance(obj, type):
                raise _refuse(
                    f"global '{full}' is forbidden by load(..., allowed={rules.spec!r}): "
                    f"the wildcard '{package}.*' allows classes only, and this is a "
                    f"{type(obj).__name__}; list '{full}' exactly to allow it"
                )
            if defined_in != module:
                raise _refuse(
                    f"global '{full}' is forbidden by load(..., allowed={rules.spec!r}): the "
                    f"class is defined in '{defined_in}', not in '{module}'"
                )
        elif isinstance(defined_in, str) and defined_in != module:
            raise _refuse(
                f"global '{full}' is forbidden by load(..., allowed={rules.spec!r}): it is "
                f"'{defined_in}.{getattr(obj, '__qualname__', name)}', reached through "
                f"another module"
            )
        if isinstance(obj, type):
            self._user_classes.add(id(obj))
            cls = obj
            return Resolved(
                call=cls,
                value=cls,
                has_value=True,
                new=lambda *a, **k: cls.__new__(cls, *a, **k),
                build=self._build_instance,
            )
        return Resolved(call=obj, value=obj, has_value=True, build=self._build_instance)

    # -- instances of user classes ----------------------------------------------------------

    def _build_instance(self, obj: Any, state: Any, stream: Any) -> Any:
        """BUILD as pickle does it, on instances only: never a class, module or function."""
        if isinstance(obj, _NOT_INSTANCES):
            raise _refuse(
                f"BUILD on {obj!r} refused: state is set on instances only, never on a class, "
                "module or function"
            )
        return _pickle_build(obj, state, stream)

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        """``copyreg._reconstructor`` (protocols 0-1) for allowed classes only."""
        if cls is _Wrapper and base is object and state is None:
            return _Wrapper()
        if not isinstance(cls, type) or id(cls) not in self._user_classes:
            raise _refuse(f"copyreg._reconstructor of {cls!r} refused in a restricted load")
        if base is object:
            return object.__new__(cls)
        if base not in (dict, list, set, tuple, int, float, str, bytes, frozenset):
            raise _refuse(f"copyreg._reconstructor with base {base!r} refused")
        obj = base.__new__(cls, state)
        if base.__init__ is not object.__init__:
            base.__init__(obj, state)
        return obj

    def _build_reconstructed(self, obj: Any, state: Any, stream: Any) -> Any:
        if isinstance(obj, _Wrapper):
            return self._wrapper_build(obj, state, stream)
        return self._build_instance(obj, state, stream)

    # -- numpy ------------------------------------------------------------------------------

    def _dtype_new(self, *args: Any) -> Any:
        _args("numpy.dtype", args, (str,), (str, bool), (str, bool, bool))
        code = args[0]
        if not code.isascii() or not code.isalnum() or len(code) > 16:
            raise _refuse(f"numpy.dtype({code!r}) refused in a restricted load")
        allow_object = self.rules.allow_object
        if "O" in code and not allow_object:
            raise _refuse(
                f"numpy.dtype({code!r}): object dtype refused by load(..., allowed='safe') "
                "(object arrays hold pointers, not data)"
            )
        np = _np()
        try:
            # copy=True always: BUILD must never change numpy's shared builtin dtypes.
            dtype = np.dtype(code, bool(args[1]) if len(args) > 1 else False, True)
        except (TypeError, ValueError) as exc:
            raise _refuse(f"numpy.dtype({code!r}): {exc}") from None
        return _safe_dtype(np, dtype, "numpy.dtype", allow_object)

    def _dtype_build(self, dtype: Any, state: Any, stream: Any) -> Any:
        np = _np()
        where = f"numpy dtype state for {dtype}"
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise _refuse(f"{where}: not an 8 or 9-tuple")
        version, order, sub, names, fields, elsize, align, flags = state[:8]
        ok = (
            version in (3, 4)
            and order in ("<", ">", "|", "=")
            and all(_int(x) and -1 <= x < 1 << 31 for x in (elsize, align))
            and _int(flags)
            and 0 <= flags < 1 << 16
        )
        if not ok:
            raise _refuse(f"{where}: bad header {state[:2]!r} {state[5:8]!r}")
        if sub is not None:
            if not (isinstance(sub, tuple) and len(sub) == 2):
                raise _refuse(f"{where}: bad subarray")
            _safe_dtype(np, sub[0], where, self.rules.allow_object)
            _shape(where, sub[1])
        if names is not None or fields is not None:
            if not (isinstance(names, tuple) and isinstance(fields, dict)):
                raise _refuse(f"{where}: bad fields")
            if not all(isinstance(n, str) for n in names) or not set(names) <= set(fields):
                raise _refuse(f"{where}: field names do not match the fields")
            for key, info in fields.items():
                if not (
                    isinstance(info, tuple)
                    and len(info) in (2, 3)
                    and _int(info[1])
                    and info[1] >= 0
                ):
                    raise _refuse(f"{where}: bad field {key!r}")
                _safe_dtype(np, info[0], where, self.rules.allow_object)
        if len(state) == 9:
            meta = state[8]
            if meta is not None and not (
                isinstance(meta, tuple)
                and len(meta) == 2
                and (meta[0] is None or isinstance(meta[0], dict))
                and _datetime_meta(meta[1])
            ):
                raise _refuse(f"{where}: bad metadata")
        try:
            dtype.__setstate__(state)
        except (TypeError, ValueError) as exc:
            raise _refuse(f"{where}: {exc}") from None
        # What numpy built must hold together: no objects, fields inside the item.
        _safe_dtype(np, dtype, where, self.rules.allow_object)
        _check_layout(dtype, where)
        return dtype

    def _array_new(self, *args: Any) -> Any:
        np = _np()
        if len(args) != 3 or args[0] not in (np.ndarray, np.memmap):
            raise _refuse("numpy _reconstruct: only numpy.ndarray is rebuilt this way")
        return np.ndarray.__new__(np.ndarray, (0,), "b")

    def _array_build(self, array: Any, state: Any, stream: Any) -> Any:
        np = _np()
        where = "numpy array state"
        if not isinstance(state, tuple) or len(state) != 5 or not _int(state[0]):
            raise _refuse(f"{where}: not a (version, shape, dtype, fortran, data) tuple")
        _version, shape, dtype, fortran, raw = state
        shape = _shape(where, shape)
        _safe_dtype(np, dtype, where, self.rules.allow_object)
        if not isinstance(fortran, (bool, int)):
            raise _refuse(f"{where}: bad order flag")
        n = _count(shape)
        if dtype.hasobject:
            if not isinstance(raw, list) or len(raw) != n:
                raise _refuse(f"{where}: an object array needs a list of {n} items")
        elif not isinstance(raw, (bytes, bytearray)) or len(raw) != n * dtype.itemsize:
            size = len(raw) if isinstance(raw, (bytes, bytearray)) else type(raw).__name__
            raise _refuse(f"{where}: {n * dtype.itemsize} data bytes expected, got {size}")
        array.__setstate__((1, shape, dtype, bool(fortran), raw))
        return array

    def _from_buffer(self, where: str, buf: Any, dtype: Any, shape: Any, order: Any) -> Any:
        np = _np()
        shape = _shape(where, shape)
        _safe_dtype(np, dtype, where, False)
        if order not in ("C", "F"):
            raise _refuse(f"{where}: bad order {order!r}")
        if isinstance(buf, (bytes, bytearray)):
            nbytes = len(buf)
        elif isinstance(buf, (np.ndarray, memoryview)) and (
            isinstance(buf, memoryview) or buf.dtype == np.uint8
        ):
            nbytes = buf.nbytes
        else:
            raise _refuse(f"{where}: array data must come from the file, not a {type(buf)}")
        if nbytes != _count(shape) * dtype.itemsize:
            raise _refuse(
                f"{where}: {_count(shape) * dtype.itemsize} bytes expected for shape "
                f"{shape} of {dtype}, the file holds {nbytes}"
            )
        return shape

    def _rebuild_array(self, *args: Any) -> Any:
        if len(args) != 4:
            raise _refuse("joblib-rs array: bad arguments")
        buf, dtype, shape, order = args
        shape = self._from_buffer("joblib-rs array", buf, dtype, shape, order)
        from joblib_rs.numpy_pickle import _rebuild_array

        return _rebuild_array(buf, dtype, shape, order)

    def _frombuffer(self, *args: Any) -> Any:
        if len(args) != 4:
            raise _refuse("numpy _frombuffer: bad arguments")
        buf, dtype, shape, order = args
        shape = self._from_buffer("numpy _frombuffer", buf, dtype, shape, order)
        np = _np()
        if dtype.itemsize == 0:
            return np.empty(shape, dtype=dtype, order=order)
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)

    def _scalar(self, *args: Any) -> Any:
        np = _np()
        if len(args) != 2:
            raise _refuse("numpy scalar: bad arguments")
        dtype, data = args
        _safe_dtype(np, dtype, "numpy scalar", False)
        if not isinstance(data, bytes) or len(data) != dtype.itemsize or not data:
            raise _refuse(f"numpy scalar: {dtype.itemsize} bytes expected for {dtype}")
        return np.frombuffer(data, dtype=dtype).copy()[0]

    def _array_subclass_ok(self, cls: Any) -> bool:
        return (
            isinstance(cls, type)
            and id(cls) in self._user_classes
            and issubclass(cls, _np().ndarray)
        )

    def _wrapper_build(self, wrapper: Any, state: Any, stream: Any) -> Any:
        """joblib's NumpyArrayWrapper: the array's bytes follow the BUILD opcode."""
        np = _np()
        where = "joblib array wrapper"
        if not isinstance(wrapper, _Wrapper) or not isinstance(state, dict):
            raise _refuse(f"{where}: bad state")
        subclass = state.get("subclass", np.ndarray)
        dtype = state.get("dtype")
        order = state.get("order", "C")
        shape = _shape(where, state.get("shape"))
        _safe_dtype(np, dtype, where, self.rules.allow_object)
        if order not in ("C", "F"):
            raise _refuse(f"{where}: bad order {order!r}")
        if subclass not in (np.ndarray, np.memmap) and not self._array_subclass_ok(subclass):
            raise _refuse(f"{where}: array subclass {subclass!r} is not allowed")
        data = stream.data
        pos = stream.pos + 1  # just after the BUILD opcode
        if dtype.hasobject:
            array, end = unpickle(data, self, None, pos, stream.file_offset)
            if not isinstance(array, np.ndarray) or array.dtype != dtype:
                raise _refuse(f"{where}: the object array's pickle holds {type(array)}")
            stream.pos = end
            return array
        view = memoryview(data).cast("B")
        if "numpy_array_alignment_bytes" in state:
            if pos >= len(view) or view[pos] > 64:
                raise _refuse(f"{where}: bad alignment padding")
            pos += 1 + view[pos]
        nbytes = _count(shape) * dtype.itemsize
        if pos + nbytes > len(view):
            from joblib_rs._core import CorruptFileError

            raise CorruptFileError(
                f"file is truncated or damaged: array of {nbytes} bytes with "
                f"{len(view) - pos} bytes left in the file"
            )
        if (
            self.mmap_mode is not None
            and state.get("allow_mmap", False)
            and self.filename
            and stream.file_offset is not None
            and nbytes
        ):
            array = np.memmap(
                self.filename,
                dtype=dtype,
                mode=self.mmap_mode,
                offset=stream.file_offset + pos,
                shape=shape,
                order=order,
            )
            if "numpy_array_alignment_bytes" not in state and (stream.file_offset + pos) % 16:
                # As joblib: files of joblib < 1.2 do not align their arrays.
                warnings.warn(
                    f"The memmapped array {array} loaded from the file {self.filename} is not "
                    "byte aligned. This may cause segmentation faults if this memmapped array "
                    "is used in some libraries like BLAS or PyTorch. To get rid of this "
                    "warning, regenerate your pickle file with joblib >= 1.2.0. See "
                    "https://github.com/joblib/joblib/issues/563 for more details",
                    stacklevel=2,
                )
        else:
            if nbytes and data is self.viewable and pos % dtype.alignment == 0:
                # The decoded stream is ours alone: a (writable) view instead of a copy.
                flat = np.frombuffer(data, dtype=dtype, count=_count(shape), offset=pos)
            else:
                flat = np.empty(_count(shape), dtype=dtype)
                if nbytes:
                    flat.view(np.uint8)[:] = view[pos : pos + nbytes]
            array = flat.reshape(shape[::-1]).T if order == "F" else flat.reshape(shape)
            if self.ensure_native and not array.dtype.isnative and array.dtype.byteorder != "|":
                array = array.byteswap().view(array.dtype.newbyteorder("="))
        stream.pos = pos + nbytes  # the VM resumes after the array's data
        if subclass not in (np.ndarray, np.memmap):
            array = array.view(subclass)
        return array


#: Array wrappers of joblib < 0.10 (array data in separate files).
_OLD_WRAPPERS = frozenset(
    {"joblib.numpy_pickle.NDArrayWrapper", "joblib.numpy_pickle.ZNDArrayWrapper"}
)


class OldJoblibFormat(Exception):
    """The pickle is one of joblib < 0.10 (``_compat`` reads those another way)."""


class TrustedLoader(Loader):
    """An unrestricted load (``allowed=None``) of a joblib file: pickle's own semantics.

    Every global is imported and used as ``pickle.Unpickler.find_class`` would; only
    joblib's array wrappers are special (their data follows in the file, read or mapped
    here). This is the fast reader of joblib's files: nothing is checked that the trusted
    file could abuse, exactly as with ``pickle.load``.
    """

    def __init__(
        self,
        filename: str | None = None,
        mmap_mode: str | None = None,
        ensure_native: bool = False,
    ) -> None:
        super().__init__(_TRUSTED, filename, mmap_mode, ensure_native)

    def resolve(self, module: str, name: str, proto: int) -> Resolved:
        if proto < 3:
            module, name = _fix_import(module, name)
        full = f"{module}.{name}"
        if full == "joblib.numpy_pickle.NumpyArrayWrapper":
            return Resolved(new=_Wrapper, build=self._wrapper_build)
        if full in _OLD_WRAPPERS:
            raise OldJoblibFormat(full)
        if full == "copyreg._reconstructor":
            return Resolved(call=self._reconstructor, build=self._build_reconstructed)
        __import__(module)
        obj: Any = sys.modules[module]
        for part in name.split(".") if proto >= 4 else [name]:
            obj = getattr(obj, part)
        cls = obj
        return Resolved(
            call=obj,
            value=obj,
            has_value=True,
            new=lambda *a, **k: cls.__new__(cls, *a, **k),
            build=_pickle_build,
        )

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        if cls is _Wrapper:
            return _Wrapper()
        import copyreg

        return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]

    def _build_reconstructed(self, obj: Any, state: Any, stream: Any) -> Any:
        if isinstance(obj, _Wrapper):
            return self._wrapper_build(obj, state, stream)
        return _pickle_build(obj, state, stream)

    def _array_subclass_ok(self, cls: Any) -> bool:
        return isinstance(cls, type) and issubclass(cls, _np().ndarray)


def _pickle_build(obj: Any, state: Any, stream: Any) -> Any:
    """BUILD as ``pickle`` does it: ``__setstate__``, else the instance dict and slots."""
    setstate = getattr(obj, "__setstate__", None)
    if setstate is not None and not _is_object_setstate(type(obj)):
        setstate(state)
        return obj
    slotstate = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slotstate = state
    bad_state = state and not isinstance(state, dict)
    if bad_state or (slotstate and not isinstance(slotstate, dict)):
        raise _refuse(f"BUILD state of {type(obj).__name__} is not a dict")
    if state:
        inst_dict = obj.__dict__
        for k, v in state.items():
            inst_dict[sys.intern(k) if type(k) is str else k] = v
    if slotstate:
        for k, v in slotstate.items():
            setattr(obj, k, v)
    return obj


def _datetime_meta(meta: Any) -> bool:
    if not (isinstance(meta, tuple) and len(meta) == 4):
        return False
    unit = meta[0].decode("ascii", "replace") if isinstance(meta[0], bytes) else meta[0]
    return unit in _DATETIME_UNITS and all(_int(x) and 0 <= x < 1 << 31 for x in meta[1:])


def _check_layout(dtype: Any, where: str) -> None:
    """Fields and subarrays of a dtype built from a file must fit inside its items."""
    if dtype.fields:
        for info in dtype.fields.values():
            field, offset = info[0], info[1]
            if offset < 0 or offset + field.itemsize > dtype.itemsize:
                raise _refuse(f"{where}: field at offset {offset} overflows the item")
            _check_layout(field, where)
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        if base.itemsize * _count(shape) != dtype.itemsize:
            raise _refuse(f"{where}: subarray size does not match the item size")
        _check_layout(base, where)


_NOT_INSTANCES = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
)


def _is_object_setstate(cls: type) -> bool:
    return getattr(cls, "__setstate__", None) is getattr(object, "__setstate__", None)


def _is_dunder(part: str) -> bool:
    return part.startswith("__") and part.endswith("__")


def _fix_import(module: str, name: str) -> tuple[str, str]:
    """Python 2 names as pickle's ``fix_imports`` maps them."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


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


# ---------------------------------------------------------------------------------------------
# Rules: what the user's ``allowed`` says


class Rules:
    """A parsed ``allowed`` argument.

    ``"safe"`` turns on the safe set; ``"pkg.mod.Name"`` allows that one global, defined
    in ``pkg.mod``; ``"pkg.*"`` allows the classes defined in ``pkg`` or its submodules.
    """

    def __init__(self, spec: Any, safe: bool, exact: frozenset[str], packages: tuple[str, ...]):
        self.spec = spec
        self.safe = safe
        self.exact = exact
        self.packages = packages
        # Containers of user classes (their own append/__setitem__) and object arrays
        # built from element lists are allowed once the user allowed any code.
        self.generic = bool(exact or packages)
        self.allow_object = self.generic

    def why_not(self, full: str) -> str:
        if self.safe and not (self.exact or self.packages):
            return "not in the data-only safe set"
        return "not in the safe set and matched by no entry"


_RULES_CACHE: dict[tuple[str, ...], Rules] = {}
#: The rules of an unrestricted load: any global (see :class:`TrustedLoader`).
_TRUSTED = Rules(None, safe=False, exact=frozenset({"*"}), packages=())


def rules_for(allowed: Any) -> Rules | None:
    """Parse ``load``'s ``allowed`` argument (None: no restriction)."""
    if allowed is None:
        return None
    if isinstance(allowed, str):
        items: list[Any] = [allowed]
    elif isinstance(allowed, Iterable):
        items = list(allowed)
    else:
        raise TypeError(
            f"allowed must be None, 'safe' or a list of 'module.name' entries, got {allowed!r}"
        )
    key: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"allowed entries must be strings, got {item!r}")
        key.append(item)
    cached = _RULES_CACHE.get(tuple(key))
    if cached is not None:
        return cached
    safe = False
    exact: set[str] = set()
    packages: list[str] = []
    for item in key:
        if item == "safe":
            safe = True
            continue
        base = item[:-2] if item.endswith(".*") else item
        parts = base.split(".")
        if len(parts) < (1 if item.endswith(".*") else 2) or not all(
            p.isidentifier() and not _is_dunder(p) for p in parts
        ):
            raise ValueError(
                f"allowed entry {item!r} must be 'safe', 'module.name' (one global) or "
                "'package.*' (the classes defined in a package); no other wildcards, no "
                "dunder names"
            )
        if item.endswith(".*"):
            packages.append(base)
        else:
            exact.add(item)
    rules = Rules(allowed, safe, frozenset(exact), tuple(packages))
    if len(_RULES_CACHE) < 64:
        _RULES_CACHE[tuple(key)] = rules
    return rules
