"""Small helpers of joblib's ``joblib._utils``: safe arithmetic, traceback-keeping calls.

- :func:`eval_expr` evaluates the arithmetic of options such as ``pre_dispatch='2*n_jobs'``
  (after the name is replaced by its value) without ``eval``.
- :class:`_TracebackCapturingWrapper` runs a function and returns, instead of raising, the
  exception it raised together with its formatted traceback, so the exception can be pickled
  back from a worker and re-raised there with the worker's traceback as its cause;
  :func:`_retrieve_traceback_capturing_wrapped_call` does the re-raising.
"""

from __future__ import annotations

import ast
import functools
import operator
import traceback
from collections.abc import Callable
from typing import Any

from joblib_rs._backends.config import _Sentinel

__all__ = ["eval_", "eval_expr", "limit"]

#: Arithmetic :func:`eval_expr` accepts, by AST node type.
operators: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}

#: Longest expression :func:`eval_expr` parses.
_MAX_LENGTH = 30
#: Largest magnitude of any intermediate value.
_MAX_VALUE = 10**6


def eval_expr(expr: str) -> int | float:
    """The value of an arithmetic expression of numbers, ``+ - * / // % **`` and parentheses.

    Raises
    ------
    ValueError
        If the expression is longer than 30 characters, holds anything else (names, calls,
        strings...), divides by zero, or reaches a value above 10**6 in magnitude.

    Examples
    --------
    >>> eval_expr("2*6")
    12
    >>> eval_expr("1 + 2*3**(4) / (6 + -7)")
    -161.0
    """
    if len(expr) > _MAX_LENGTH:
        raise ValueError(
            f"Expression {expr[:_MAX_LENGTH]!r}... is too long. "
            f"Max length is {_MAX_LENGTH}, got {len(expr)}."
        )
    try:
        return _evaluate(ast.parse(expr, mode="eval").body)
    except (TypeError, SyntaxError, OverflowError, KeyError, ZeroDivisionError) as exc:
        raise ValueError(f"{expr!r} is not a valid or supported arithmetic expression.") from exc


def limit(max_: float | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator making a function raise ``ValueError`` when it returns a number whose
    magnitude exceeds ``max_`` (non-numbers pass through)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def checked(*args: Any, **kwargs: Any) -> Any:
            value = func(*args, **kwargs)
            try:
                magnitude = abs(value)
            except TypeError:
                return value
            if max_ is not None and magnitude > max_:
                raise ValueError(f"Numeric literal {value} is too large, max is {max_}.")
            return value

        return checked

    return decorate


def _bounded(value: Any) -> Any:
    if abs(value) > _MAX_VALUE:
        raise ValueError(f"Numeric literal {value} is too large, max is {_MAX_VALUE}.")
    return value


def eval_(node: ast.AST) -> Any:
    """The value of one node of a parsed arithmetic expression (see :func:`eval_expr`)."""
    return _evaluate(node)


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return _bounded(node.value)
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        return _bounded(operators[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp):
        return _bounded(operators[type(node.op)](_evaluate(node.operand)))
    raise TypeError(node)


class _RemoteTraceback(Exception):
    """The formatted traceback of an exception raised elsewhere, shown as its cause."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _rebuild_exception(exc: BaseException, tb: str) -> BaseException:
    exc.__cause__ = _RemoteTraceback(f'\n"""\n{tb}"""')
    return exc


class _ExceptionWithTraceback:
    """An exception with its traceback as text: picklable, unlike the traceback object."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_exception, (self.exc, self.tb)


class _TracebackCapturingWrapper:
    """Call ``func(**kwargs)``; an exception is returned (with its traceback), not raised."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __call__(self, **kwargs: Any) -> Any:
        try:
            return self.func(**kwargs)
        except BaseException as exc:
            return _ExceptionWithTraceback(exc)


def _retrieve_traceback_capturing_wrapped_call(out: Any) -> Any:
    """The result of a :class:`_TracebackCapturingWrapper` call: raise it if an exception."""
    if isinstance(out, _ExceptionWithTraceback):
        rebuild, args = out.__reduce__()
        out = rebuild(*args)
    if isinstance(out, BaseException):
        raise out
    return out


_Sentinel = _Sentinel
