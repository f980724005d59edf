"""``joblib-rs run``: run an unmodified program with ``import joblib`` bound to joblib-rs.

::

    joblib-rs run script.py [ARGS...]     python -m joblib_rs run -m package.module [ARGS...]

The program runs in this interpreter as ``__main__`` (``sys.argv`` as if started directly),
after :func:`joblib_rs.install`; its child processes inherit it through
``JOBLIB_RS_INSTALL=1``. Its exit status is the command's.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence

from joblib_rs.cli._errors import EXIT_USAGE, CliError


def run_program(target: str, args: Sequence[str], as_module: bool) -> int:
    """Run ``target`` (a script path, or a module name when ``as_module``) as ``__main__``."""
    from joblib_rs._install import install

    if not as_module and not os.path.exists(target):
        raise CliError(f"no such script: {target}", EXIT_USAGE)
    install()
    if as_module:
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target, *args]
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")
    return 0
