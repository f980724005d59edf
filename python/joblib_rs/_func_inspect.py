"""What ``Memory`` needs to know about a function: its identity, its code, its call signature.

- :func:`get_func_name` gives the folder a function's cache lives in (module path + name),
  as joblib names it so caches are laid out the same way.
- :func:`get_func_code` gives the text compared against ``func_code.py`` to detect that the
  function changed; it never depends on ``PYTHONHASHSEED`` or on the process.
- :class:`ArgBinder` binds call arguments to the signature once analysed, so a cache hit does
  not pay for :func:`inspect.signature` on every call.
- :func:`format_call`, :func:`format_signature`, :func:`format_time`: the verbose messages.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import os
import pprint
import re
import sys
import tokenize
import types
import warnings
from typing import Any

__all__ = [
    "ArgBinder",
    "code_fingerprint",
    "format_call",
    "format_signature",
    "format_time",
    "get_func_code",
    "get_func_name",
    "pformat",
]


def get_func_name(func: Any, resolv_alias: bool = True) -> tuple[list[str], str]:
    """The module path (as a list of names) and the name identifying ``func``.

    Functions of ``__main__`` get the path of their script appended to the module name (so two
    scripts do not share a cache); IPython cell numbers are dropped so re-running a cell keeps
    its cache. Nested functions and methods get their enclosing qualified names.
    """
    module = getattr(func, "__module__", None)
    if module is None and not hasattr(func, "__module__"):
        try:
            found = inspect.getmodule(func)
            module = found.__name__ if found is not None else None
        except TypeError:
            module = getattr(type(func), "__module__", "unknown")
    module = module or ""
    if module == "__main__":
        try:
            filename: str | None = os.path.abspath(inspect.getsourcefile(func) or "")
        except Exception:
            filename = None
        if filename:
            parts = filename.split(os.sep)
            if parts[-1].startswith("<ipython-input"):
                # <ipython-input-N-HASH>: drop the cell number N, keep the code hash.
                pieces = parts[-1].split("-")
                parts[-1] = "-".join(pieces[:2] + pieces[3:])
            elif len(parts) > 2 and parts[-2].startswith("ipykernel_"):
                parts[-2] = "ipykernel"
            filename = "-".join(parts)
            if filename.endswith(".py"):
                filename = filename[:-3]
            module = f"{module}-{filename}"
    modules = module.split(".")
    # ``resolv_alias`` is accepted for joblib's signature; joblib's alias detection looks for
    # a Python 2 attribute and never applies, so neither does it here: names stay stable.
    name = getattr(func, "__name__", None) or "unknown"
    qualname = getattr(func, "__qualname__", None)
    if isinstance(qualname, str) and qualname != name and "." in qualname:
        modules.extend(qualname.split(".")[:-1])
    return modules, name


def code_fingerprint(code: types.CodeType) -> str:
    """A digest of what a code object does, the same in every process.

    ``hash(code)`` would do within one process, but string hashes are salted per process: a
    fingerprint written to ``func_code.py`` must read the same in the next one or the cache is
    wiped. Positions (file name, line numbers) are left out: moving a function does not change
    it.
    """
    fields: list[str] = [
        code.co_name,
        code.co_code.hex(),
        code.co_exceptiontable.hex(),
        repr((code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount)),
        repr(code.co_flags),
        *code.co_names,
        "|",
        *code.co_varnames,
        "|",
        *code.co_cellvars,
        "|",
        *code.co_freevars,
    ]
    for const in code.co_consts:
        nested = isinstance(const, types.CodeType)
        fields.append(code_fingerprint(const) if nested else repr(const))
    digest = hashlib.md5("\0".join(fields).encode("utf-8", "replace"), usedforsecurity=False)
    return digest.hexdigest()


def get_func_code(func: Any) -> tuple[str, str | None, int]:
    """``(code text, source file, first line)`` of ``func``, for change detection.

    The source is read from the file on every call (not through :mod:`linecache`), so an
    edited file is seen. Without a file (``python -c``, a REPL, ``exec``) the source comes from
    :mod:`inspect` when available, else from :func:`code_fingerprint`, with line ``-1``.
    Objects without code (numpy ufuncs, builtins) are identified by their ``repr``.
    """
    code = getattr(func, "__code__", None)
    if code is None:
        return repr(func), None, -1
    source_file: str = code.co_filename
    try:
        if os.path.exists(source_file):
            with tokenize.open(source_file) as f:
                first_line = code.co_firstlineno
                tail = list(itertools.islice(f, first_line - 1, None))
            return "".join(inspect.getblock(tail)), source_file, first_line
        lines, _ = inspect.getsourcelines(func)
        line_no = 1
        doctest = re.match(r"<doctest (.*\.rst)\[(.*)\]>", source_file)
        if doctest is not None:
            source_file = f"<doctest {doctest.group(1)}>"
            line_no = int(doctest.group(2))
        return "".join(lines), source_file, line_no
    except Exception:
        return code_fingerprint(code), source_file, -1


def _signature_str(name: str, sig: inspect.Signature) -> str:
    return f"{name}{sig}"


def _called_str(name: str, args: Any, kwargs: dict[str, Any]) -> str:
    args_str = repr(tuple(args))[1:-1].rstrip(",")
    kwargs_str = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}({args_str}, {kwargs_str})"


class ArgBinder:
    """Binds call arguments of one function into the dict that is hashed for the cache key.

    The dict maps each parameter name to its value (defaults filled in), ``'*'`` to the extra
    positional arguments and ``'**'`` to the extra keyword arguments, minus the ``ignore``d
    names: the same dict joblib hashes, so the same calls share an entry.
    """

    __slots__ = (
        "_bad_ignore",
        "_defaults",
        "_func",
        "_ignore",
        "_kwonly",
        "_name",
        "_positional",
        "_self",
        "_sig",
        "_varargs",
        "_varkw",
        "opaque",
    )

    def __init__(self, func: Any, ignore: list[str]) -> None:
        if isinstance(ignore, str):
            raise ValueError(
                "ignore_lst must be a list of parameters to ignore "
                f"{ignore} (type {type(ignore)}) was given"
            )
        self._func = func
        self._ignore = list(ignore)
        # Callables without an inspectable signature (ufuncs, partials, callable objects) are
        # keyed by the raw arguments.
        self.opaque = not (inspect.isfunction(func) or inspect.ismethod(func))
        if self.opaque:
            if self._ignore:
                warnings.warn(
                    f"Cannot inspect object {func}, ignore list will not work.", stacklevel=3
                )
            return
        self._sig = inspect.signature(func)
        self._name = get_func_name(func, resolv_alias=False)[1]
        self._positional: list[str] = []
        self._kwonly: list[str] = []
        self._varargs: str | None = None
        self._varkw: str | None = None
        self._defaults: dict[str, Any] = {}
        for p in self._sig.parameters.values():
            if p.kind is p.POSITIONAL_OR_KEYWORD:
                self._positional.append(p.name)
            elif p.kind is p.KEYWORD_ONLY:
                self._kwonly.append(p.name)
            elif p.kind is p.VAR_POSITIONAL:
                self._varargs = p.name
            elif p.kind is p.VAR_KEYWORD:
                self._varkw = p.name
            if p.default is not p.empty:
                self._defaults[p.name] = p.default
        self._self = None
        if inspect.ismethod(func):
            # A bound method: its instance is an argument like any other.
            self._self = func.__self__
            first = next(iter(inspect.signature(func.__func__).parameters))
            self._positional.insert(0, first)
        known = set(self._positional) | set(self._kwonly) | set(self._defaults)
        if self._varargs is not None:
            known.add("*")
        if self._varkw is not None:
            known.add("**")
        # Reported at call time, as joblib does.
        self._bad_ignore = next(
            (
                f"Ignore list: argument '{item}' is not defined for "
                f"function {_signature_str(self._name, self._sig)}"
                for item in self._ignore
                if item not in known
            ),
            None,
        )

    def layout(self) -> tuple[Any, ...] | None:
        """The binding plan for ``joblib_rs._core.CallPlan``, which binds calls as
        :meth:`bind` does: ``(positional, kwonly, defaults, has_varargs, has_varkw, ignore,
        bound_self, opaque)``; None when every call fails to bind (a bad ignore list)."""
        if self.opaque:
            return ([], [], {}, False, False, [], None, True)
        if self._bad_ignore is not None:
            return None
        return (
            list(self._positional),
            list(self._kwonly),
            dict(self._defaults),
            self._varargs is not None,
            self._varkw is not None,
            list(self._ignore),
            self._self,
            False,
        )

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The hashed dict of a call; ``ValueError`` (as joblib) for a call that cannot bind."""
        if self.opaque:
            return {"*": list(args), "**": kwargs}
        if self._bad_ignore is not None:
            raise ValueError(self._bad_ignore)
        if self._self is not None:
            args = (self._self, *args)
        bound = dict(self._defaults)
        positional = self._positional
        n_args = len(args)
        for i, name in enumerate(positional):
            if i < n_args:
                if name in kwargs:
                    raise ValueError(
                        f"Argument {name} was given both as positional and as keyword for "
                        f"{_signature_str(self._name, self._sig)}:\n"
                        f"    {_called_str(self._name, args, kwargs)} was called."
                    )
                bound[name] = args[i]
            elif name in kwargs:
                bound[name] = kwargs[name]
            elif name not in bound:
                self._fail("Wrong number of arguments", args, kwargs)
        if n_args > len(positional):
            if self._varargs is None:
                self._fail("Too many arguments", args, kwargs)
            bound["*"] = list(args[len(positional) :])
        elif self._varargs is not None:
            bound["*"] = []
        for name in self._kwonly:
            if name in kwargs:
                bound[name] = kwargs[name]
            elif name not in bound:
                self._fail("Wrong number of arguments", args, kwargs)
        extra = {k: v for k, v in kwargs.items() if k not in bound}
        if self._varkw is not None:
            bound["**"] = extra
        elif extra:
            self._fail("Too many keyword arguments", args, kwargs)
        for name in self._ignore:
            bound.pop(name, None)
        return bound

    def _fail(self, what: str, args: Any, kwargs: dict[str, Any]) -> None:
        raise ValueError(
            f"{what} for {_signature_str(self._name, self._sig)}:\n"
            f"    {_called_str(self._name, args, kwargs)} was called."
        )


