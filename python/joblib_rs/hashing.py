"""Fast, canonical hashing of Python objects.

The object graph is walked by the Rust core (``joblib_rs._core``): containers, numpy arrays
and scalars are encoded natively, everything else through ``__reduce_ex__``. The digest is
computed over a canonical, versioned encoding (specified in ``docs/hashing.md``), so it is the
same in every process and session, whatever the dict insertion order, the memory layout of an
array, or ``PYTHONHASHSEED``.
"""

from __future__ import annotations

from typing import Any

from joblib_rs import _core

__all__ = ["HASH_NAMES", "hash"]

#: Digest names accepted by :func:`hash`; the first one is the default.
HASH_NAMES: tuple[str, ...] = ("xxh3", "md5", "sha1")


def hash(obj: Any, hash_name: str = "xxh3", coerce_mmap: bool = False) -> str:
    """Quick calculation of a hash to identify uniquely Python objects containing numpy arrays.

    Parameters
    ----------
    obj : object
        The object to hash. Builtin scalars and containers, numpy arrays, scalars and dtypes
        are encoded natively; functions and classes by qualified name (local functions and
        lambdas also by their code and closure); any other object through
        ``__reduce_ex__(5)``, as pickle would see it.
    hash_name : {'xxh3', 'md5', 'sha1'}, default='xxh3'
        The digest applied to the canonical encoding. ``'xxh3'`` (xxh3-128) is much faster;
        ``'md5'`` and ``'sha1'`` are accepted for compatibility with joblib.
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
        If an object in the graph can neither be walked nor pickled (a lock, a generator, an
        open file...); the message names its type.
    RecursionError
        If the object is nested deeper than the interpreter's recursion limit.

    Notes
    -----
    Values differ from joblib's (which hashes a pickle stream); what matches is when two
    objects hash equal. Dict and set ordering never changes the value, a shared reference
    hashes like a copy of the object, and an array hashes by dtype, shape and content whatever
    its strides.

    Examples
    --------
    >>> from joblib_rs import hash
    >>> hash({"a": 1, "b": 2}) == hash({"b": 2, "a": 1})
    True
    >>> hash(1) == hash(1.0)
    False
    """
    if hash_name not in HASH_NAMES:
        raise ValueError(
            f"Valid options for 'hash_name' are {list(HASH_NAMES)}. "
            f"Got hash_name={hash_name!r} instead."
        )
    return _core.hash(obj, hash_name, bool(coerce_mmap))
