"""Disk helpers of joblib's ``joblib.disk`` module: folder sizes, creation and removal.

Kept for code written against joblib's module layout (joblib-rs's stores size and clear
themselves in Rust): :func:`disk_used` and :func:`memstr_to_bytes` measure and parse sizes;
:func:`delete_folder` and :func:`rm_subdirs` remove folders, retrying while a file is in use.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "RM_SUBDIRS_N_RETRY",
    "RM_SUBDIRS_RETRY_TIME",
    "delete_folder",
    "disk_used",
    "memstr_to_bytes",
    "mkdirp",
    "rm_subdirs",
]

#: Seconds waited between two attempts of :func:`delete_folder`.
RM_SUBDIRS_RETRY_TIME = 0.1
#: Extra attempts :func:`delete_folder` makes before giving up.
RM_SUBDIRS_N_RETRY = 10

_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}

OnError = Callable[[Callable[..., Any], str, Any], Any]


def disk_used(path: str | os.PathLike[str]) -> int:
    """Space taken on disk by the files directly in ``path`` (and the folder itself), in KiB.

    Parameters
    ----------
    path : str or path-like
        A folder.

    Returns
    -------
    int
        Allocated size in kibibytes (blocks of 512 bytes where the platform reports them, else
        each file's size rounded up to the next 512 bytes).
    """
    total = 0
    for name in [*os.listdir(path), "."]:
        st = os.stat(os.path.join(path, name))
        blocks = getattr(st, "st_blocks", None)
        total += blocks * 512 if blocks is not None else (st.st_size // 512 + 1) * 512
    return int(total / 1024.0)


def memstr_to_bytes(text: str) -> int:
    """The number of bytes of a size written like ``'10G'``, ``'500M'`` or ``'1.5K'``.

    Raises
    ------
    ValueError
        If ``text`` does not end with K, M or G after a number.

    Examples
    --------
    >>> memstr_to_bytes("1.5K")
    1536
    """
    try:
        return int(_UNITS[text[-1]] * float(text[:-1]))
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise ValueError(
            f"Invalid literal for size give: {text} (type {type(text)}) should be "
            "alike '10G', '500M', '50K'."
        ) from exc


def mkdirp(d: str | os.PathLike[str]) -> None:
    """Create folder ``d`` and its parents, as ``mkdir -p`` does; an existing one is fine."""
    os.makedirs(d, exist_ok=True)


def rm_subdirs(path: str | os.PathLike[str], onerror: OnError | None = None) -> None:
    """Remove everything inside folder ``path``, keeping ``path`` itself.

    Parameters
    ----------
    path : str or path-like
        The folder to empty of its sub-folders.
    onerror : callable, optional
        Called as ``onerror(function, path, exc_info)`` for each failure instead of raising.
    """
    try:
        names = os.listdir(path)
    except OSError:
        if onerror is None:
            raise
        import sys

        onerror(os.listdir, os.fspath(path), sys.exc_info())
        return
    for name in names:
        delete_folder(os.path.join(path, name), onerror=onerror)


def delete_folder(
    folder_path: str | os.PathLike[str],
    onerror: OnError | None = None,
    allow_non_empty: bool = True,
) -> None:
    """Remove folder ``folder_path`` and its content, if it exists.

    Without ``onerror``, a failed removal (a file still open on some systems, a worker still
    writing) is retried :data:`RM_SUBDIRS_N_RETRY` times, :data:`RM_SUBDIRS_RETRY_TIME` seconds
    apart, before the error is raised.

    Parameters
    ----------
    folder_path : str or path-like
        The folder to remove; anything that is not a folder is left alone.
    onerror : callable, optional
        Handler given to :func:`shutil.rmtree` (no retries then).
    allow_non_empty : bool, default=True
        When false, a folder that still holds files raises ``OSError``.
    """
    if not os.path.isdir(folder_path):
        return
    if onerror is not None:
        shutil.rmtree(folder_path, False, onerror)
        return
    failures = 0
    while True:
        try:
            if not allow_non_empty:
                left = os.listdir(folder_path)
                if left:
                    raise OSError(
                        f"Expected empty folder {folder_path} but got {len(left)} files."
                    )
            shutil.rmtree(folder_path)
            return
        except OSError:
            failures += 1
            if failures > RM_SUBDIRS_N_RETRY:
                raise
        time.sleep(RM_SUBDIRS_RETRY_TIME)
