"""Writing joblib's own file format: ``dump(..., format="joblib")``.

A file in joblib's format is a pickle in which every numpy array is replaced by a
``joblib.numpy_pickle.NumpyArrayWrapper`` whose raw data follows the wrapper's ``BUILD``
opcode in the file (outside the pickle's own opcodes); joblib's unpickler reads that data when
it builds the wrapper. The whole file may be compressed as one stream (zlib, gzip, bz2, lzma,
xz, lz4), recognised by joblib from its first bytes. Nothing here imports joblib: the wrapper
is named in the pickle, not instantiated.

Layout choices (see ``docs/persistence.md``):

- the wrapper's state is the one joblib <= 1.1 writes (no ``numpy_array_alignment_bytes``),
  which every joblib >= 1.0 reads; array data still starts at a multiple of 16 bytes, because
  a no-op (a short bytes object pushed then popped) before ``BUILD`` pads the pickle to that
  boundary, so ``mmap_mode`` maps aligned arrays and joblib >= 1.2 does not warn;
- object arrays are pickled after the wrapper, as joblib does (with protocol 3 or the file's,
  not joblib's 2, so that bytes need no ``_codecs.encode`` global);
- an object without numeric arrays is written by the C pickler (a plain pickle, which joblib
  loads as any pickle); the pure-Python pickler, which can interleave array data, is used only
  when an array is met;
- compression runs in Rust (``_core.StreamEncoder``): chunks on all cores where the format
  allows several (zlib and gzip as one sync-flushed deflate stream, bz2 and xz as concatenated
  streams, lz4 as one frame of independent blocks), lzma sequentially.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from typing import IO, Any

from joblib_rs import _core
from joblib_rs.compressor import _COMPRESSORS, CompressorWrapper, NativeCompressorWrapper

__all__ = ["JOBLIB_CODECS", "dump_joblib", "resolve_joblib_compress"]

#: Whole-file compressors joblib reads (lz4 needs the ``lz4`` package where it is read).
JOBLIB_CODECS = ("zlib", "gzip", "bz2", "lzma", "xz", "lz4")
#: joblib's default level of each compressor (used for ``compress=True``, a codec name, or a
#: file name extension): what joblib's own compressor files default to (the Rust codec table).
_DEFAULT_LEVEL = {name: _core.CODEC_LEVELS[name][0] for name in JOBLIB_CODECS}

_WRAPPER_MODULE = "joblib.numpy_pickle"
_WRAPPER_NAME = "NumpyArrayWrapper"
#: Array data starts at a multiple of this many bytes of the (uncompressed) stream.
_ALIGN = 16
#: Raw bytes handed to the Rust encoder per call (bounds the compressed output held at once).
_ENCODE_BATCH = 64 << 20
#: Pickler writes below this size are gathered before going to the encoder.
_GATHER = 1 << 20
#: Non-contiguous arrays are copied to C order this many bytes at a time.
_COPY_PIECE = 16 << 20


def resolve_joblib_compress(compress: Any, filename: Any) -> tuple[str | None, int]:
    """Resolve ``compress`` and the file name as ``joblib.dump`` does.

    Parameters
    ----------
    compress : bool, int, str or (str, int)
        As given to :func:`joblib_rs.dump`.
    filename : str or file object
        A ``str`` path's extension selects the compressor unless ``compress`` is a tuple.

    Returns
    -------
    method, level : (str or None, int)
        ``(None, 0)`` for an uncompressed file; otherwise a compressor name and its level.

    Raises
    ------
    ValueError
        For a level outside 0-9, an unknown method, or ``'zstd'`` (joblib cannot read it).
    """
    method: str | None = "zlib"
    level: Any
    if compress is True:
        level = None
    elif isinstance(compress, tuple):
        if len(compress) != 2:
            raise ValueError(
                "Compress argument tuple should contain exactly 2 elements: "
                f"(compress method, compress level), you passed {compress}"
            )
        method, level = compress
    elif isinstance(compress, str):
        method, level = compress, None
        compress = (method, None)
    else:
        level = compress
    if level is not None and level is not False:
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
            raise ValueError(
                f'Non valid compress level given: "{level}". Possible values are '
                f"{list(range(10))}."
            )
    if method == "zstd":
        raise ValueError(
            "format='joblib' cannot use zstd: joblib does not read it. Use one of "
            f"{list(JOBLIB_CODECS)} or format='jrs'."
        )
    if method not in _COMPRESSORS:
        raise ValueError(
            f'Non valid compression method given: "{method}". Possible values are '
            f"{sorted(n for n in _COMPRESSORS if n != 'zstd')}."
        )
    if isinstance(filename, str) and not isinstance(compress, tuple):
        method = None
        for name, comp in _COMPRESSORS.items():
            if name != "zstd" and comp.extension and filename.endswith(comp.extension):
                method = name
        if method is not None and level == 0:
            level = None
    if level == 0 or level is False:
        return None, 0
    if method is None:
        method = "zlib"  # compression asked, no extension: joblib's default compressor
    if level is None:
        level = _DEFAULT_LEVEL.get(method, 3)
    return method, int(level)


class _Sink:
    """Where the pickler's bytes go. Counts them (array alignment needs the position in the
    uncompressed stream) and passes them to ``out``, through the Rust encoder if any."""

    def __init__(self, out: Any, encoder: Any) -> None:
        self.pos = 0
        self._out = out
        self._encoder = encoder
        self._gathered = bytearray()

    def write(self, data: Any) -> int:
        view = memoryview(data)
        n = view.nbytes
        self.pos += n
        if self._encoder is None:
            self._out.write(view)
        elif n < _GATHER:
            self._gathered += view
            if len(self._gathered) >= _GATHER:
                self._drain()
        else:
            self._drain()
            self._encode(view.cast("B") if view.format != "B" or view.ndim != 1 else view)
        return n

    def _drain(self) -> None:
        if self._gathered:
            self._encode(self._gathered)
            self._gathered = bytearray()

    def _encode(self, view: Any) -> None:
        view = memoryview(view)
        for start in range(0, view.nbytes, _ENCODE_BATCH):
            out = self._encoder.write(view[start : start + _ENCODE_BATCH])
            if out:
                self._out.write(out)

    def finish(self) -> None:
        """Write what is gathered and end the compressed stream."""
        if self._encoder is not None:
            self._drain()
            tail = self._encoder.finish()
            if tail:
                self._out.write(tail)


class _ArrayFound(Exception):
    """Raised by the C pickler's pass when the object holds a numeric array."""


