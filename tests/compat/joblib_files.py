"""Write files with the real joblib package, for the compatibility tests of joblib_rs.load."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

#: Compressions joblib can write here (lz4 needs the optional ``lz4`` package).
JOBLIB_COMPRESSIONS: list[Any] = [
    0,
    ("zlib", 3),
    ("gzip", 3),
    ("bz2", 3),
    ("xz", 3),
    ("lzma", 3),
]
if importlib.util.find_spec("lz4") is not None:
    JOBLIB_COMPRESSIONS.append(("lz4", 3))


def sample_object() -> dict[str, Any]:
    """Nested structure with arrays of several dtypes and layouts, as joblib users store."""
    rng = np.random.default_rng(0)
    return {
        "floats": rng.random((50, 7)),
        "fortran": np.asfortranarray(rng.random((6, 4))),
        "ints": np.arange(1000, dtype=np.int64),
        "big_endian": np.arange(10, dtype=">i4"),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 3)),
        "objects": np.array([1, "two", None, 3.0], dtype=object),
        "structured": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", ">f8")]),
        "dates": np.array(["2020-01-01", "2021-06-30"], dtype="M8[D]"),
        "text": np.array(["alpha", "beta"]),
        "plain": [("a", [1, 2, 3]), {"nested": (1.5, None, b"bytes")}],
    }


def write_with_joblib(directory: Path, compress: Any) -> Path:
    """Dump :func:`sample_object` with real joblib; returns the file path."""
    import joblib

    name = "plain" if compress == 0 else compress[0]
    path = directory / f"joblib_{name}.pkl"
    joblib.dump(sample_object(), path, compress=compress)
    return path
