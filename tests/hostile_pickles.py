"""A corpus of hostile pickles, assembled opcode by opcode, and the carriers ``load`` reads.

Each case is a function ``protocol -> bytes`` writing a pickle that, if the unpickler obeyed
it, would run code, write or read a file, corrupt memory or tamper with the process. They
are loaded by ``tests/security_child.py`` in a fresh interpreter under an audit hook
(``tests/test_security.py``) and fed, mutated, to the fuzzer (``tests/fuzz_safe_load.py``).
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROTOCOLS = range(6)


class P:
    """A pickle writer for hand-made opcode sequences, spelled for one protocol."""

    def __init__(self, proto: int) -> None:
        self.proto = proto
        self.out = bytearray()
        if proto >= 2:
            self.out += pickle.PROTO + bytes([proto])

    def raw(self, b: bytes) -> P:
        self.out += b
        return self

    def mark(self) -> P:
        return self.raw(pickle.MARK)

    def none(self) -> P:
        return self.raw(pickle.NONE)

    def int(self, i: int) -> P:
        if self.proto == 0:
            return self.raw(b"I%d\n" % i)
        return self.raw(pickle.BININT + struct.pack("<i", i))

    def bool(self, b: bool) -> P:
        if self.proto < 2:
            return self.raw(b"I01\n" if b else b"I00\n")
        return self.raw(pickle.NEWTRUE if b else pickle.NEWFALSE)

    def str(self, s: str) -> P:
        if self.proto == 0:
            return self.raw(pickle.UNICODE + s.encode("raw-unicode-escape") + b"\n")
        data = s.encode("utf-8", "surrogatepass")
        return self.raw(pickle.BINUNICODE + struct.pack("<I", len(data)) + data)

    def bytes(self, b: bytes) -> P:
        if self.proto < 3:
            # As Python 3 writes bytes for old protocols: _codecs.encode(latin-1 text).
            self.glob("_codecs", "encode").mark().str(b.decode("latin-1")).str("latin1")
            return self.tuple().reduce()
        return self.raw(pickle.BINBYTES + struct.pack("<I", len(b)) + b)

    def glob(self, module: str, name: str) -> P:
        if self.proto >= 4:
            return self.str(module).str(name).raw(pickle.STACK_GLOBAL)
        return self.raw(pickle.GLOBAL + f"{module}\n{name}\n".encode())

    def tuple(self) -> P:
        return self.raw(pickle.TUPLE)

    def empty_tuple(self) -> P:
        return self.raw(pickle.EMPTY_TUPLE)

    def list(self) -> P:
        return self.raw(pickle.LIST)

    def dict(self) -> P:
        return self.raw(pickle.DICT)

    def reduce(self) -> P:
        return self.raw(pickle.REDUCE)

    def build(self) -> P:
        return self.raw(pickle.BUILD)

    def put(self, i: int) -> P:
        return self.raw(b"p%d\n" % i if self.proto == 0 else pickle.BINPUT + bytes([i]))

    def get(self, i: int) -> P:
        return self.raw(b"g%d\n" % i if self.proto == 0 else pickle.BINGET + bytes([i]))

    def call(self, module: str, name: str, *args: Callable[[P], P]) -> P:
        """``module.name(*args)`` through GLOBAL + REDUCE."""
        self.glob(module, name).mark()
        for a in args:
            a(self)
        return self.tuple().reduce()

    def stop(self) -> bytes:
        return bytes(self.out + pickle.STOP)


def s(x: str) -> Callable[[P], P]:
    return lambda p: p.str(x)


def i(x: int) -> Callable[[P], P]:
    return lambda p: p.int(x)


def b(x: bytes) -> Callable[[P], P]:
    return lambda p: p.bytes(x)


def none() -> Callable[[P], P]:
    return lambda p: p.none()


def dtype(code: str) -> Callable[[P], P]:
    return lambda p: p.call(
        "numpy", "dtype", s(code), lambda q: q.bool(False), lambda q: q.bool(True)
    )


def shape(*dims: int) -> Callable[[P], P]:
    def write(p: P) -> P:
        p.mark()
        for d in dims:
            p.int(d)
        return p.tuple()

    return write


def _system(module: str) -> Callable[[int], bytes]:
    return lambda proto: P(proto).call(module, "system", s("echo pwned")).stop()


def _eval(name: str) -> Callable[[int], bytes]:
    return lambda proto: P(proto).call("builtins", name, s("print('pwned')")).stop()


def _popen(proto: int) -> bytes:
    argv = lambda p: p.mark().str("echo").str("pwned").list()  # noqa: E731
    return P(proto).call("subprocess", "Popen", argv).stop()


def _getattr(proto: int) -> bytes:
    return P(proto).call("builtins", "getattr", lambda p: p.glob("os", "path"), s("join")).stop()


def _import(proto: int) -> bytes:
    return P(proto).call("builtins", "__import__", s("os")).stop()


def _partial(proto: int) -> bytes:
    return (
        P(proto)
        .glob("functools", "partial")
        .mark()
        .glob("os", "system")
        .str("echo pwned")
        .tuple()
        .reduce()
        .mark()
        .tuple()
        .reduce()
        .stop()
    )


def _reconstructor_system(proto: int) -> bytes:
    return (
        P(proto)
        .call(
            "copyreg",
            "_reconstructor",
            lambda p: p.glob("os", "system"),
            lambda p: p.glob("builtins", "object"),
            none(),
        )
        .stop()
    )


def _inst(proto: int) -> bytes:
    return bytes(P(proto).mark().str("echo pwned").raw(b"ios\nsystem\n").out + pickle.STOP)


def _obj(proto: int) -> bytes:
    return P(proto).mark().glob("os", "system").str("echo pwned").raw(pickle.OBJ).stop()


def _newobj(proto: int) -> bytes:
    return (
        P(proto).glob("subprocess", "Popen").mark().str("true").tuple().raw(pickle.NEWOBJ).stop()
    )


def _newobj_ex(proto: int) -> bytes:
    p = P(proto).glob("subprocess", "Popen").mark().str("true").tuple()
    return p.mark().dict().raw(pickle.NEWOBJ_EX).stop()


def _ext(proto: int) -> bytes:
    return P(proto).raw(pickle.EXT1 + b"\x01").mark().str("x").tuple().reduce().stop()


def _persid(proto: int) -> bytes:
    return P(proto).raw(b"Pos.system\n").stop()


def _binpersid(proto: int) -> bytes:
    return P(proto).str("echo pwned").raw(pickle.BINPERSID).stop()


#: The file the memmap cases try to create (set by :func:`make`).
TARGET = "/tmp/joblib-rs-pwned"


def _memmap_write() -> Callable[[int], bytes]:
    """numpy.memmap(TARGET, 'S8', 'w+', 0, (1,)) then an item assignment: a file write."""

    def make(proto: int) -> bytes:
        return (
            P(proto)
            .call("numpy", "memmap", s(TARGET), s("S8"), s("w+"), i(0), shape(1))
            .put(1)
            .stop()
        )

    return make


def _memmap_newobj() -> Callable[[int], bytes]:
    def make(proto: int) -> bytes:
        p = P(proto).glob("numpy", "memmap").mark().str(TARGET).str("S8").str("w+")
        return p.tuple().raw(pickle.NEWOBJ).stop()

    return make


def _ndarray_object_buffer(proto: int) -> bytes:
    """numpy.ndarray((4,), dtype('O'), buffer=forged pointers): memory corruption."""
    return P(proto).call("numpy", "ndarray", shape(4), dtype("O"), b(b"\x41" * 32)).stop()


def _ndarray_negative_offset(proto: int) -> bytes:
    return P(proto).call("numpy", "ndarray", shape(64), dtype("u1"), b(b"x" * 8), i(-4096)).stop()


def _object_dtype_class(proto: int) -> bytes:
    return P(proto).call("numpy.dtypes", "ObjectDType").stop()


def _frombuffer_object(module: str) -> Callable[[int], bytes]:
    def make(proto: int) -> bytes:
        return (
            P(proto)
            .call(module, "_frombuffer", b(b"\x41" * 16), dtype("O8"), shape(2), s("C"))
            .stop()
        )

    return make


def _frombuffer_too_short(proto: int) -> bytes:
    """A float64 array of 1M items over 8 bytes: a read beyond the buffer."""
    return (
        P(proto)
        .call(
            "numpy._core.numeric",
            "_frombuffer",
            b(b"\x00" * 8),
            dtype("f8"),
            shape(1 << 20),
            s("C"),
        )
        .stop()
    )


def _scalar_object(proto: int) -> bytes:
    return P(proto).call("numpy._core.multiarray", "scalar", dtype("O8"), b(b"\x41" * 8)).stop()


def _scalar_short(proto: int) -> bytes:
    return P(proto).call("numpy._core.multiarray", "scalar", dtype("f8"), b(b"\x00")).stop()


def _reconstruct_state(state: Callable[[P], P]) -> Callable[[int], bytes]:
    """numpy's _reconstruct then BUILD with a hostile state."""

    def make(proto: int) -> bytes:
        p = P(proto).call(
            "numpy._core.multiarray",
            "_reconstruct",
            lambda q: q.glob("numpy", "ndarray"),
            shape(0),
            b(b"b"),
        )
        return state(p).build().stop()

    return make


