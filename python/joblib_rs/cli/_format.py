"""Parsing and printing for the command line: sizes, ages, durations and aligned tables.

Sizes use powers of 1024 throughout, as ``Memory(bytes_limit='10M')`` does: ``10K`` is
10240 bytes and prints back as ``10.0 KB``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence

__all__ = [
    "format_age",
    "format_duration",
    "format_size",
    "format_table",
    "parse_age",
    "parse_size",
]

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """A size such as ``123``, ``10K``, ``1.5G``, ``2T``, ``10MB`` or ``10MiB`` in bytes.

    Parameters
    ----------
    text : str
        A number, optionally followed by ``K``, ``M``, ``G`` or ``T`` (powers of 1024) and
        by ``B`` or ``iB``.

    Returns
    -------
    int
        The number of bytes (rounded down).

    Raises
    ------
    ValueError
        If ``text`` is not such a size.
    """
    match = _SIZE_RE.match(text)
    if match is None or (match.group(3) and match.group(3).upper() == "IB" and not match.group(2)):
        raise ValueError(f"invalid size {text!r} (expected e.g. 123, 10K, 500M, 1.5G, 2T)")
    value = float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    return int(value)


def parse_age(text: str) -> float:
    """An age such as ``90s``, ``15m``, ``12h``, ``30d`` or ``2w`` in seconds.

    Parameters
    ----------
    text : str
        A number followed by ``s``, ``m``, ``h``, ``d`` or ``w`` (a bare number is seconds).

    Returns
    -------
    float
        The number of seconds.

    Raises
    ------
    ValueError
        If ``text`` is not such an age.
    """
    match = _AGE_RE.match(text)
    if match is None:
        raise ValueError(f"invalid age {text!r} (expected e.g. 90s, 15m, 12h, 30d, 2w)")
    return float(match.group(1)) * _AGE_UNITS[(match.group(2) or "s").lower()]


def format_size(nbytes: int | None) -> str:
    """``1234567`` as ``1.2 MB`` (powers of 1024); ``None`` as ``-``."""
    if nbytes is None:
        return "-"
    if nbytes < 1024:
        return f"{nbytes} B"
    value = float(nbytes)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def format_age(timestamp: float | None, now: float | None = None) -> str:
    """How long ago ``timestamp`` (seconds since the epoch) was: ``3 min ago``, ``2 days ago``.

    Parameters
    ----------
    timestamp : float or None
        The moment; ``None`` prints ``-``.
    now : float, optional
        The current time (default: ``time.time()``).

    Returns
    -------
    str
        A short human phrase.
    """
    if timestamp is None:
        return "-"
    seconds = (time.time() if now is None else now) - timestamp
    if seconds < 0:
        return "in the future"
    if seconds < 1:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    for size, unit in ((86400 * 7, "week"), (86400, "day"), (3600, "hour"), (60, "min")):
        if seconds >= size:
            count = int(seconds // size)
            plural = "s" if count > 1 and unit != "min" else ""
            return f"{count} {unit}{plural} ago"
    return "just now"  # pragma: no cover - unreachable (seconds >= 60 here)


def format_duration(seconds: float | None) -> str:
    """A computation time: ``0.012 s``, ``3.4 s``, ``2 min 05 s``; ``None`` as ``-``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 10:
        return f"{seconds:.3f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> str:
    """Rows as aligned columns under a header line.

    Parameters
    ----------
    headers : sequence of str
        Column titles.
    rows : sequence of sequences of str
        The cells, one sequence per row.
    right : sequence of int, optional
        Indices of the columns aligned to the right (numbers).

    Returns
    -------
    str
        The table, lines joined by newlines, without trailing spaces.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
