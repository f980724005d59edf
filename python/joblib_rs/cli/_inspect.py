"""``joblib-rs inspect FILE``: describe and verify a file written by ``dump``.

Two formats are recognised from the first bytes, as ``load`` does:

- **joblib-rs containers** (``docs/format.md``): ``_core.inspect_path`` reads every frame,
  checks every checksum and decodes every compressed chunk without keeping the data.
- **joblib pickles** (joblib's ``numpy_pickle``, plain or whole-file compressed): the stream
  is decompressed and its pickle scanned by :class:`_ScanUnpickler`, which imports nothing
  but ``numpy.dtype``: every other global becomes an inert placeholder, so no code from the
  file runs. Array data is skipped, not read into arrays.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tempfile
from dataclasses import dataclass, field
from typing import IO, Any

from joblib_rs import _core
from joblib_rs._loading import decompress_whole, detect_format
from joblib_rs.cli._errors import CliError
from joblib_rs.cli._format import format_size, format_table

__all__ = ["Report", "inspect_file", "run_inspect"]

_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
_OLD_WRAPPER = "joblib.numpy_pickle.NDArrayWrapper"
_SKIP_PIECE = 1 << 20


@dataclass
class Report:
    """What ``inspect`` found; ``to_json`` is the ``--json`` output."""

    file: str
    format: str
    file_size: int
    version: str | None = None
    compression: str | None = None
    raw_size: int | None = None
    protocol: int | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    arrays: list[dict[str, Any]] = field(default_factory=list)
    globals: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        """Decoded size over stored size."""
        if self.raw_size is None or not self.file_size:
            return None
        return self.raw_size / self.file_size

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object (sizes in bytes)."""
        out: dict[str, Any] = {
            "file": self.file,
            "format": self.format,
            "version": self.version,
            "compression": self.compression,
            "file_size": self.file_size,
            "raw_size": self.raw_size,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "ok": self.error is None,
            "error": self.error,
        }
        if self.format == "joblib-rs":
            out["frames"] = self.frames
        else:
            out["protocol"] = self.protocol
            out["arrays"] = self.arrays
            out["globals"] = self.globals
        return out


# -- joblib-rs containers ---------------------------------------------------------------------


def _inspect_container(path: str, report: Report) -> None:
    try:
        found = _core.inspect_path(path)
    except _core.CorruptFileError as e:
        report.error = str(e)
        return
    major, minor = found["version"]
    report.version = f"{major}.{minor}"
    codecs = set()
    frame: _core.FrameReport
    for frame in found["frames"]:
        codecs.add(frame.codec)
        report.frames.append(
            {
                "index": frame.index,
                "kind": frame.kind_name,
                "codec": frame.codec,
                "raw_size": frame.raw_len,
                "stored_size": frame.stored_len,
                "checksum": f"{frame.checksum:016x}",
                "offset": frame.header_offset,
            }
        )
    compressed = sorted(codecs - {"none"})
    if compressed:
        report.compression = ",".join(compressed)
    report.raw_size = sum(f["raw_size"] for f in report.frames)


# -- joblib pickles ---------------------------------------------------------------------------


