"""Hashing of Python objects: a fast canonical digest, and joblib's own digests.

Two algorithms live here:

- ``hash(obj)`` (``hash_name='xxh3'``, the default): the object graph is walked by the Rust core
  (``joblib_rs._core``) and a canonical, versioned encoding is digested (specified in
  ``docs/hashing.md``). The value is the same in every process and session, whatever the dict
  insertion order, the memory layout of an array, or ``PYTHONHASHSEED``.
- ``hash(obj, hash_name='md5' | 'sha1')``, :class:`Hasher` and :class:`NumpyHasher`: joblib's
  algorithm, which digests a protocol-3 pickle stream with a few rewrites (sorted dict items and
  set elements, no memo for strings, raw data for numpy arrays, methods by name). These values
  are the very digests joblib returns, so fingerprints stored by joblib stay valid.
"""

from __future__ import annotations

import decimal
import hashlib
import io
import pickle
import sys
import types
from collections.abc import Iterable
from typing import Any

from joblib_rs import _core

__all__ = ["HASH_NAMES", "Hasher", "NumpyHasher", "Pickler", "hash"]

#: Digest names accepted by :func:`hash`; the first one is the default.
HASH_NAMES: tuple[str, ...] = ("xxh3", "md5", "sha1")

#: The pure-Python pickler joblib's hashers derive from (its methods can be overridden, which
#: the C ``pickle.Pickler`` does not allow for ``save``).
Pickler = pickle._Pickler  # type: ignore[attr-defined]

#: Pickle protocol of joblib's digests: fixed, so a digest does not change with the default
#: protocol of newer Pythons.
_HASH_PROTOCOL = 3

#: Module written into the stream for the helper classes below. joblib's digests name its own
#: helper classes ``joblib.hashing._ConsistentSet`` / ``joblib.hashing._MyHash``; writing the
#: same global reference is what makes the digests equal.
_WIRE_MODULE = "joblib.hashing"


class _SortedSet:
    """Stand-in pickled for a ``set``: its elements in an order that does not depend on
    insertion or on the interpreter's hash seed (as far as the elements are orderable)."""

    _wire_name = "_ConsistentSet"

    def __init__(self, elements: Iterable[Any]) -> None:
        items = list(elements)
        try:
            # The attribute name is part of the digest (it is pickled as the instance state).
            self._sequence = sorted(items)
        except (TypeError, decimal.InvalidOperation):
            # Mixed, unorderable elements: joblib keeps their md5 digests, sorted.
            self._sequence = sorted(_md5_of(e) for e in items)


class _CallableKey:
    """Stand-in pickled for a method or builtin function, which pickle cannot save by value:
    the function's name, the object it is bound to and that object's class."""

    _wire_name = "_MyHash"

    def __init__(self, *args: Any) -> None:
        # The attribute name is part of the digest (it is pickled as the instance state).
        self.args = args


# joblib's names for the two stand-ins.
_ConsistentSet = _SortedSet
_MyHash = _CallableKey

#: The stand-in classes, by the name they are written under.
_WIRE_CLASSES: dict[type, str] = {cls: cls._wire_name for cls in (_SortedSet, _CallableKey)}


def _md5_of(obj: Any) -> str:
    """joblib's fallback sort key for unorderable set elements and dict keys: the md5 digest
    of the element by joblib's algorithm (whatever digest the enclosing call uses)."""
    return hash(obj, hash_name="md5")


def _callable_key(obj: Any) -> _CallableKey:
    """The stand-in of a bound method or builtin function ``obj``."""
    func = getattr(obj, "__func__", None)
    name = func.__name__ if func is not None else obj.__name__
    owner = obj.__self__
    if isinstance(owner, types.ModuleType) and type(owner) is types.ModuleType:
        return _CallableKey(name, owner.__name__)
    if owner is None:
        return _CallableKey(name, owner)
    return _CallableKey(name, owner, owner.__class__)


