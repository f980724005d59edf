"""``joblib_rs.pool``: PicklingPool and MemmappingPool are real multiprocessing pools."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from joblib_rs.pool import MemmappingPool, PicklingPool


class Celsius:
    def __init__(self, value: float) -> None:
        self.value = value


def _reduce_celsius(obj: Celsius) -> tuple[object, tuple[float]]:
    # Travels as a float and comes back as one: proves the forward reducer was used.
    return float, (obj.value + 1000.0,)


def _describe(x: object) -> tuple[str, object]:
    if isinstance(x, np.ndarray):
        return type(x).__name__, (float(x.sum()), getattr(x, "filename", None))
    return type(x).__name__, x


def test_pickling_pool_uses_forward_reducers() -> None:
    with PicklingPool(2, forward_reducers={Celsius: _reduce_celsius}) as pool:
        assert pool.apply_async(_describe, (Celsius(5.0),)).get(timeout=60) == ("float", 1005.0)
        assert pool.map_async(abs, [-1, -2, 3]).get(timeout=60) == [1, 2, 3]


def test_memmapping_pool_sends_large_arrays_as_memmaps(tmp_path: Path) -> None:
    big = np.arange(200_000, dtype=np.float64)
    small = np.arange(10.0)
    pool = MemmappingPool(2, temp_folder=str(tmp_path), max_nbytes=1000)
    try:
        kind, (total, filename) = pool.apply_async(_describe, (big,)).get(timeout=60)
        assert kind == "memmap" and total == big.sum()
        assert filename is not None and filename.startswith(str(tmp_path))
        assert pool.apply_async(_describe, (small,)).get(timeout=60) == (
            "ndarray",
            (45.0, None),
        )
        folder = pool._temp_folder
        assert os.listdir(folder)
    finally:
        pool.terminate()
    assert not os.path.exists(folder)