class _PlainPickler(pickle.Pickler):
    """C pickler that gives up on the first array whose data joblib's layout would carry."""

    def __init__(self, file: IO[bytes], protocol: int, array_types: tuple[type, ...]) -> None:
        super().__init__(file, protocol=protocol)
        self._array_types = array_types

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) in self._array_types:
            raise _ArrayFound
        return NotImplemented


#: The pure-Python pickler (``save`` can be overridden, and its framer flushed, there only).
_PyPickler: Any = pickle._Pickler  # type: ignore[attr-defined]


class _JoblibPickler(_PyPickler):
    """Pure-Python pickler writing each numpy array as joblib's wrapper plus its raw data."""

    def __init__(self, sink: _Sink, protocol: int, compressed: bool, np: Any) -> None:
        super().__init__(sink, protocol=protocol)
        self._sink = sink
        self._compressed = compressed
        self._np = np
        self._array_types = (np.ndarray, np.memmap)

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if type(obj) in self._array_types:
            self._save_array(obj)
            return
        super().save(obj, save_persistent_id)

    def _write_wrapper_class(self) -> None:
        if self.proto >= 4:
            for text in (_WRAPPER_MODULE, _WRAPPER_NAME):
                raw = text.encode("ascii")
                self.write(pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{_WRAPPER_MODULE}\n{_WRAPPER_NAME}\n".encode("ascii"))

    def _commit(self) -> None:
        if self.proto >= 4:
            self.framer.commit_frame(force=True)

    def _save_array(self, arr: Any) -> None:
        np = self._np
        hasobject = arr.dtype.hasobject
        order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
        # The wrapper object: cls.__new__(cls) (NEWOBJ), or the protocol 0-1 spelling (OBJ).
        if self.proto >= 2:
            self._write_wrapper_class()
            self.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
        else:
            self.write(pickle.MARK)
            self._write_wrapper_class()
            self.write(pickle.OBJ)
        # Memoized as the pure-Python pickler memoizes every object joblib's files hold: the
        # memo keeps each wrapper alive during a load, so no two wrappers share an address
        # (joblib-rs's restricted loader tracks built objects by address).
        self.memoize(object())
        self.save(
            {
                "subclass": np.ndarray,
                "shape": tuple(int(n) for n in arr.shape),
                "order": order,
                "dtype": arr.dtype,
                "allow_mmap": not self._compressed and not hasobject,
            }
        )
        if hasobject:
            self.write(pickle.BUILD)
            self._commit()
            # As joblib, the object array follows as its own pickle; protocol 3 at least (joblib
            # uses 2, whose bytes need the global _codecs.encode: allowed="safe" refuses it).
            pickle.dump(arr, self._sink, protocol=max(3, self.proto))
            return
        if self.proto >= 1:
            self._commit()
            # A short bytes object (protocol 1-2: a str) pushed and popped before BUILD, sized
            # so that the data after BUILD starts on an _ALIGN boundary. Under protocol 4+,
            # pad and BUILD go out as one frame: 9 bytes of FRAME header, 2 + n + 1 of pad,
            # 1 of BUILD. (Protocol 0 has no binary opcode for it: its arrays stay unaligned.)
            fixed = (9 if self.proto >= 4 else 0) + 4
            n = -(self._sink.pos + fixed) % _ALIGN
            opcode = pickle.SHORT_BINBYTES if self.proto >= 3 else pickle.SHORT_BINSTRING
            self.write(opcode + bytes([n]) + b"\0" * n + pickle.POP)
        self.write(pickle.BUILD)
        self._commit()
        self._write_data(arr, order)

    def _write_data(self, arr: Any, order: str) -> None:
        np = self._np
        if arr.size == 0 or arr.dtype.itemsize == 0:
            return
        if arr.flags.c_contiguous or (order == "F" and arr.flags.f_contiguous):
            self._sink.write(arr.reshape(-1, order=order).view(np.uint8))
            return
        # Neither layout: C order, copied a bounded piece at a time along the first axis.
        rows = max(1, _COPY_PIECE // max(1, arr[0].nbytes))
        for start in range(0, arr.shape[0], rows):
            piece = np.ascontiguousarray(arr[start : start + rows])
            self._sink.write(piece.reshape(-1).view(np.uint8))


def _pickle_into(value: Any, sink: _Sink, protocol: int, compressed: bool) -> None:
    np = sys.modules.get("numpy")
    if np is not None:
        plain = io.BytesIO()
        try:
            _PlainPickler(plain, protocol, (np.ndarray, np.memmap)).dump(value)
        except _ArrayFound:
            pass
        else:
            sink.write(plain.getbuffer())
            return
        finally:
            del plain
        _JoblibPickler(sink, protocol, compressed, np).dump(value)
        return
    pickle.Pickler(sink, protocol=protocol).dump(value)


def _write_to(out: Any, value: Any, method: str | None, level: int, protocol: int) -> None:
    """Write the whole file into the binary file object ``out``."""
    if method is None:
        sink = _Sink(out, None)
        _pickle_into(value, sink, protocol, compressed=False)
        return
    compressor = _COMPRESSORS[method]
    if isinstance(compressor, NativeCompressorWrapper):
        sink = _Sink(out, _core.StreamEncoder(method, level))
        _pickle_into(value, sink, protocol, compressed=True)
        sink.finish()
        return
    # A compressor registered from Python: its file object compresses (joblib reads the file
    # if the same compressor is registered there).
    assert isinstance(compressor, CompressorWrapper)
    with compressor.compressor_file(out, compresslevel=level) as f:
        _pickle_into(value, _Sink(f, None), protocol, compressed=True)


def dump_joblib(
    value: Any,
    filename: Any,
    compress: Any,
    protocol: int | None,
    *,
    durable: bool,
) -> list[str] | None:
    """Write ``value`` in joblib's format (``dump(..., format="joblib")``).

    Parameters
    ----------
    value : any picklable object
        What to store.
    filename : str or binary file object
        A path (written to a temporary file in the same folder, then renamed) or an object
        with ``write``.
    compress : bool, int, str or (str, int)
        joblib's meaning: True or 1-9 are zlib levels; a name or ``(name, level)`` picks one
        of :data:`JOBLIB_CODECS`; a path's extension picks the compressor otherwise.
    protocol : int or None
        Pickle protocol; None is :data:`pickle.DEFAULT_PROTOCOL`, as joblib.
    durable : bool
        Flush the file (and its folder after the rename) to disk.

    Returns
    -------
    list of str or None
        ``[filename]`` for a path, None for a file object.
    """
    method, level = resolve_joblib_compress(compress, filename)
    if protocol is None:
        protocol = pickle.DEFAULT_PROTOCOL
    elif protocol < 0 or protocol > pickle.HIGHEST_PROTOCOL:
        protocol = pickle.HIGHEST_PROTOCOL
    if not isinstance(filename, str):
        _write_to(filename, value, method, level, protocol)
        return None
    folder = os.path.dirname(os.path.abspath(filename))
    base = os.path.basename(filename)
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.{id(value):x}.joblib-tmp")
    try:
        with open(tmp, "xb") as f:
            _write_to(f, value, method, level, protocol)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, filename)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if durable:
        _fsync_folder(folder)
    return [filename]


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (best effort: some systems cannot open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