def _state(dims: tuple[int, ...], dt: Callable[[P], P], raw: Callable[[P], P]) -> Callable[[P], P]:
    return lambda p: raw(dt(shape(*dims)(p.mark().int(1))).bool(False)).tuple()


def _structured_with_object_field(proto: int) -> bytes:
    """dtype('V8') + BUILD giving it an object field: pointers read from bytes."""
    fields = lambda p: p.mark().str("a").mark()  # noqa: E731
    p = dtype("V8")(P(proto)).mark().int(3).str("|").none()
    p = p.mark().str("a").tuple()  # names
    p = fields(p)
    p = dtype("O8")(p).int(0).tuple().dict()
    p = p.int(8).int(1).int(16).tuple().build()
    return p.stop()


def _dtype_copy_false(proto: int) -> bytes:
    """dtype('f8', False, False) + BUILD: would change numpy's shared float64 dtype."""
    p = P(proto).call("numpy", "dtype", s("f8"), lambda q: q.bool(False), lambda q: q.bool(False))
    p = p.mark().int(3).str(">").none().none().none().int(-1).int(-1).int(0).tuple().build()
    return p.stop()


def _dtype_field_overflow(proto: int) -> bytes:
    """A field at offset 1000 of an 8-byte item: reads beyond each item."""
    p = dtype("V8")(P(proto)).mark().int(3).str("|").none()
    p = p.mark().str("a").tuple()
    p = p.mark().str("a").mark()
    p = dtype("f8")(p).int(1000).tuple().dict()
    return p.int(8).int(1).int(16).tuple().build().stop()


