"""``import joblib`` resolving to joblib-rs, for running code written against joblib.

Put the folder holding this package first on ``PYTHONPATH`` (worker processes inherit it):

- ``joblib`` is the ``joblib_rs`` module object itself, and ``joblib.X`` is ``joblib_rs.X``
  (the same module object, registered under both names);
- ``joblib.testing`` and the ``joblib.test`` package come from the real joblib's files, found on
  the rest of ``sys.path``, so joblib's own test suite can run against joblib-rs.

A name joblib-rs lacks raises ``ModuleNotFoundError`` as a missing joblib module would.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

import joblib_rs

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Served from the real joblib's files rather than aliased.
_FROM_JOBLIB = ("joblib.testing", "joblib.test")


def _real_joblib_dir() -> str | None:
    """The folder of the installed joblib package (not this alias)."""
    others = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("joblib", others)
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(spec.submodule_search_locations))


class _AliasLoader(importlib.abc.Loader):
    """Hands out the already imported ``joblib_rs`` module for a ``joblib`` name."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the target module is already executed."""


class JoblibAliasFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder mapping ``joblib.X`` to ``joblib_rs.X``."""

    def __init__(self, joblib_dir: str | None) -> None:
        self.joblib_dir = joblib_dir

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("joblib."):
            return None
        if fullname.startswith("joblib.test."):
            # Found by the path finder inside the real ``joblib/test`` folder.
            return None
        if fullname in _FROM_JOBLIB:
            if self.joblib_dir is None:
                return None
            rel = fullname.split(".", 1)[1]
            folder = os.path.join(self.joblib_dir, rel)
            if os.path.isdir(folder):
                return importlib.util.spec_from_file_location(
                    fullname,
                    os.path.join(folder, "__init__.py"),
                    submodule_search_locations=[folder],
                )
            return importlib.util.spec_from_file_location(fullname, folder + ".py")
        target_name = "joblib_rs." + fullname.split(".", 1)[1]
        try:
            found = importlib.util.find_spec(target_name)
        except ModuleNotFoundError:
            found = None
        if found is None:
            return None
        return importlib.machinery.ModuleSpec(
            fullname,
            _AliasLoader(target_name),
            is_package=found.submodule_search_locations is not None,
        )


if not any(isinstance(f, JoblibAliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, JoblibAliasFinder(_real_joblib_dir()))
# The import system returns what ``sys.modules`` holds once this file has run.
sys.modules[__name__] = joblib_rs
