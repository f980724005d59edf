"""pytest plugin standing in for the ``conftest.py`` of joblib's repository (not in the wheel).

Loaded with ``-p joblib_suite_plugin`` by ``tests/compat/run_joblib_suite.py``; it gives joblib's
test files the fixtures they expect from that conftest: dask's event-loop fixtures.
"""

from __future__ import annotations

try:
    from distributed.utils_test import (  # noqa: F401  (fixtures, found by name)
        cleanup,
        loop,
        loop_in_thread,
    )
except ImportError:  # dask is optional: its test file skips itself then
    pass