def _build_on_class(proto: int) -> bytes:
    """BUILD on collections.Counter itself: would replace Counter.most_common everywhere."""
    p = P(proto).glob("collections", "Counter")
    p = p.none().mark().str("most_common").int(1).dict().raw(pickle.TUPLE2)
    return p.build().stop()


def _build_on_class_via_memo(proto: int) -> bytes:
    p = P(proto).glob("collections", "Counter").put(0).raw(pickle.POP).get(0)
    p = p.none().mark().str("most_common").int(1).dict().raw(pickle.TUPLE2)
    return p.build().stop()


def _build_twice_dtype(proto: int) -> bytes:
    """A dtype built, used by an array, then built again with other fields."""
    p = dtype("V8")(P(proto)).put(0)
    p = p.mark().int(3).str("|").none().none().none().int(8).int(1).int(0).tuple().build()
    p = p.raw(pickle.POP).get(0)
    p = p.mark().int(3).str("|").none().mark().str("a").tuple()
    p = p.mark().str("a").mark()
    p = dtype("u1")(p).int(0).tuple().dict().int(8).int(1).int(16).tuple().build()
    return p.stop()


def _defaultdict_factory(proto: int) -> bytes:
    return P(proto).call("collections", "defaultdict", lambda p: p.glob("os", "system")).stop()


def _defaultdict_eval(proto: int) -> bytes:
    return P(proto).call("collections", "defaultdict", lambda p: p.glob("builtins", "eval")).stop()


def _codecs_other(proto: int) -> bytes:
    return P(proto).call("_codecs", "encode", s("x"), s("rot13")).stop()


def _dunder_chain(proto: int) -> bytes:
    return (
        P(max(proto, 4)).call("sklearn.linear_model._cd_fast", "__builtins__.eval", s("1")).stop()
    )


def _module_chain(proto: int) -> bytes:
    return P(max(proto, 4)).call("os.path", "os.system", s("echo pwned")).stop()