class _Placeholder:
    """Stands for any global of the scanned pickle: accepts calls, state and items, runs
    nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> _Placeholder:
        return _Placeholder(*args, **kwargs)

    def append(self, item: Any) -> None:
        """Accept APPEND."""

    def extend(self, items: Any) -> None:
        """Accept APPENDS."""

    def add(self, item: Any) -> None:
        """Accept ADDITEMS."""

    def __setitem__(self, key: Any, value: Any) -> None:
        """Accept SETITEM(S)."""


class _ScanUnpickler(pickle._Unpickler):  # type: ignore[misc,name-defined]
    """Walks a joblib pickle without executing it: globals are placeholders (``numpy.dtype``
    excepted, to size arrays), and each joblib array's raw data is skipped and recorded."""

    dispatch = pickle._Unpickler.dispatch.copy()  # type: ignore[attr-defined]

    def __init__(self, fh: IO[bytes], arrays: list[dict[str, Any]], seen: set[str]) -> None:
        super().__init__(fh)
        self._fh = fh
        self.arrays = arrays
        self.seen = seen
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        self.seen.add(full)
        if full == _OLD_WRAPPER:
            raise CliError("written by joblib < 0.10 (arrays in separate .npy files)")
        if full == "numpy.dtype":
            try:
                import numpy as np
            except ImportError as e:  # pragma: no cover - numpy is a test dependency
                raise CliError("numpy is needed to inspect arrays of joblib files") from e
            return np.dtype
        if full not in self._classes:
            self._classes[full] = type(name, (_Placeholder,), {"__module__": module})
        return self._classes[full]

    def persistent_load(self, pid: Any) -> Any:
        return _Placeholder(pid)

    def _load_build(self) -> None:
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        top = self.stack[-1]
        if type(top).__module__ + "." + type(top).__name__ == _WRAPPER:
            self._skip_array(top)

    dispatch[pickle.BUILD[0]] = _load_build

    def _read(self, n: int) -> bytes:
        data = self._fh.read(n)
        if len(data) != n:
            raise pickle.UnpicklingError(f"file is truncated: {n} bytes expected")
        return data

    def _skip_array(self, wrapper: _Placeholder) -> None:
        state = wrapper.state if isinstance(wrapper.state, dict) else {}
        dtype = state.get("dtype")
        shape = tuple(int(s) for s in state.get("shape", ()))
        order = "F" if state.get("order") == "F" else "C"
        if not hasattr(dtype, "itemsize"):
            raise pickle.UnpicklingError(f"array wrapper without a dtype: {dtype!r}")
        info: dict[str, Any] = {"dtype": str(dtype), "shape": list(shape), "order": order}
        if dtype.hasobject:
            # Object arrays are a nested pickle right after the wrapper: scan it too.
            _ScanUnpickler(self._fh, [], self.seen).load()
            info["nbytes"] = None
        else:
            if state.get("numpy_array_alignment_bytes") is not None:
                pad = self._read(1)[0]
                if pad > 64:
                    raise pickle.UnpicklingError(f"array padding of {pad} bytes")
                self._read(pad)
            count = 1
            for s in shape:
                if s < 0:
                    raise pickle.UnpicklingError(f"negative array dimension {s}")
                count *= s
            nbytes = count * dtype.itemsize
            left = nbytes
            while left:
                got = len(self._fh.read(min(left, _SKIP_PIECE)))
                if not got:
                    raise pickle.UnpicklingError(
                        f"file is truncated: array data of {nbytes} bytes ends early"
                    )
                left -= got
            info["nbytes"] = nbytes
        self.arrays.append(info)


def _scan_pickle(data: bytes, report: Report) -> None:
    report.raw_size = len(data)
    if not data:
        report.error = "empty file"
        return
    if data[0] == pickle.PROTO[0] and len(data) > 1:
        report.protocol = data[1]
    elif data[:1] in (b"(", b"]", b"}", b"c", b"N", b"I", b"F", b"S", b"V", b"X"):
        report.protocol = 0 if data[:1] in (b"(", b"c", b"I", b"F", b"S", b"V") else 1
    else:
        report.format = "unknown"
        report.error = f"not a joblib-rs or joblib file (first byte {data[:1]!r})"
        return
    fh = io.BytesIO(data)
    seen: set[str] = set()
    try:
        _ScanUnpickler(fh, report.arrays, seen).load()
    except CliError as e:
        report.error = str(e)
        return
    except (pickle.UnpicklingError, EOFError, struct.error, IndexError, KeyError) as e:
        report.error = f"file is damaged or truncated: {type(e).__name__}: {e}"
        return
    except (TypeError, ValueError, AttributeError) as e:
        report.error = f"pickle could not be scanned: {type(e).__name__}: {e}"
        return
    report.globals = sorted(seen)
    extra = len(data) - fh.tell()
    if extra:
        report.error = f"file is damaged: {extra} bytes after the end of the pickle"


