"""pytest plugin standing in for the ``conftest.py`` of joblib's repository (not in the wheel).

Loaded with ``-p joblib_suite_plugin`` by ``tests/compat/run_joblib_suite.py``. It

- gives joblib's test files the fixtures they expect from that conftest (dask's event-loop
  fixtures);
- checks that ``import joblib`` gives the library the run is for (``JOBLIB_SUITE_EXPECT``), so
  a misconfigured run cannot silently test the wrong one;
- stretches the whole-file watchdogs some test files arm with
  ``faulthandler.dump_traceback_later(timeout, exit=True)`` by ``JOBLIB_SUITE_WATCHDOG_SCALE``
  (default 4): on a shared 2-core machine a file can take longer than its author's budget,
  and the watchdog would kill the process before it writes its report. Per-test limits stay
  those of ``pytest-timeout``;
- with ``JOBLIB_SUITE_HASH_DEFAULT=md5``, makes ``hash_name='md5'`` the default of
  ``joblib_rs.hash`` (joblib's default), to check joblib-rs's md5 digests against joblib's own
  hashing tests, which pin joblib's values.
"""

from __future__ import annotations

import faulthandler
import os
from typing import Any

try:
    from distributed.utils_test import (  # noqa: F401  (fixtures, found by name)
        cleanup,
        loop,
        loop_in_thread,
    )
except ImportError:  # dask is optional: its test file skips itself then
    pass

_original_watchdog = faulthandler.dump_traceback_later


def _scaled_watchdog(timeout: float, *args: Any, **kwargs: Any) -> None:
    scale = float(os.environ.get("JOBLIB_SUITE_WATCHDOG_SCALE", "4"))
    _original_watchdog(timeout * scale, *args, **kwargs)


def pytest_configure(config: Any) -> None:
    faulthandler.dump_traceback_later = _scaled_watchdog  # type: ignore[assignment]
    default_hash = os.environ.get("JOBLIB_SUITE_HASH_DEFAULT")
    if default_hash:
        import joblib_rs.hashing

        joblib_rs.hashing.hash.__defaults__ = (default_hash, False)
    expected = os.environ.get("JOBLIB_SUITE_EXPECT")
    if expected:
        import joblib

        if joblib.__name__ != expected:
            raise RuntimeError(
                f"'import joblib' gives {joblib.__name__} ({joblib.__file__}), "
                f"this run is for {expected}"
            )


def pytest_report_header(config: Any) -> str:
    import joblib

    return f"joblib under test: {joblib.__name__} from {os.path.dirname(joblib.__file__)}"