def _module_member_module(proto: int) -> bytes:
    return P(proto).call("posixpath", "os").stop()


def _wrapper_subclass(proto: int) -> bytes:
    """joblib's array wrapper whose subclass is a function."""
    p = P(max(proto, 2)).glob("joblib.numpy_pickle", "NumpyArrayWrapper").empty_tuple()
    p = p.raw(pickle.NEWOBJ).mark().str("subclass").glob("os", "system")
    p = p.str("shape").mark().int(1).tuple().str("order").str("C").str("dtype")
    p = dtype("u1")(p).str("allow_mmap").bool(False).dict().build()
    return bytes(p.out + b"A" + pickle.STOP)


def _wrapper_object_dtype(proto: int) -> bytes:
    p = P(max(proto, 2)).glob("joblib.numpy_pickle", "NumpyArrayWrapper").empty_tuple()
    p = p.raw(pickle.NEWOBJ).mark().str("subclass").glob("numpy", "ndarray")
    p = p.str("shape").mark().int(2).tuple().str("order").str("C").str("dtype")
    p = dtype("O8")(p).str("allow_mmap").bool(False).dict().build()
    return bytes(p.out + b"A" * 16 + pickle.STOP)


def _wrapper_huge(proto: int) -> bytes:
    """An array wrapper claiming 2^60 bytes of data in a tiny file."""
    p = P(max(proto, 2)).glob("joblib.numpy_pickle", "NumpyArrayWrapper").empty_tuple()
    p = p.raw(pickle.NEWOBJ).mark().str("subclass").glob("numpy", "ndarray")
    p = p.str("shape").mark().raw(pickle.LONG1 + b"\x08" + (1 << 60).to_bytes(8, "little"))
    p = p.tuple().str("order").str("C").str("dtype")
    p = dtype("u1")(p).str("allow_mmap").bool(False).dict().build()
    return bytes(p.out + b"A" + pickle.STOP)


def _rebuild_array_bad(proto: int) -> bytes:
    """joblib-rs's own array rebuild with a shape larger than its buffer."""
    return (
        P(proto)
        .call(
            "joblib_rs.numpy_pickle",
            "_rebuild_array",
            b(b"\x00" * 8),
            dtype("f8"),
            shape(1 << 16),
            s("C"),
        )
        .stop()
    )


def _rebuild_array_object(proto: int) -> bytes:
    return (
        P(proto)
        .call(
            "joblib_rs.numpy_pickle",
            "_rebuild_array",
            b(b"\x41" * 16),
            dtype("O8"),
            shape(2),
            s("C"),
        )
        .stop()
    )


def _huge_memo(proto: int) -> bytes:
    return P(max(proto, 1)).none().raw(pickle.LONG_BINPUT + b"\xff\xff\xff\xff").stop()


def _get_missing(proto: int) -> bytes:
    return P(proto).get(7).stop()


def _bytes_lie(proto: int) -> bytes:
    return bytes(P(proto).out + pickle.BINBYTES8 + (1 << 62).to_bytes(8, "little") + b"ab")


def _bomb_list(proto: int) -> bytes:
    """A billion-item list built by repeated DUP+APPENDS would need gigabytes: bounded by
    the file, here a short nesting bomb."""
    p = P(proto).raw(pickle.EMPTY_LIST)
    for _ in range(2000):
        p = p.mark().raw(pickle.EMPTY_LIST).raw(pickle.APPENDS)
    return p.stop()


#: Cases where the right outcome is a harmless success, not a refusal.
HARMLESS = frozenset({"dtype copy=False", "huge memo id", "nested list bomb"})

