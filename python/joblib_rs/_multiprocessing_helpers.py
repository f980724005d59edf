"""Whether process-based parallelism is available: joblib's ``_multiprocessing_helpers``.

``mp`` is the :mod:`multiprocessing` module, or ``None`` when ``JOBLIB_MULTIPROCESSING=0`` is
set or when the platform lacks working semaphores (then joblib runs sequentially, and so does
code that checks ``mp`` as joblib's tests do). ``assert_spawning`` is multiprocessing's, or
``None`` with ``mp``.
"""

from __future__ import annotations

import os
import uuid
import warnings
from types import ModuleType
from typing import Any

__all__ = ["assert_spawning", "mp"]


def _probe() -> ModuleType | None:
    """:mod:`multiprocessing` if enabled and able to create a named semaphore, else None."""
    if not int(os.environ.get("JOBLIB_MULTIPROCESSING", 1)):
        return None
    try:
        import _multiprocessing
        import multiprocessing
    except ImportError:
        return None
    try:
        # A named POSIX semaphore, through the low-level class: no resource tracker starts.
        for _ in range(100):
            try:
                sem = _multiprocessing.SemLock(
                    0, 0, 1, name=f"/joblib-rs-{os.getpid()}-{uuid.uuid4().hex[:8]}", unlink=True
                )
                del sem
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError("cannot find name for semaphore")
    except (FileExistsError, AttributeError, ImportError, OSError) as exc:
        warnings.warn(f"{exc}.  joblib will operate in serial mode", stacklevel=2)
        return None
    return multiprocessing


mp: ModuleType | None = _probe()
assert_spawning: Any
if mp is not None:
    import multiprocessing.context as _mp_context
    from multiprocessing.context import assert_spawning

    class LokyContext(_mp_context.SpawnContext):
        """The ``'loky'`` start method: processes start as fresh interpreters (``'spawn'``
        under loky's name, see ``externals.loky.backend.context``)."""

        _name = "loky"

    # As importing joblib (loky) does: ``set_start_method("loky")`` works after the import.
    _mp_context._concrete_contexts.setdefault("loky", LokyContext())  # type: ignore[attr-defined]
else:
    assert_spawning = None
