"""``joblib_rs.func_inspect`` gives what ``joblib.func_inspect`` gives, call for call."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

from joblib_rs import func_inspect, memory

joblib_fi = pytest.importorskip("joblib.func_inspect")
joblib_memory = pytest.importorskip("joblib.memory")


def plain(x, y=1):
    return x + y


def star(a, *args, b=2, **kwargs):
    return a


def kwonly(*, key):
    return key


class Klass:
    def method(self, x, y=3):
        return x

    @classmethod
    def cmethod(cls, z):
        return z


def outer():
    def inner(q):
        return q

    return inner


CALLS = [
    (plain, [], (1,), {}),
    (plain, [], (1, 2), {}),
    (plain, ["y"], (1,), {"y": 5}),
    (plain, ["x"], (), {"x": 1}),
    (star, [], (1, 2, 3), {"c": 4}),
    (star, ["*", "**"], (1, 2, 3), {"c": 4}),
    (star, ["b"], (1,), {}),
    (kwonly, [], (), {"key": 9}),
    (Klass().method, [], (1,), {}),
    (Klass().method, ["self"], (1,), {"y": 0}),
    (Klass.cmethod, [], (5,), {}),
    (outer(), [], (np.arange(3),), {}),
]

BAD_CALLS = [
    (plain, [], (), {}),  # missing argument
    (plain, [], (1, 2, 3), {}),  # too many
    (plain, [], (1,), {"x": 2}),  # given twice
    (plain, [], (1,), {"z": 2}),  # unknown keyword
    (kwonly, [], (), {}),  # missing keyword-only
    (plain, ["nope"], (1,), {}),  # ignoring an unknown parameter
    (plain, "x", (1,), {}),  # ignore list given as a string
]


@pytest.mark.parametrize("func, ignore, args, kwargs", CALLS)
def test_filter_args_as_joblib(func, ignore, args, kwargs):
    ours = func_inspect.filter_args(func, ignore, args, kwargs)
    theirs = joblib_fi.filter_args(func, ignore, args, kwargs)
    assert ours.keys() == theirs.keys()
    for key in ours:
        if isinstance(ours[key], np.ndarray):
            np.testing.assert_array_equal(ours[key], theirs[key])
        else:
            assert ours[key] == theirs[key], key


@pytest.mark.parametrize("func, ignore, args, kwargs", BAD_CALLS)
def test_filter_args_errors_as_joblib(func, ignore, args, kwargs):
    with pytest.raises(ValueError) as ours:
        func_inspect.filter_args(func, ignore, args, kwargs)
    with pytest.raises(ValueError) as theirs:
        joblib_fi.filter_args(func, ignore, args, kwargs)
    assert str(ours.value) == str(theirs.value)


def test_filter_args_on_an_uninspectable_callable_warns_with_an_ignore_list():
    part = functools.partial(plain, 1)
    assert func_inspect.filter_args(part, [], (2,), {}) == {"*": [2], "**": {}}
    with pytest.warns(UserWarning, match="Cannot inspect object"):
        func_inspect.filter_args(part, ["y"], (2,), {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        func_inspect.filter_args(part, [], (2,))


@pytest.mark.parametrize(
    "func",
    [
        plain,
        star,
        Klass.method,
        Klass().method,
        Klass.cmethod,
        outer(),
        lambda x: x,
        np.add,
        functools.partial(plain, 1),
        len,
    ],
)
def test_get_func_name_as_joblib(func):
    assert func_inspect.get_func_name(func) == joblib_fi.get_func_name(func)
    assert func_inspect.get_func_name(func, resolv_alias=False, win_characters=False) == (
        joblib_fi.get_func_name(func, resolv_alias=False, win_characters=False)
    )


@pytest.mark.parametrize("func", [plain, Klass.method, outer(), np.add])
def test_get_func_code_as_joblib(func):
    assert func_inspect.get_func_code(func) == joblib_fi.get_func_code(func)


def test_clean_win_chars_as_joblib():
    text = "<lambda>!c:\\x"
    assert func_inspect._clean_win_chars(text) == joblib_fi._clean_win_chars(text)


@pytest.mark.parametrize(
    "args, kwargs",
    [((1, "a"), {}), ((np.arange(200.0),), {"k": [1, 2]}), (("x" * 100, "y" * 100, 3), {})],
)
def test_format_signature_and_call_as_joblib(args, kwargs):
    assert func_inspect.format_signature(plain, *args, **kwargs) == (
        joblib_fi.format_signature(plain, *args, **kwargs)
    )
    assert func_inspect.format_call(plain, args, kwargs, "Tool") == (
        joblib_fi.format_call(plain, args, kwargs, "Tool")
    )


@pytest.mark.parametrize("text", ["# first line: 12\ndef f():\n    pass\n", "def f(): pass", ""])
def test_extract_first_line_as_joblib(text):
    assert memory.extract_first_line(text) == joblib_memory.extract_first_line(text)


def test_memory_reexports_the_helpers():
    assert memory.filter_args is func_inspect.filter_args
    assert memory.extract_first_line is func_inspect.extract_first_line
    spec = func_inspect.full_argspec_type(*range(7))
    assert spec.kwonlydefaults == 5
