"""numpy in a restricted load: names, dtypes and arrays, validated before numpy sees them.

``numpy.*`` globals resolve here (:meth:`ArrayConstructors._numpy_global`) to validating
constructors: a dtype from a short type code then a checked state, an array from a checked
``(shape, dtype, order, data)`` whose byte count must match, scalars from their bytes.
joblib's ``NumpyArrayWrapper`` is a placeholder whose ``BUILD`` reads (or maps, with
``mmap_mode``) the array data that follows it in the stream. :class:`ArrayConstructors` is
the numpy half of :class:`~joblib_rs._restricted.loader.Loader`, which holds the state used.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, cast

from joblib_rs._restricted.base import (
    Resolved,
    _args,
    _count,
    _int,
    _refuse,
    _shape,
    _value,
    unpickle,
)

if TYPE_CHECKING:
    from joblib_rs._restricted.loader import Loader
    from joblib_rs._restricted.rules import Rules

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


class ArrayConstructors:
    """The numpy constructors of a load (a base class of ``Loader``, which sets the state)."""

    rules: Rules
    filename: str | None
    mmap_mode: str | None
    ensure_native: bool
    viewable: Any
    _user_classes: set[int]

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

    def _dtype_new(self, *args: Any) -> Any:
        _args("numpy.dtype", args, (str,), (str, bool), (str, bool, bool))
        code = args[0]
        # numpy pickles a dtype as its kind and size ("f8", "V16"); a leading digit would make
        # numpy parse a comma string with ast.literal_eval (a compile; "01" a SyntaxError).
        if not code.isascii() or not code.isalnum() or len(code) > 16 or code[0].isdigit():
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
        if dtype.kind in "mM" and (len(state) != 9 or state[8] is None):
            # numpy writes a datetime's unit in the 9th item; without it numpy 2.4 crashes.
            raise _refuse(f"{where}: a datetime dtype's state must give its unit")
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
            loader = cast("Loader", self)  # always a Loader's (see the class docstring)
            array, end = unpickle(data, loader, None, pos, stream.file_offset)
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
