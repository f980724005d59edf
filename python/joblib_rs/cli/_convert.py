"""``joblib-rs convert IN OUT``: rewrite a file between joblib-rs's format and joblib's.

The input is loaded with ``joblib_rs.load(IN, allowed=["safe", *--allow])``: a file of plain
data (containers, numbers, strings, numpy arrays, dates...) converts without any code from it
running; a file naming another global is refused, naming it, unless ``--allow`` lists it. The
output is written by ``joblib_rs.dump(..., format=...)`` (atomically: temporary file, rename).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from dataclasses import dataclass
from typing import Any

from joblib_rs import _core
from joblib_rs._joblib_format import JOBLIB_CODECS
from joblib_rs.cli._errors import EXIT_USAGE, CliError
from joblib_rs.cli._format import format_size

__all__ = ["parse_compress", "run_convert"]

#: Codecs each output format can write (the core's codec table; joblib's subset).
_CODECS = {"jrs": tuple(_core.CODECS), "joblib": JOBLIB_CODECS}


def parse_compress(text: str, to: str) -> Any:
    """Parse ``--compress``: ``none``/``0``, a level ``1``-``9`` (the format's default codec),
    a codec name, or ``codec:level``.

    Parameters
    ----------
    text : str
        The option's value.
    to : {'jrs', 'joblib'}
        The output format (decides which codecs exist).

    Returns
    -------
    int or str or tuple
        A value for ``dump(compress=...)``.

    Raises
    ------
    CliError
        Status 2, naming the bad value.
    """
    value = text.strip().lower()
    codecs = _CODECS[to]
    expected = f"expected none, a level 1-9, or one of {', '.join(codecs)} with an optional :LEVEL"
    if value in ("none", "0", ""):
        return 0
    if value.isdigit():
        level = int(value)
        if not 1 <= level <= 9:
            raise CliError(f"--compress: invalid level {text!r} ({expected})", EXIT_USAGE)
        return level
    name, _, level_text = value.partition(":")
    if name not in codecs:
        raise CliError(
            f"--compress: {name!r} is not a codec of the {to} format ({expected})", EXIT_USAGE
        )
    if not level_text:
        return name
    max_level = _core.CODEC_LEVELS[name][1][1]
    if not level_text.isdigit() or not 0 <= int(level_text) <= max_level:
        raise CliError(
            f"--compress: invalid level {level_text!r} for {name} (0-{max_level})", EXIT_USAGE
        )
    return (name, int(level_text))


@dataclass
class _Input:
    format: str  # "jrs" or "joblib"
    compression: str | None


def _describe_input(path: str) -> _Input:
    from joblib_rs._loading import decompress_whole, detect_format

    try:
        with open(path, "rb") as f:
            prefix = f.read(16)
    except IsADirectoryError as e:
        raise CliError(f"{path!r} is a folder, not a file") from e
    except OSError as e:
        raise CliError(f"cannot read {path!r}: {e.strerror or e}") from e
    kind = detect_format(prefix)
    if kind == "container":
        return _Input("jrs", _container_codec(path))
    if kind == "pickle":
        return _Input("joblib", None)
    # Whole-file compressed: joblib's compressed pickle, or a container inside a stream.
    with open(path, "rb") as f:
        data = f.read()
    try:
        inner = decompress_whole(kind, data)
    except Exception:
        return _Input("joblib", kind)  # load reports the damage
    if detect_format(inner[:16]) == "container":
        return _Input("jrs", kind)
    return _Input("joblib", kind)


def _container_codec(path: str) -> str | None:
    try:
        found = _core.inspect_path(path)
    except Exception:
        return None  # load reports the damage
    codecs = {frame.codec for frame in found["frames"]} - {"none"}
    return sorted(codecs)[0] if codecs else None


def _default_compress(source: _Input, to: str) -> Any:
    """Keep the input's codec when the output format has it; else the format's default."""
    if source.compression is None:
        return 0
    if source.compression in _CODECS[to]:
        return source.compression
    return 3  # zstd 3 (jrs) or zlib 3 (joblib)


def run_convert(
    src: str,
    dst: str,
    to: str | None,
    compress: str | None,
    allow: list[str],
    fsync: bool,
    as_json: bool,
) -> int:
    """``convert``: load ``src`` restricted to plain data (and ``allow``), write ``dst``.

    Parameters
    ----------
    src, dst : str
        Input and output paths.
    to : {'jrs', 'joblib'} or None
        Output format; None is the other format than the input's.
    compress : str or None
        ``--compress`` text (see :func:`parse_compress`); None keeps the input's codec.
    allow : list of str
        ``module.qualname`` patterns allowed besides ``"safe"``.
    fsync : bool
        Flush the output to disk before renaming it into place.
    as_json : bool
        Print a JSON object instead of a sentence.

    Returns
    -------
    int
        0 on success (failures raise :class:`CliError`).
    """
    import joblib_rs

    source = _describe_input(src)
    target = to or ("joblib" if source.format == "jrs" else "jrs")
    value = parse_compress(compress, target) if compress is not None else None
    for pattern in allow:
        if pattern != "safe" and "." not in pattern:
            raise CliError(
                f"--allow: invalid pattern {pattern!r} (expected module.Name, or pkg.* for "
                "the classes of a package, e.g. sklearn.*)",
                EXIT_USAGE,
            )
    if value is None:
        value = _default_compress(source, target)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise CliError(f"{dst!r} is the input file: write the output elsewhere", EXIT_USAGE)
    try:
        obj = joblib_rs.load(src, allowed=["safe", *allow])
    except joblib_rs.CorruptFileError as e:
        raise CliError(f"{src}: {e}") from e
    except pickle.UnpicklingError as e:
        raise CliError(
            f"{src}: {e}. Nothing was written; pass --allow PATTERN for globals you trust"
        ) from e
    except OSError as e:
        raise CliError(f"cannot read {src!r}: {e.strerror or e}") from e
    try:
        joblib_rs.dump(obj, dst, compress=value, format=target, fsync=fsync)
    except ValueError as e:
        raise CliError(f"--compress: {e}", EXIT_USAGE) from e
    except OSError as e:
        raise CliError(f"cannot write {dst!r}: {e.strerror or e}") from e
    del obj
    in_size, out_size = os.path.getsize(src), os.path.getsize(dst)
    result: dict[str, Any] = {
        "input": src,
        "output": dst,
        "from": source.format,
        "to": target,
        "input_compression": source.compression,
        "compression": _compression_name(value, target),
        "input_size": in_size,
        "output_size": out_size,
    }
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        names = {"jrs": "joblib-rs", "joblib": "joblib"}
        print(
            f"Converted {src} ({names[source.format]}, "
            f"{source.compression or 'uncompressed'}, {format_size(in_size)}) "
            f"to {dst} ({names[target]}, {result['compression'] or 'uncompressed'}, "
            f"{format_size(out_size)})."
        )
    return 0


def _compression_name(value: Any, to: str) -> str | None:
    if value == 0 or value is False:
        return None
    if isinstance(value, tuple):
        return f"{value[0]}:{value[1]}"
    if isinstance(value, int):
        return f"{'zstd' if to == 'jrs' else 'zlib'}:{value}"
    return str(value)
