"""What a restricted ``load(..., allowed=...)`` may build: the policy of the Rust unpickler.

``joblib_rs._core.unpickle`` runs the pickle opcodes itself (``crates/joblib-py/src/
unpickle.rs``): containers, numbers, strings and bytes are built without naming anything.
For every global the file names it asks :meth:`Loader.resolve`, which answers with a
:class:`Resolved` or raises :class:`pickle.UnpicklingError`::

    file ── GLOBAL numpy dtype ──► Loader.resolve ──► Resolved(call=_dtype_new,
                                                               build=_dtype_build)
         ── REDUCE ──────────────► _dtype_new("f8", False, True)     (validating constructor)
         ── BUILD ───────────────► _dtype_build(dtype, state, stream)  (validated setstate)

``allowed="safe"`` is data only: the safe set maps each name to a constructor of ours that
checks its arguments (types, lengths, shapes, dtypes) before building anything, so no
callable of the file's choosing ever runs. A user allow-list adds exact globals or the
classes of a package (see :class:`Rules`); their own code is trusted. The threat model is
in ``docs/security.md``. One module per concern, each importing only those above it::

    base     the VM's contract: Resolved, refusals, argument checks, unpickle()
    rules    the user's ``allowed`` parsed into Rules
    stdlib   the safe set's builtins and stdlib constructors (set, bytes, datetime...)
    arrays   numpy names, dtypes and arrays, checked before numpy sees them
    loader   Loader (which name means what, user classes) and TrustedLoader (allowed=None)
"""

from joblib_rs._restricted.base import Resolved, unpickle
from joblib_rs._restricted.loader import Loader, OldJoblibFormat, TrustedLoader
from joblib_rs._restricted.rules import Rules, rules_for

__all__ = [
    "Loader",
    "OldJoblibFormat",
    "Resolved",
    "Rules",
    "TrustedLoader",
    "rules_for",
    "unpickle",
]
