"""Inspection of functions and calls, as joblib's ``joblib.func_inspect`` module offers it.

The names and signatures are joblib's, for tools built on joblib's caching helpers:
:func:`filter_args` (the dict of arguments a cache key is computed from), :func:`get_func_code`,
:func:`get_func_name`, :func:`format_signature`, :func:`format_call`. ``Memory`` itself uses
the same code, through ``joblib_rs._func_inspect``.
"""

from __future__ import annotations

import collections
import os
import urllib.parse
from typing import Any

from joblib_rs._func_inspect import (
    ArgBinder,
    code_fingerprint,
    format_call,
    format_signature,
    get_func_code,
    pformat,
)
from joblib_rs._func_inspect import get_func_name as _get_func_name

__all__ = [
    "FIRST_LINE_TEXT",
    "extract_first_line",
    "filter_args",
    "format_call",
    "format_signature",
    "full_argspec_fields",
    "full_argspec_type",
    "get_func_code",
    "get_func_name",
    "pformat",
]

#: Fields of :data:`full_argspec_type` (those of ``inspect.FullArgSpec``).
full_argspec_fields = "args varargs varkw defaults kwonlyargs kwonlydefaults annotations"
#: A named tuple with the fields of ``inspect.getfullargspec``'s result.
full_argspec_type = collections.namedtuple("FullArgSpec", full_argspec_fields)  # type: ignore[misc]

#: Prefix of the line ``Memory`` writes before a function's code in ``func_code.py``.
FIRST_LINE_TEXT = "# first line:"

#: Characters Windows cannot have in a file name, percent-encoded by :func:`get_func_name`.
_WIN_UNSAFE = ("<", ">", "!", ":", "\\")


def _code_fingerprint(code: Any) -> str:
    """A digest of a code object, the same in every process (see ``code_fingerprint``)."""
    return code_fingerprint(code)


def _clean_win_chars(string: str) -> str:
    """``string`` with the characters Windows refuses in file names percent-encoded."""
    for char in _WIN_UNSAFE:
        string = string.replace(char, urllib.parse.quote(char))
    return string


def get_func_name(
    func: Any, resolv_alias: bool = True, win_characters: bool = True
) -> tuple[list[str], str]:
    """The import path of ``func`` (as a list of module names) and a name for it.

    Parameters
    ----------
    func : callable
        The function to name.
    resolv_alias : bool, default=True
        Accepted for joblib's signature; joblib's alias detection never applies on Python 3,
        so names never get its ``-alias`` suffix here either.
    win_characters : bool, default=True
        On Windows, percent-encode the characters file names cannot hold (``<``, ``>``...).

    Returns
    -------
    modules : list of str
        Module path, extended with the enclosing classes or functions of a nested function;
        for a function of ``__main__``, the module name carries the script's path.
    name : str
        The function's ``__name__`` (``'unknown'`` without one).

    Examples
    --------
    >>> get_func_name(os.path.join)
    (['posixpath'], 'join')
    """
    modules, name = _get_func_name(func, resolv_alias=resolv_alias)
    if os.name == "nt" and win_characters:
        name = _clean_win_chars(name)
        modules = [_clean_win_chars(m) for m in modules]
    return modules, name


def filter_args(
    func: Any,
    ignore_lst: list[str],
    args: Any = (),
    kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The arguments of a call of ``func``, by parameter name, minus those ignored.

    Parameters
    ----------
    func : callable
        The function whose signature binds the arguments.
    ignore_lst : list of str
        Names of the parameters to leave out (``'*'`` and ``'**'`` for the extra positional
        and keyword arguments).
    args : sequence, default=()
        Positional arguments of the call.
    kwargs : dict, optional
        Keyword arguments of the call.

    Returns
    -------
    dict
        Each parameter's value (defaults filled in), ``'*'``: the list of extra positional
        arguments and ``'**'``: the dict of extra keyword arguments when ``func`` takes them.
        For a callable without an inspectable signature (``functools.partial``, a callable
        object): ``{'*': list(args), '**': kwargs}``, with a warning if ``ignore_lst`` is given.

    Raises
    ------
    ValueError
        If ``ignore_lst`` is a string, names a parameter ``func`` does not have, or if the call
        does not match the signature (the message shows the signature and the call).

    Examples
    --------
    >>> def f(x, y=0, *args, **kwargs):
    ...     pass
    >>> filter_args(f, ["y"], (1,), {"z": 2})
    {'x': 1, '*': [], '**': {'z': 2}}
    """
    kwargs = {} if kwargs is None else kwargs
    return ArgBinder(func, ignore_lst).bind(tuple(args), kwargs)


def extract_first_line(func_code: str) -> tuple[str, int]:
    """Split the ``'# first line: N'`` header ``Memory`` writes off a function's code text.

    Parameters
    ----------
    func_code : str
        Code text, possibly starting with the header line.

    Returns
    -------
    code : str
        The text without the header.
    first_line : int
        ``N``, or -1 without a header.

    Examples
    --------
    >>> extract_first_line("# first line: 12\\ndef f():\\n    pass")
    ('def f():\\n    pass', 12)
    """
    if not func_code.startswith(FIRST_LINE_TEXT):
        return func_code, -1
    header, _, code = func_code.partition("\n")
    return code, int(header[len(FIRST_LINE_TEXT) :])


def _signature_str(function_name: str, arg_sig: Any) -> str:
    """``name(signature)``, as error messages show a function."""
    return f"{function_name}{arg_sig}"


def _function_called_str(function_name: str, args: Any, kwargs: dict[str, Any]) -> str:
    """``name(args, kwargs)``, as error messages show a call."""
    args_text = repr(list(args))[1:-1]
    kwargs_text = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{function_name}({args_text}, {kwargs_text})"


def _format_arg(arg: Any) -> str:
    """An argument as :func:`format_signature` prints it (long ones cut)."""
    text = pformat(arg, indent=2)
    return text if len(text) <= 1500 else f"{text[:700]}..."