class Hasher(Pickler):  # type: ignore[misc]
    """A pickler that digests the stream it writes instead of keeping it: joblib's hasher.

    The stream is protocol 3, with these rewrites so that equal values give equal digests:
    dict items and set elements are sorted (replaced by their md5 digests, sorted, when they
    cannot be ordered), strings
    and bytes are never memoised (two equal strings are written alike whether or not they are
    the same object), functions and classes are written by reference, and methods and builtin
    functions as their name plus the object they are bound to.

    Parameters
    ----------
    hash_name : str, default='md5'
        Name of a :mod:`hashlib` algorithm.

    Examples
    --------
    >>> Hasher().hash([1, 2, 3])
    'd6728d1a1a6ba57aa70ca5a0650628a7'
    """

    def __init__(self, hash_name: str = "md5") -> None:
        self.stream = io.BytesIO()
        Pickler.__init__(self, self.stream, protocol=_HASH_PROTOCOL)
        self._hash = hashlib.new(hash_name, usedforsecurity=False)

    def hash(self, obj: Any, return_digest: bool = True) -> str | None:
        """Feed ``obj`` to the digest; return the hex digest unless ``return_digest`` is false.

        Raises
        ------
        pickle.PicklingError
            If a part of ``obj`` cannot be pickled (the message gains the object hashed).
        """
        try:
            self.dump(obj)
        except pickle.PicklingError as exc:
            exc.args += (f"PicklingError while hashing {obj!r}: {exc!r}",)
            raise
        self._hash.update(self.stream.getvalue())
        return self._hash.hexdigest() if return_digest else None

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        """Write ``obj``; methods and builtin functions are replaced by a stand-in first."""
        if isinstance(obj, types.MethodType | types.BuiltinMethodType):
            obj = _callable_key(obj)
        Pickler.save(self, obj, save_persistent_id)

    def memoize(self, obj: Any) -> None:
        """Memoise ``obj`` unless it is a ``str`` or ``bytes`` (hashed by value only)."""
        if isinstance(obj, str | bytes):
            return
        Pickler.memoize(self, obj)

    def save_global(self, obj: Any, name: str | None = None) -> None:
        """Write a reference to a function or class (and joblib's name for the stand-ins)."""
        wire = _WIRE_CLASSES.get(obj) if isinstance(obj, type) else None
        if wire is not None and name is None:
            self.write(
                pickle.GLOBAL + f"{_WIRE_MODULE}\n{wire}\n".encode()  # type: ignore[attr-defined]
            )
            self.memoize(obj)
            return
        Pickler.save_global(self, obj, name=name)

    def _batch_setitems(self, items: Iterable[tuple[Any, Any]], *args: Any) -> None:
        """Write dict items sorted by key (by the key's hash when keys cannot be ordered)."""
        pairs = list(items)
        try:
            ordered = sorted(pairs)
        except TypeError:
            # Keys that cannot be ordered: joblib writes their md5 digests in their place.
            ordered = sorted((_md5_of(k), v) for k, v in pairs)
        Pickler._batch_setitems(self, iter(ordered), *args)

    def save_set(self, obj: set[Any]) -> None:
        """Write a ``set`` as a stand-in holding its elements in sorted order."""
        Pickler.save(self, _SortedSet(obj))

    # Functions, builtin functions and classes (whatever their metaclass's pickle support) are
    # written by reference; sets through :meth:`save_set`.
    dispatch = Pickler.dispatch.copy()
    dispatch[types.BuiltinFunctionType] = save_global
    dispatch[type] = save_global
    dispatch[types.FunctionType] = save_global
    dispatch[set] = save_set