#: name -> (pickle maker, allowed spec).
CASES: dict[str, tuple[Callable[[int], bytes], Any]] = {
    "os.system": (_system("os"), "safe"),
    "posix.system": (_system("posix"), "safe"),
    "nt.system": (_system("nt"), "safe"),
    "subprocess.Popen": (_popen, "safe"),
    "builtins.eval": (_eval("eval"), "safe"),
    "builtins.exec": (_eval("exec"), "safe"),
    "builtins.compile": (_eval("compile"), "safe"),
    "builtins.getattr": (_getattr, "safe"),
    "builtins.__import__": (_import, "safe"),
    "functools.partial": (_partial, "safe"),
    "copyreg._reconstructor(os.system)": (_reconstructor_system, "safe"),
    "INST": (_inst, "safe"),
    "OBJ": (_obj, "safe"),
    "NEWOBJ": (_newobj, "safe"),
    "NEWOBJ_EX": (_newobj_ex, "safe"),
    "EXT1": (_ext, "safe"),
    "PERSID": (_persid, "safe"),
    "BINPERSID": (_binpersid, "safe"),
    "numpy.memmap write": (_memmap_write(), "safe"),
    "numpy.memmap NEWOBJ": (_memmap_newobj(), "safe"),
    "numpy.ndarray object buffer": (_ndarray_object_buffer, "safe"),
    "numpy.ndarray negative offset": (_ndarray_negative_offset, "safe"),
    "numpy.dtypes.ObjectDType": (_object_dtype_class, "safe"),
    "numpy._frombuffer object": (_frombuffer_object("numpy._core.numeric"), "safe"),
    "numpy.core._frombuffer object": (_frombuffer_object("numpy.core.numeric"), "safe"),
    "numpy._frombuffer short": (_frombuffer_too_short, "safe"),
    "numpy scalar object": (_scalar_object, "safe"),
    "numpy scalar short": (_scalar_short, "safe"),
    "_reconstruct object bytes": (
        _reconstruct_state(_state((4,), dtype("O8"), b(b"\x41" * 32))),
        "safe",
    ),
    "_reconstruct short data": (
        _reconstruct_state(_state((1 << 20,), dtype("f8"), b(b"\x00" * 8))),
        "safe",
    ),
    "_reconstruct object bytes (allow-list)": (
        _reconstruct_state(_state((4,), dtype("O8"), b(b"\x41" * 32))),
        ["safe", "numpy.object_"],
    ),
    "structured dtype with object field": (_structured_with_object_field, "safe"),
    "dtype copy=False": (_dtype_copy_false, "safe"),
    "dtype field overflow": (_dtype_field_overflow, "safe"),
    "dtype built twice": (_build_twice_dtype, "safe"),
    "BUILD on class": (_build_on_class, "safe"),
    "BUILD on class (allow-listed)": (_build_on_class, ["safe", "collections.Counter"]),
    "BUILD on class via memo": (_build_on_class_via_memo, ["safe", "collections.*"]),
    "defaultdict(os.system)": (_defaultdict_factory, "safe"),
    "defaultdict(eval)": (_defaultdict_eval, "safe"),
    "_codecs.encode rot13": (_codecs_other, "safe"),
    "dunder chain": (_dunder_chain, ["safe", "sklearn.linear_model.*"]),
    "module chain": (_module_chain, ["safe", "os.path.*"]),
    "module as member": (_module_member_module, ["safe", "posixpath.os"]),
    "joblib wrapper subclass os.system": (_wrapper_subclass, "safe"),
    "joblib wrapper object dtype": (_wrapper_object_dtype, "safe"),
    "joblib wrapper huge": (_wrapper_huge, "safe"),
    "joblib-rs rebuild short buffer": (_rebuild_array_bad, "safe"),
    "joblib-rs rebuild object dtype": (_rebuild_array_object, "safe"),
    "huge memo id": (_huge_memo, "safe"),
    "GET of a missing memo": (_get_missing, "safe"),
    "BINBYTES8 length lie": (_bytes_lie, "safe"),
    "nested list bomb": (_bomb_list, "safe"),
}


# ---------------------------------------------------------------------------------------------
# Carriers


def _container(codec: str, level: int) -> Callable[[Path, bytes], None]:
    def write(path: Path, data: bytes) -> None:
        from joblib_rs import _core

        _core.write_path(str(path), [], data, codec, level, False)

    return write


def _plain(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _gzip(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data))


def _zlib(path: Path, data: bytes) -> None:
    path.write_bytes(zlib.compress(data))


CARRIERS: dict[str, Callable[[Path, bytes], None]] = {
    "container-raw": _container("none", 0),
    "container-zstd": _container("zstd", 3),
    "container-zlib": _container("zlib", 3),
    "pickle": _plain,
    "gzip": _gzip,
    "zlib": _zlib,
}


def make(case: str, proto: int, target: str) -> bytes:
    """The pickle of ``case`` for ``proto``; file-writing cases aim at ``target``."""
    global TARGET
    TARGET = target
    maker, _ = CASES[case]
    return maker(proto)