def _inspect_compressed_container(data: bytes, report: Report) -> None:
    """A container inside a whole-file compressed stream: verified from a temporary copy."""
    with tempfile.TemporaryDirectory(prefix="joblib-rs-inspect-") as tmp:
        path = os.path.join(tmp, "inner.jrs")
        with open(path, "wb") as f:
            f.write(data)
        inner = Report(report.file, "joblib-rs", len(data))
        _inspect_container(path, inner)
    report.version, report.frames, report.error = inner.version, inner.frames, inner.error
    report.raw_size = len(data)


def inspect_file(path: str) -> Report:
    """Describe and verify the file at ``path``.

    Parameters
    ----------
    path : str
        A file written by ``joblib_rs.dump`` or ``joblib.dump``.

    Returns
    -------
    Report
        The description; ``error`` is set when the file is damaged or foreign.

    Raises
    ------
    CliError
        If the file cannot be opened.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(16)
    except OSError as e:
        raise CliError(f"cannot read {path!r}: {e.strerror or e}") from e
    if os.path.isdir(path):
        raise CliError(f"{path!r} is a folder, not a file")
    kind = detect_format(prefix)
    if kind == "container":
        report = Report(path, "joblib-rs", size)
        _inspect_container(path, report)
        return report
    report = Report(path, "joblib pickle", size)
    with open(path, "rb") as f:
        data = f.read()
    if kind != "pickle":
        report.compression = kind
        try:
            data = decompress_whole(kind, data)
        except Exception as e:
            report.error = f"file is damaged: {kind} stream: {e}"
            return report
        if detect_format(data[:16]) == "container":
            report.format = "joblib-rs"
            _inspect_compressed_container(data, report)
            return report
    _scan_pickle(data, report)
    return report


def _print_human(report: Report) -> None:
    lines = [("file", report.file)]
    fmt = report.format + (f" {report.version}" if report.version else "")
    lines.append(("format", fmt))
    lines.append(("compression", report.compression or "none"))
    lines.append(("file size", f"{format_size(report.file_size)} ({report.file_size} bytes)"))
    if report.raw_size is not None:
        ratio = f", ratio {report.ratio:.2f}x" if report.ratio else ""
        lines.append(
            ("decoded size", f"{format_size(report.raw_size)} ({report.raw_size} bytes){ratio}")
        )
    if report.protocol is not None:
        lines.append(("pickle protocol", str(report.protocol)))
    width = max(len(k) for k, _ in lines) + 1
    for key, value in lines:
        print(f"{key + ':':<{width}} {value}")
    if report.frames:
        print()
        rows = [
            [
                str(f["index"]),
                f["kind"],
                f["codec"],
                format_size(f["raw_size"]),
                format_size(f["stored_size"]),
                f["checksum"],
            ]
            for f in report.frames
        ]
        headers = ["FRAME", "KIND", "CODEC", "RAW", "STORED", "XXH3-64"]
        print(format_table(headers, rows, right=(0, 3, 4)))
    if report.format == "joblib pickle" and report.error is None:
        print()
        if report.arrays:
            rows = [
                [
                    str(i),
                    a["dtype"],
                    "x".join(map(str, a["shape"])) or "()",
                    a["order"],
                    format_size(a["nbytes"]),
                ]
                for i, a in enumerate(report.arrays)
            ]
            print(format_table(["ARRAY", "DTYPE", "SHAPE", "ORDER", "BYTES"], rows, right=(0, 4)))
        else:
            print("No numpy arrays.")
        print()
        print("Globals the pickle refers to (load imports them; inspect ran none):")
        for name in report.globals or ["(none)"]:
            print(f"  {name}")
    print()
    if report.error is None:
        checked = (
            f"{len(report.frames)} frames, every checksum verified"
            if report.format == "joblib-rs"
            else "pickle scanned to its end"
        )
        print(f"OK ({checked})")
    else:
        print(f"DAMAGED: {report.error}")


def run_inspect(path: str, as_json: bool) -> int:
    """``inspect``: print the report; exit status 1 when the file is damaged."""
    import json
    import sys

    from joblib_rs.cli import _remote

    report = _remote.inspect_remote(path) if _remote.is_url(path) else inspect_file(path)
    if as_json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_human(report)
    if report.error is not None:
        raise CliError(f"{path}: {report.error}")
    return 0
