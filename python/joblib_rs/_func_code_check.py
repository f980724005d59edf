"""Whether a cached function's stored results belong to its current code.

Each function folder holds ``func_code.py``: the function's source, headed by ``# first
line: N``. Data flow of a call::

    MemorizedFunc call ─► CodeCheck._check_code: already compared in this process (this
      code object, this Memory.clear() generation)? ─► done (the common case: two lookups)
      └ else compare with func_code.py: same ─► remember (per function and location)
                                        changed ─► JobLibCollisionWarning if two functions
                                                   share the name; clear the function's cache
                                        missing ─► write it

As joblib, the comparison happens once per process and function (``_FUNCTION_HASHES``), again
after ``__code__`` is replaced or ``Memory.clear()``; lambdas, which all share one name, are
compared on every call.
"""

from __future__ import annotations

import os
import tokenize
import warnings
import weakref
from typing import TYPE_CHECKING, Any

from joblib_rs._func_inspect import get_func_code, get_func_name
from joblib_rs._store_backends import CacheWarning

__all__ = ["FIRST_LINE_TEXT", "CodeCheck", "JobLibCollisionWarning", "forget_checked_code"]

FIRST_LINE_TEXT = "# first line:"

# Functions whose code was checked against func_code.py in this process: func -> {store
# location: code object}. A hit then never reads func_code.py. Memory.clear() resets it.
_FUNCTION_HASHES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_NO_CODE = object()


class JobLibCollisionWarning(UserWarning):
    """Warn that there might be a collision between names of functions."""


def _extract_first_line(func_code: str) -> tuple[str, int]:
    if func_code.startswith(FIRST_LINE_TEXT):
        first, _, rest = func_code.partition("\n")
        return rest, int(first[len(FIRST_LINE_TEXT) :])
    return func_code, -1


def forget_checked_code() -> None:
    """Make every function compare its code with the store again (after ``Memory.clear()``:
    functions must write their code again before their next result)."""
    _FUNCTION_HASHES.clear()
    CodeCheck._generation += 1


class CodeCheck:
    """The change detection of :class:`~joblib_rs.memory.MemorizedFunc` (a mixin: it uses
    the function's ``func``, ``func_id``, ``store_backend``, ``_verbose``, ``warn`` and
    ``clear``)."""

    #: Bumped by ``Memory.clear()`` so functions forget their own verification too.
    _generation = 0
    func: Any
    func_id: str
    store_backend: Any
    _verbose: int
    _verified: tuple[Any, int] | None = None
    _func_code_info: tuple[str, str | None, int] | None = None
    _func_code_id: int | None = None

    if TYPE_CHECKING:
        # Provided by the class this is mixed into (Logger's warn, MemorizedFunc's clear).
        def warn(self, msg: str) -> None: ...
        def clear(self, warn: bool = True) -> None: ...

    @property
    def func_code_info(self) -> tuple[str, str | None, int]:
        """``(source, source file, first line)`` of the function, computed once (and again if
        its ``__code__`` is replaced)."""
        code = getattr(self.func, "__code__", None)
        if code is not None and self._func_code_id != id(code):
            self._func_code_id = id(code)
            self._func_code_info = None
        if self._func_code_info is None:
            self._func_code_info = get_func_code(self.func)
        return self._func_code_info

    def _check_code(self, stacklevel: int) -> None:
        """Make sure the stored results belong to this code of the function: compare it with
        ``func_code.py`` once per process (and after ``__code__`` changes). A changed function
        has its cache cleared."""
        code = getattr(self.func, "__code__", _NO_CODE)
        verified = self._verified
        if verified is not None and verified[0] is code and verified[1] == CodeCheck._generation:
            return
        location = str(self.store_backend.location)
        try:
            seen = _FUNCTION_HASHES.get(self.func)
        except TypeError:
            seen = None
        if seen is not None and seen.get(location) is code:
            self._verified = (code, CodeCheck._generation)
            return
        self._check_previous_func_code(stacklevel=stacklevel + 1)
        if self._is_named():
            self._remember_code(code, location)

    def _is_named(self) -> bool:
        # Lambdas all share one name: they are compared with the disk on every call, as in
        # joblib, so that alternating two of them keeps recomputing rather than mixing results.
        return getattr(self.func, "__name__", "<lambda>") != "<lambda>"

    def _remember_code(self, code: Any, location: str) -> None:
        self._verified = (code, CodeCheck._generation)
        try:
            _FUNCTION_HASHES.setdefault(self.func, {})[location] = code
        except TypeError:
            pass

    def _write_func_code(self, func_code: str, first_line: int) -> None:
        self.store_backend.store_cached_func_code(
            [self.func_id], f"{FIRST_LINE_TEXT} {first_line}\n{func_code}"
        )

    def _check_previous_func_code(self, stacklevel: int = 2) -> bool:
        """Compare the function's code with ``func_code.py``; warn about name collisions and
        clear the cache of a changed function. Returns whether the stored code matched."""
        func_code, source_file, first_line = self.func_code_info
        try:
            stored = self.store_backend.get_cached_func_code([self.func_id])
            old_func_code, old_first_line = _extract_first_line(stored)
        except (FileNotFoundError, NotADirectoryError):
            self._write_func_code(func_code, first_line)
            return False
        except (OSError, ValueError) as e:
            # Unreadable or garbled: the results cannot be trusted to match this code.
            warnings.warn(
                f"Cannot read the stored code of {self.func_id} ({type(e).__name__}: {e}); "
                "its cache is cleared.",
                CacheWarning,
                stacklevel=stacklevel,
            )
            self.clear(warn=False)
            return False
        if old_func_code == func_code:
            return True
        _, func_name = get_func_name(self.func, resolv_alias=False)
        if old_first_line == first_line == -1 or func_name == "<lambda>":
            description = (
                f"{func_name} ({source_file}:{first_line})" if first_line != -1 else func_name
            )
            warnings.warn(
                JobLibCollisionWarning(
                    f"Cannot detect name collisions for function '{description}'"
                ),
                stacklevel=stacklevel,
            )
        if old_first_line != first_line and source_file is not None:
            if os.path.exists(source_file):
                n_lines = len(func_code.split("\n"))
                try:
                    with tokenize.open(source_file) as f:
                        lines = f.readlines()[old_first_line - 1 : old_first_line - 2 + n_lines]
                    collision = "".join(lines).rstrip() == old_func_code.rstrip()
                except (OSError, SyntaxError, UnicodeDecodeError):
                    collision = False
            else:
                collision = source_file.startswith("<doctest ")
            if collision:
                warnings.warn(
                    JobLibCollisionWarning(
                        f"Possible name collisions between functions '{func_name}' "
                        f"({source_file}:{old_first_line}) and '{func_name}' "
                        f"({source_file}:{first_line})"
                    ),
                    stacklevel=stacklevel,
                )
        if self._verbose > 10:
            self.warn(f"Function {func_name} (identified by {self.func_id}) has changed.")
        self.clear(warn=True)
        return False
