"""Inputs ``tests/fuzz_safe_load.py`` found that ``load(..., allowed="safe")`` mishandled.

The dtype cases run in a fresh interpreter: an audit hook cannot be removed, and the datetime
case crashed the process (numpy's ``dtype.__setstate__``) before the policy refused it.
"""

import json
import os
import pickle
import subprocess
import sys

import pytest

import joblib_rs
from joblib_rs.numpy_pickle_compat import write_zfile

# numpy.dtype(code, False, True) as numpy pickles a dtype, in protocol 0; {state} its BUILD.
CHILD = r"""
import json, pickle, sys
import numpy as np
from joblib_rs import _restricted

def dtype_pickle(code, state=b""):
    return b"cnumpy\ndtype\n(V" + code.encode() + b"\nI00\nI01\ntR" + state + b"."

def load(data):
    try:
        return str(_restricted.unpickle(data, _restricted.Loader(rules))[0])
    except Exception as exc:
        if type(exc) is pickle.UnpicklingError:  # a refusal, not a damaged file
            return "refused"
        return f"{type(exc).__name__}: {exc}"

rules = _restricted.rules_for("safe")
honest = [load(dtype_pickle(c)) for c in ("f8", "V16", "U3")]
events = []
sys.addaudithook(lambda event, args: events.append(event) if event == "compile" else None)
outcomes = {name: load(data) for name, data in CASES.items()}
print(json.dumps({"honest": honest, "outcomes": outcomes, "compile": len(events)}))
"""


def _run(cases: str) -> dict:
    code = CHILD.replace("CASES.items()", f"({cases}).items()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["honest"] == ["float64", "|V16", "<U3"]
    return result


def test_dtype_codes_with_a_leading_digit_are_refused_without_compiling():
    # numpy parses "7", "01", "2f8" as comma strings with ast.literal_eval: a compile, and
    # for "01" a SyntaxError outside load's error contract. numpy never pickles such codes.
    result = _run("{c: dtype_pickle(c) for c in ('7', '01', '2f8', '3i4')}")
    assert result["outcomes"] == dict.fromkeys(("7", "01", "2f8", "3i4"), "refused")
    assert result["compile"] == 0


def test_a_datetime_dtype_state_without_its_unit_is_refused():
    # numpy.dtype("M8") then BUILD (3, '>', None, None, None, -1, -1, 0): numpy's
    # __setstate__ crashes on a datetime state without the 9th item (the unit).
    cases = """{
        "no unit": dtype_pickle("M8", b"(I3\\nV>\\nNNNI-1\\nI-1\\nI0\\ntb"),
        "unit None": dtype_pickle("m8", b"(I4\\nV<\\nNNNI-1\\nI-1\\nI0\\nNtb"),
        "honest M8[ns]": pickle.dumps(np.dtype("M8[ns]"), protocol=2),
        "honest m8": pickle.dumps(np.dtype("m8"), protocol=0),
    }"""
    result = _run(cases)
    assert result["outcomes"]["no unit"] == "refused"
    assert result["outcomes"]["unit None"] == "refused"
    assert result["outcomes"]["honest M8[ns]"] == "datetime64[ns]"
    assert result["outcomes"]["honest m8"] == "timedelta64"


class _MakesFolder:
    """Pickles as a call of ``os.mkdir``: a visible effect if a load runs it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_a_file_of_old_joblib_is_refused_by_a_restricted_load(tmp_path):
    # A Z-file (joblib < 0.10: b"ZF" + hex length + zlib data) was read by pickle's own
    # unpickler whatever `allowed` said: the file's globals ran. Found from the fuzzer's
    # "ValueError: invalid literal for int() with base 16" on a ZF-prefixed input.
    target = tmp_path / "made-by-the-file"
    path = tmp_path / "old.pkl"
    with open(path, "wb") as fh:
        write_zfile(fh, pickle.dumps(_MakesFolder(str(target)), protocol=2))
    for allowed in ("safe", ["safe", "collections.OrderedDict"]):
        with pytest.raises(pickle.UnpicklingError, match=r"joblib < 0\.10 is forbidden"):
            joblib_rs.load(path, allowed=allowed)
        with open(path, "rb") as fh, pytest.raises(pickle.UnpicklingError):
            joblib_rs.load(fh, allowed=allowed)
    assert not target.exists()
    # Unrestricted, the file is read as joblib reads it (its code runs: it is trusted).
    with pytest.warns(DeprecationWarning, match=r"joblib version less than 0\.10"):
        joblib_rs.load(path)
    assert target.is_dir()