def pformat(obj: Any, indent: int = 0, depth: int = 3) -> str:
    """``pprint.pformat`` with short numpy output (as joblib prints arguments)."""
    np = sys.modules.get("numpy")
    if np is None:
        return pprint.pformat(obj, indent=indent, depth=depth)
    saved = np.get_printoptions()
    np.set_printoptions(precision=6, threshold=64, edgeitems=1)
    try:
        return pprint.pformat(obj, indent=indent, depth=depth)
    finally:
        np.set_printoptions(**saved)


def _format_arg(arg: Any) -> str:
    text = pformat(arg, indent=2)
    return text if len(text) <= 1500 else f"{text[:700]}..."


def format_signature(func: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    """``(dotted path, call text)`` of a call, e.g. ``('mod.f', 'f(1, b=2)')``."""
    modules, name = get_func_name(func)
    path = ".".join([m for m in modules if m] + [name])
    parts = []
    previous = 0
    for arg in args:
        text = _format_arg(arg)
        if previous > 80:
            text = "\n" + text
        previous = len(text)
        parts.append(text)
    parts.extend(f"{k}={_format_arg(v)}" for k, v in kwargs.items())
    return path, f"{name}({', '.join(parts)})"


def format_call(func: Any, args: Any, kwargs: dict[str, Any], object_name: str = "Memory") -> str:
    """The block printed before a computation at ``verbose > 0``."""
    path, signature = format_signature(func, *args, **kwargs)
    return f"{'_' * 80}\n[{object_name}] Calling {path}...\n{signature}"


def format_time(t: float) -> str:
    """``'1.2s, 0.0min'``."""
    return f"{t:.1f}s, {t / 60.0:.1f}min"