class NumpyHasher(Hasher):
    """:class:`Hasher` that digests numpy arrays by their raw data: joblib's numpy hasher.

    An array without Python objects feeds its bytes to the digest directly (in memory order
    for C- or Fortran-contiguous arrays, else as a C-ordered copy), followed in the stream by
    its class, dtype, shape and strides; a dtype is digested through a pickle of its own so
    that interned and unpickled dtypes hash alike.

    Parameters
    ----------
    hash_name : str, default='md5'
        Name of a :mod:`hashlib` algorithm.
    coerce_mmap : bool, default=False
        Hash ``np.memmap`` arrays as plain ``np.ndarray`` ones.
    """

    def __init__(self, hash_name: str = "md5", coerce_mmap: bool = False) -> None:
        self.coerce_mmap = coerce_mmap
        Hasher.__init__(self, hash_name=hash_name)
        import numpy

        self.np = numpy
        self._getbuffer = memoryview

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        """Write ``obj``; arrays and dtypes are digested as described in the class."""
        np = self.np
        if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
            self._hash.update(self._getbuffer(_memory_order_bytes(np, obj)))
            cls = obj.__class__
            if self.coerce_mmap and isinstance(obj, np.memmap):
                cls = np.ndarray
            obj = (cls, ("HASHED", obj.dtype, obj.shape, obj.strides))
        elif isinstance(obj, np.dtype):
            # Each dtype is pickled on its own, so pickle's memo (which interned dtypes would
            # hit and unpickled copies would not) never reaches the digest.
            self._hash.update(b"_HASHED_DTYPE")
            self._hash.update(pickle.dumps(obj))
            return
        Hasher.save(self, obj, save_persistent_id)


def _memory_order_bytes(np: Any, arr: Any) -> Any:
    """``arr``'s data as a C-contiguous ``uint8`` array: as laid out in memory when the array
    is contiguous (a Fortran array's bytes stay in Fortran order), else a C-ordered copy."""
    if arr.ndim == 0:
        flat = arr.reshape(1).copy()
    elif arr.flags.c_contiguous:
        flat = arr
    elif arr.flags.f_contiguous:
        flat = arr.T
    else:
        flat = arr.flatten()
    return flat.view(np.uint8)


def hash(obj: Any, hash_name: str = "xxh3", coerce_mmap: bool = False) -> str:
    """Quick calculation of a hash to identify uniquely Python objects containing numpy arrays.

    Parameters
    ----------
    obj : object
        The object to hash.
    hash_name : {'xxh3', 'md5', 'sha1'}, default='xxh3'
        ``'xxh3'``: the canonical encoding of ``docs/hashing.md`` digested with xxh3-128, in
        the Rust core: much faster, and defined for objects pickle refuses (lambdas, local
        functions). ``'md5'`` and ``'sha1'``: joblib's algorithm (see :class:`NumpyHasher`),
        giving exactly the digest ``joblib.hash(obj, hash_name)`` gives.
    coerce_mmap : bool, default=False
        Make no difference between ``np.memmap`` and ``np.ndarray`` objects.

    Returns
    -------
    str
        The hexadecimal digest: 32 characters for xxh3 and md5, 40 for sha1.

    Raises
    ------
    ValueError
        If ``hash_name`` is not one of the valid names.
    pickle.PicklingError
        If an object in the graph cannot be hashed (a lock, a generator, an open file...; with
        md5/sha1, also whatever pickle refuses, such as a lambda).
    RecursionError
        If the object is nested deeper than the interpreter's recursion limit.

    Notes
    -----
    The xxh3 value never depends on dict or set ordering; a shared reference hashes like a
    copy of the object, and an array hashes by dtype, shape and content whatever its strides.
    The md5/sha1 values inherit joblib's behaviour, including its dependence on memory layout
    (a Fortran array and its C copy differ) and on ``PYTHONHASHSEED`` for frozensets (which
    joblib does not sort) of strings.

    Examples
    --------
    >>> from joblib_rs import hash
    >>> hash({"a": 1, "b": 2}) == hash({"b": 2, "a": 1})
    True
    >>> hash(1) == hash(1.0)
    False
    >>> hash([1, 2, 3], hash_name="md5")  # the value joblib.hash gives
    'd6728d1a1a6ba57aa70ca5a0650628a7'
    """
    if hash_name not in HASH_NAMES:
        raise ValueError(
            f"Valid options for 'hash_name' are {list(HASH_NAMES)}. "
            f"Got hash_name={hash_name!r} instead."
        )
    if hash_name == "xxh3":
        return _core.hash(obj, hash_name, bool(coerce_mmap))
    hasher: Hasher
    if "numpy" in sys.modules:
        hasher = NumpyHasher(hash_name=hash_name, coerce_mmap=coerce_mmap)
    else:
        hasher = Hasher(hash_name=hash_name)
    digest = hasher.hash(obj)
    assert digest is not None
    return digest
