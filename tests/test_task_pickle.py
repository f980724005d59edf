"""Task pickling: the C pickler when everything travels by reference, cloudpickle otherwise.

Every payload must load in a fresh interpreter that has none of this test's objects.
"""

import math
import pickle
import subprocess
import sys
import types

import cloudpickle
import numpy as np
import pytest

from joblib_rs import _task_pickle


def _load_elsewhere(payload: bytes, expression: str) -> str:
    """Unpickles ``payload`` in a fresh interpreter as ``obj`` and prints ``expression``."""
    code = (
        f"import pickle, sys\nobj = pickle.loads(sys.stdin.buffer.read())\nprint({expression})\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=payload, capture_output=True, timeout=60, check=True
    )
    return out.stdout.decode().strip()


def test_importable_functions_and_data_use_the_standard_pickler():
    obj = [math.sqrt, {"a": (1, 2.5, "x")}, None, range(3)]
    assert _task_pickle.dumps(obj) == pickle.dumps(obj, protocol=_task_pickle.PROTOCOL)


def test_a_lambda_travels_by_value():
    payload = _task_pickle.dumps([lambda x: x * 3])
    assert _load_elsewhere(payload, "obj[0](14)") == "42"


def test_a_closure_travels_with_its_cells():
    def make(k):
        def scaled(x):
            return k * x

        return scaled

    assert _load_elsewhere(_task_pickle.dumps(make(7)), "obj(6)") == "42"


def _main_function():
    f = types.FunctionType((lambda x: x + 40).__code__, {}, "f")
    f.__module__ = "__main__"
    f.__qualname__ = "f"
    return f


def test_functions_of_main_travel_by_value():
    # The standard pickler would write a reference to __main__.f, which a worker's __main__
    # does not have: the fast path must refuse it.
    f = _main_function()
    payload = _task_pickle.dumps({"fn": f})
    assert _load_elsewhere(payload, "obj['fn'](2)") == "42"


def test_classes_of_main_travel_by_value():
    cls = type("Point", (), {"__module__": "__main__", "norm": lambda self: 5})
    payload = _task_pickle.dumps(cls())
    assert _load_elsewhere(payload, "obj.norm()") == "5"


def test_modules_registered_by_value_disable_the_fast_path(monkeypatch):
    module = types.ModuleType("jrs_by_value_mod")

    def answer():
        return 42

    answer.__module__ = module.__name__
    module.answer = answer
    monkeypatch.setitem(sys.modules, module.__name__, module)
    cloudpickle.register_pickle_by_value(module)
    try:
        payload = _task_pickle.dumps(answer)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    assert _load_elsewhere(payload, "obj()") == "42"


def test_arrays_are_offered_to_the_reducer_on_both_paths():
    seen = []

    def reduce_array(array):
        seen.append(array.shape)
        return np.zeros, (array.shape,)

    arr = np.arange(6.0).reshape(2, 3)
    fast = _task_pickle.dumps([arr], reduce_array)
    assert pickle.loads(fast)[0].tolist() == [[0.0] * 3] * 2

    class ViaCloudpickle(cloudpickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, np.ndarray):
                return reduce_array(obj)
            return super().reducer_override(obj)

    slow = _task_pickle.dumps(
        [arr, lambda: 1], reduce_array, lambda buf: ViaCloudpickle(buf, protocol=5)
    )
    loaded = pickle.loads(slow)
    assert loaded[0].shape == (2, 3) and not loaded[0].any() and loaded[1]() == 1
    assert seen[0] == seen[-1] == (2, 3)


def test_unpicklable_objects_raise():
    import threading

    with pytest.raises(TypeError):
        _task_pickle.dumps([threading.Lock()])
