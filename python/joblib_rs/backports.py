"""joblib's ``joblib.backports``: a loose version type, a memmap factory, an atomic rename.

- :class:`LooseVersion` (and its base :class:`Version`): the comparison of version strings of
  ``distutils``, removed from Python 3.12, which joblib keeps.
- :func:`make_memmap`: ``np.memmap`` with an optional clean-up of the file once the array is
  garbage collected.
- :func:`concurrency_safe_rename`: replace a file atomically, even while other processes do
  the same (on Windows, retries while the target is briefly locked).
"""

from __future__ import annotations

import functools
import os
import re
import time
import weakref
from typing import Any

__all__ = ["LooseVersion", "Version", "concurrency_safe_rename", "make_memmap"]


@functools.total_ordering
class Version:
    """Base of version types: comparisons go through ``self._cmp(other)`` (-1, 0 or 1)."""

    def __init__(self, vstring: str | None = None) -> None:
        if vstring:
            self.parse(vstring)

    def parse(self, vstring: str) -> None:
        """Read the version string (implemented by subclasses)."""
        self.vstring = vstring

    def _cmp(self, other: Any) -> Any:
        return NotImplemented

    def __repr__(self) -> str:
        return f"{type(self).__name__} ('{self}')"

    def __eq__(self, other: object) -> bool:
        order = self._cmp(other)
        return order if order is NotImplemented else order == 0

    def __lt__(self, other: object) -> bool:
        order = self._cmp(other)
        return order if order is NotImplemented else order < 0

    __hash__ = None  # type: ignore[assignment]


class LooseVersion(Version):
    """A version string split into numbers and letters, compared piece by piece.

    Any string is accepted: ``'1.13.0rc1'`` reads as ``[1, 13, 0, 'rc', 1]``. Instances compare
    with each other and with strings.

    Examples
    --------
    >>> LooseVersion("1.10") > "1.9"
    True
    >>> LooseVersion("2.0b1").version
    [2, 0, 'b', 1]
    """

    component_re = re.compile(r"(\d+ | [a-z]+ | \.)", re.VERBOSE)

    def parse(self, vstring: str) -> None:
        """Split ``vstring`` into its numeric and alphabetic components."""
        self.vstring = vstring
        pieces: list[int | str] = []
        for piece in self.component_re.split(vstring):
            if not piece or piece == ".":
                continue
            pieces.append(int(piece) if piece.isdigit() else piece)
        self.version = pieces

    def __str__(self) -> str:
        return self.vstring

    def __repr__(self) -> str:
        return f"LooseVersion ('{self}')"

    def _cmp(self, other: Any) -> Any:
        if isinstance(other, str):
            other = LooseVersion(other)
        elif not isinstance(other, LooseVersion):
            return NotImplemented
        if self.version == other.version:
            return 0
        return -1 if self.version < other.version else 1


def _unlink_quietly(filename: str) -> None:
    try:
        os.unlink(filename)
    except OSError:
        pass


def make_memmap(
    filename: str,
    dtype: Any = "uint8",
    mode: str = "r+",
    offset: int = 0,
    shape: Any = None,
    order: str = "C",
    unlink_on_gc_collect: bool = False,
) -> Any:
    """An ``np.memmap`` of ``filename``, as ``numpy.memmap(filename, dtype, mode, ...)``.

    Parameters
    ----------
    filename, dtype, mode, offset, shape, order
        As for ``numpy.memmap``.
    unlink_on_gc_collect : bool, default=False
        Delete the file once this array (and every view of it) is garbage collected. joblib
        counts the references of all processes through loky's resource tracker; here only the
        current process's array is followed, so give it to the last user of the file.

    Returns
    -------
    numpy.memmap
    """
    import numpy as np

    mm = np.memmap(filename, dtype=dtype, mode=mode, offset=offset, shape=shape, order=order)
    if unlink_on_gc_collect:
        # The mmap object lives as long as the array or any view of it.
        owner = getattr(mm, "_mmap", None)
        weakref.finalize(mm if owner is None else owner, _unlink_quietly, os.fspath(filename))
    return mm


if os.name == "nt":
    _ACCESS_DENIED = (5, 13)

    def concurrency_safe_rename(src: str, dst: str) -> None:
        """Rename ``src`` to ``dst``, replacing ``dst``; retried for up to a second while
        Windows reports the file in use by another process."""
        delay, waited = 0.001, 0.0
        while True:
            try:
                os.replace(src, dst)
                return
            except OSError as exc:
                if getattr(exc, "winerror", None) not in _ACCESS_DENIED or waited >= 1:
                    raise
            time.sleep(delay)
            waited += delay
            delay *= 2

else:

    def concurrency_safe_rename(src: str, dst: str) -> None:
        """Rename ``src`` to ``dst``, replacing ``dst`` atomically (``os.replace``)."""
        os.replace(src, dst)
