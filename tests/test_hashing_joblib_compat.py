"""``hash(obj, 'md5' | 'sha1')``, ``Hasher`` and ``NumpyHasher`` give joblib's own digests.

Every value is compared with the installed joblib's, in the same process.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import functools
import pickle
import subprocess
import sys

import numpy as np
import pytest

import joblib_rs
from joblib_rs.hashing import Hasher, NumpyHasher, Pickler

joblib = pytest.importorskip("joblib")


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm(self):
        return abs(self.x) + abs(self.y)

    @classmethod
    def origin(cls):
        return cls(0, 0)


class Outer:
    class Inner:
        pass


class WithSlots:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a = a
        self.b = b


def module_function(x):
    return x + 1


def _corpus(tmp_path):
    rng = np.random.default_rng(0)
    grid = rng.random((5, 6))
    memmap = np.memmap(tmp_path / "m.dat", dtype="f8", mode="w+", shape=(4, 3))
    memmap[:] = np.arange(12.0).reshape(4, 3)
    shared = [1, 2]
    return {
        "none": None,
        "bools": [True, False],
        "ints": [0, 1, -7, 2**31, 2**100, -(2**200)],
        "floats": [0.0, -0.0, 1.5, float("inf"), float("nan"), 1e-300],
        "complex": 1 + 2j,
        "str": ["", "text", "é" * 100, "aa", "aZ"[:1] + "a"],
        "bytes": [b"", b"\x00\xff" * 50, bytearray(b"xy")],
        "nested": [1, [2, (3, {"k": [4, (5,)]})], ()],
        "shared": [shared, shared],
        "dict_str": {"b": 1, "a": 2, "c": {"z": 0, "y": 1}},
        "dict_mixed": {1: "a", "b": 2, (1,): 3, None: 4},
        "dict_int": {i: str(i) for i in range(100)},
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "defaultdict": collections.defaultdict(list, {"a": [1]}),
        "set": {3, 1, 2},
        "set_str": {"x", "y", "z", "w"},
        "set_mixed": {1, "a", (2,), None},
        "frozenset": frozenset({1, 2, 3}),
        "array": grid,
        "fortran": np.asfortranarray(grid),
        "strided": grid[::2, ::3],
        "transposed": grid.T,
        "scalar_array": np.array(3.0),
        "empty": np.zeros((0, 3)),
        "big_endian": np.arange(10, dtype=">i4"),
        "memmap": memmap,
        "memmap_slice": memmap[1:],
        "object_array": np.array([1, "x", None, [1]], dtype=object),
        "structured": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", ">f8")]),
        "structured_obj": np.array([(1, "x")], dtype=[("a", "<i4"), ("b", "O")]),
        "datetimes": np.array(["2020-01-01", "2021-06-30"], dtype="M8[D]"),
        "unicode_array": np.array(["alpha", "beta"]),
        "dtypes": [np.dtype("f4"), np.dtype("f4"), pickle.loads(pickle.dumps(np.dtype("f4")))],
        "structured_dtype": np.dtype([("a", "<i4"), ("b", ">f8")]),
        "np_scalars": [np.float32(2.5), np.int64(7), np.bool_(True)],
        "np_types": [np.int64, np.ndarray],
        "arrays_in_dict": {"x": np.arange(3), "y": [np.arange(3)] * 2},
        "function": module_function,
        "builtin": len,
        "numpy_function": np.sum,
        "ufunc": np.add,
        "class": Point,
        "nested_class": Outer.Inner,
        "instance": Point(1, [2, 3]),
        "slots": WithSlots(1, "b"),
        "bound_method": Point(1, 2).norm,
        "classmethod": Point.origin,
        "builtin_method": [].append,
        "partial": functools.partial(module_function, 1),
        "decimal": decimal.Decimal("1.5"),
        "fraction": fractions.Fraction(1, 3),
        "date": datetime.datetime(2020, 1, 2, 3, 4, 5),
        "range": range(3, 10, 2),
        "slice": slice(1, 5),
    }


@pytest.fixture
def corpus(tmp_path):
    return _corpus(tmp_path)


@pytest.mark.parametrize("hash_name", ["md5", "sha1"])
@pytest.mark.parametrize("coerce_mmap", [False, True])
def test_each_object_hashes_as_joblib(corpus, hash_name, coerce_mmap):
    for key, obj in corpus.items():
        expected = joblib.hash(obj, hash_name=hash_name, coerce_mmap=coerce_mmap)
        got = joblib_rs.hash(obj, hash_name=hash_name, coerce_mmap=coerce_mmap)
        assert got == expected, key


def test_whole_corpus_hashes_as_joblib(corpus):
    assert joblib_rs.hash(corpus, "md5") == joblib.hash(corpus, "md5")
    assert joblib_rs.hash(list(corpus.values()), "sha1") == joblib.hash(
        list(corpus.values()), "sha1"
    )


def test_known_digests():
    # joblib 1.6's values, also pinned here in case joblib is upgraded.
    assert joblib_rs.hash([1, 2, 3], hash_name="md5") == "d6728d1a1a6ba57aa70ca5a0650628a7"
    assert joblib_rs.hash([1], hash_name="sha1") == "a85a05f352ecaf5120127346e9138ddd96f7390a"


def test_memmap_is_coerced_only_when_asked(corpus):
    memmap = corpus["memmap"]
    plain = np.array(memmap)
    assert joblib_rs.hash(memmap, "md5") != joblib_rs.hash(plain, "md5")
    assert joblib_rs.hash(memmap, "md5", coerce_mmap=True) == joblib_rs.hash(plain, "md5")


def test_value_not_identity_matters_for_strings():
    built = "".join(["a", "a"])
    assert joblib_rs.hash(["aa", "aa"], "md5") == joblib_rs.hash(["aa", built], "md5")


def test_dict_and_set_orders_do_not_matter():
    assert joblib_rs.hash({"a": 1, "b": 2}, "md5") == joblib_rs.hash({"b": 2, "a": 1}, "md5")
    assert joblib_rs.hash({1, "a", (2,)}, "md5") == joblib_rs.hash({(2,), "a", 1}, "md5")


def test_the_digest_does_not_depend_on_the_process():
    code = (
        "import numpy as np, joblib_rs; "
        "print(joblib_rs.hash([{'b': 1, 'a': {'x', 'y', 1}}, np.arange(4)], 'md5'))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1


def test_unpicklable_objects_raise_like_joblib():
    with pytest.raises(pickle.PicklingError) as ours:
        joblib_rs.hash(lambda x: x, "md5")
    with pytest.raises(pickle.PicklingError):
        joblib.hash(lambda x: x, "md5")
    assert "PicklingError while hashing" in ours.value.args[-1]


def test_xxh3_stays_the_canonical_rust_hash():
    assert joblib_rs.hash([1, 2, 3]) == joblib_rs._core.hash([1, 2, 3], "xxh3", False)
    assert joblib_rs.hash(lambda x: x)  # the canonical encoding hashes lambdas


def test_hasher_classes_work_as_joblibs():
    assert Pickler is pickle._Pickler
    assert Hasher().hash({"a": [1]}) == joblib.hashing.Hasher().hash({"a": [1]})
    assert NumpyHasher("sha1").hash(np.arange(3)) == joblib.hashing.NumpyHasher("sha1").hash(
        np.arange(3)
    )
    # Several objects fed to one hasher, the digest taken at the end.
    ours, theirs = NumpyHasher(), joblib.hashing.NumpyHasher()
    for obj in ([1], np.ones(2), "x"):
        ours.hash(obj, return_digest=False)
        theirs.hash(obj, return_digest=False)
    assert ours._hash.hexdigest() == theirs._hash.hexdigest()


class _Celsius:
    def __init__(self, degrees):
        self.degrees = degrees


def _subclass(base):
    class RoundingHasher(base):
        """Hashes temperatures to the nearest degree."""

        def save(self, obj, *args, **kwargs):
            if isinstance(obj, _Celsius):
                obj = ("celsius", round(obj.degrees))
            super().save(obj, *args, **kwargs)

    return RoundingHasher


def test_hashers_can_be_subclassed_like_joblibs():
    ours, theirs = _subclass(NumpyHasher), _subclass(joblib.hashing.NumpyHasher)
    value = [_Celsius(20.2), np.arange(2)]
    assert ours().hash(value) == ours().hash([_Celsius(19.9), np.arange(2)])
    assert ours().hash(value) == theirs().hash(value)
