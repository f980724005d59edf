"""One load's policy: :class:`Loader` (restricted) and :class:`TrustedLoader` (``allowed=None``).

``Loader.resolve(module, name, proto)`` answers in this order: the file formats' own globals
(joblib's array wrapper, joblib-rs's array rebuild, ``numpy.dtype``...: always on), then with
``"safe"`` the safe set (``stdlib``, ``arrays``), then the user's :class:`Rules`: a real
member of the named module, defined there, never a module nor an attribute chain through
other objects. ``BUILD`` sets state on instances only. :class:`TrustedLoader` has pickle's
own semantics and only reads joblib's array wrappers itself.
"""

from __future__ import annotations

import _compat_pickle
import collections
import importlib
import keyword
import sys
import types
from typing import Any

from joblib_rs._restricted.arrays import ArrayConstructors, _np, _Wrapper
from joblib_rs._restricted.base import Resolved, _is_dunder, _refuse
from joblib_rs._restricted.rules import _TRUSTED, Rules
from joblib_rs._restricted.stdlib import _STDLIB_SAFE


class Loader(ArrayConstructors):
    """One restricted load: the rules, and what the file's arrays need (file, mmap mode)."""

    def __init__(
        self,
        rules: Rules,
        filename: str | None = None,
        mmap_mode: str | None = None,
        ensure_native: bool = False,
    ) -> None:
        self.rules = rules
        self.generic = rules.generic
        #: Types besides list that APPENDS may extend (deque pickles its items that way).
        self.appendable = (collections.deque,)
        self.filename = filename
        self.mmap_mode = "r+" if mmap_mode == "w+" else mmap_mode
        self.ensure_native = ensure_native
        #: A decoded stream this load owns (a whole-file compressed file decoded into a
        #: ``bytearray`` nobody else holds): its arrays are views of it, not copies.
        self.viewable: Any = None
        self._user_classes: set[int] = set()

    # -- names ------------------------------------------------------------------------------

    def resolve(self, module: str, name: str, proto: int) -> Resolved:
        """The meaning of global ``module.name`` (pickle protocol ``proto``), or refuse."""
        if proto < 3:
            module, name = _fix_import(module, name)
        full = f"{module}.{name}"
        fmt = self._format_global(full)
        if fmt is not None:
            return fmt
        if self.rules.safe:
            safe = _STDLIB_SAFE.get(full) or self._numpy_global(module, name)
            if safe is not None:
                return safe
        return self._user_global(module, name, full)

    def _format_global(self, full: str) -> Resolved | None:
        """Globals of the file formats themselves (arrays from their own data): always on."""
        if full == "joblib_rs.numpy_pickle._rebuild_array":
            return Resolved(call=self._rebuild_array)
        if full == "joblib.numpy_pickle.NumpyArrayWrapper":
            return Resolved(new=_Wrapper, build=self._wrapper_build, freeze_on_use=True)
        if full in ("numpy.dtype", "numpy.ndarray", "numpy.memmap"):
            return self._numpy_global(*full.rsplit(".", 1))
        if full == "copyreg._reconstructor":
            return Resolved(call=self._reconstructor, build=self._build_reconstructed)
        return None

    def _user_global(self, module: str, name: str, full: str) -> Resolved:
        rules = self.rules
        exact = full in rules.exact
        package = next(
            (p for p in rules.packages if module == p or module.startswith(p + ".")), None
        )
        if not exact and package is None:
            raise _refuse(
                f"global '{full}' is forbidden by load(..., allowed={rules.spec!r}): "
                f"{rules.why_not(full)}; add '{full}' to allowed if this file is trusted"
            )
        parts = name.split(".")
        for part in [*module.split("."), *parts]:
            if not part.isidentifier() or keyword.iskeyword(part) or _is_dunder(part):
                raise _refuse(
                    f"global '{full}' is forbidden by load(..., allowed={rules.spec!r}): "
                    f"'{part}' is not a plain name (no dunder names, no attribute tricks)"
                )
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise _refuse(
                f"global '{full}': module '{module}' cannot be imported: {exc}"
            ) from None
        obj: Any = mod
        for i, part in enumerate(parts):
            members = vars(obj)
            if part not in members:
                raise _refuse(f"global '{full}' is not a member of module '{module}'")
            obj = members[part]
            if i < len(parts) - 1 and not isinstance(obj, type):
                raise _refuse(
                    f"global '{full}' is forbidden: '{part}' is not a class (no attribute "
                    "chains through other objects)"
                )
        if isinstance(obj, types.ModuleType):
            raise _refuse(f"global '{full}' is a module: modules are never allowed")
        defined_in = getattr(obj, "__module__", None)
        if not exact:
            if not isinstance(obj, type):
                raise _refuse(
                    f"global '{full}' is forbidden by load(..., allowed={rules.spec!r}): "
                    f"the wildcard '{package}.*' allows classes only, and this is a "
                    f"{type(obj).__name__}; list '{full}' exactly to allow it"
                )
            if defined_in != module:
                raise _refuse(
                    f"global '{full}' is forbidden by load(..., allowed={rules.spec!r}): the "
                    f"class is defined in '{defined_in}', not in '{module}'"
                )
        elif isinstance(defined_in, str) and defined_in != module:
            raise _refuse(
                f"global '{full}' is forbidden by load(..., allowed={rules.spec!r}): it is "
                f"'{defined_in}.{getattr(obj, '__qualname__', name)}', reached through "
                f"another module"
            )
        if isinstance(obj, type):
            self._user_classes.add(id(obj))
            cls = obj
            return Resolved(
                call=cls,
                value=cls,
                has_value=True,
                new=lambda *a, **k: cls.__new__(cls, *a, **k),
                build=self._build_instance,
            )
        return Resolved(call=obj, value=obj, has_value=True, build=self._build_instance)

    # -- instances of user classes ----------------------------------------------------------

    def _build_instance(self, obj: Any, state: Any, stream: Any) -> Any:
        """BUILD as pickle does it, on instances only: never a class, module or function."""
        if isinstance(obj, _NOT_INSTANCES):
            raise _refuse(
                f"BUILD on {obj!r} refused: state is set on instances only, never on a class, "
                "module or function"
            )
        return _pickle_build(obj, state, stream)

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        """``copyreg._reconstructor`` (protocols 0-1) for allowed classes only."""
        if cls is _Wrapper and base is object and state is None:
            return _Wrapper()
        if not isinstance(cls, type) or id(cls) not in self._user_classes:
            raise _refuse(f"copyreg._reconstructor of {cls!r} refused in a restricted load")
        if base is object:
            return object.__new__(cls)
        if base not in (dict, list, set, tuple, int, float, str, bytes, frozenset):
            raise _refuse(f"copyreg._reconstructor with base {base!r} refused")
        obj = base.__new__(cls, state)
        if base.__init__ is not object.__init__:
            base.__init__(obj, state)
        return obj

    def _build_reconstructed(self, obj: Any, state: Any, stream: Any) -> Any:
        if isinstance(obj, _Wrapper):
            return self._wrapper_build(obj, state, stream)
        return self._build_instance(obj, state, stream)

    # -- numpy ------------------------------------------------------------------------------


#: Array wrappers of joblib < 0.10 (array data in separate files).
_OLD_WRAPPERS = frozenset(
    {"joblib.numpy_pickle.NDArrayWrapper", "joblib.numpy_pickle.ZNDArrayWrapper"}
)


class OldJoblibFormat(Exception):
    """The pickle is one of joblib < 0.10 (``_compat`` reads those another way)."""


class TrustedLoader(Loader):
    """An unrestricted load (``allowed=None``) of a joblib file: pickle's own semantics.

    Every global is imported and used as ``pickle.Unpickler.find_class`` would; only
    joblib's array wrappers are special (their data follows in the file, read or mapped
    here). This is the fast reader of joblib's files: nothing is checked that the trusted
    file could abuse, exactly as with ``pickle.load``.
    """

    def __init__(
        self,
        filename: str | None = None,
        mmap_mode: str | None = None,
        ensure_native: bool = False,
    ) -> None:
        super().__init__(_TRUSTED, filename, mmap_mode, ensure_native)

    def resolve(self, module: str, name: str, proto: int) -> Resolved:
        if proto < 3:
            module, name = _fix_import(module, name)
        full = f"{module}.{name}"
        if full == "joblib.numpy_pickle.NumpyArrayWrapper":
            return Resolved(new=_Wrapper, build=self._wrapper_build)
        if full in _OLD_WRAPPERS:
            raise OldJoblibFormat(full)
        if full == "copyreg._reconstructor":
            return Resolved(call=self._reconstructor, build=self._build_reconstructed)
        __import__(module)
        obj: Any = sys.modules[module]
        for part in name.split(".") if proto >= 4 else [name]:
            obj = getattr(obj, part)
        cls = obj
        return Resolved(
            call=obj,
            value=obj,
            has_value=True,
            new=lambda *a, **k: cls.__new__(cls, *a, **k),
            build=_pickle_build,
        )

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        if cls is _Wrapper:
            return _Wrapper()
        import copyreg

        return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]

    def _build_reconstructed(self, obj: Any, state: Any, stream: Any) -> Any:
        if isinstance(obj, _Wrapper):
            return self._wrapper_build(obj, state, stream)
        return _pickle_build(obj, state, stream)

    def _array_subclass_ok(self, cls: Any) -> bool:
        return isinstance(cls, type) and issubclass(cls, _np().ndarray)


def _pickle_build(obj: Any, state: Any, stream: Any) -> Any:
    """BUILD as ``pickle`` does it: ``__setstate__``, else the instance dict and slots."""
    setstate = getattr(obj, "__setstate__", None)
    if setstate is not None and not _is_object_setstate(type(obj)):
        setstate(state)
        return obj
    slotstate = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slotstate = state
    bad_state = state and not isinstance(state, dict)
    if bad_state or (slotstate and not isinstance(slotstate, dict)):
        raise _refuse(f"BUILD state of {type(obj).__name__} is not a dict")
    if state:
        inst_dict = obj.__dict__
        for k, v in state.items():
            inst_dict[sys.intern(k) if type(k) is str else k] = v
    if slotstate:
        for k, v in slotstate.items():
            setattr(obj, k, v)
    return obj


_NOT_INSTANCES = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
)


def _is_object_setstate(cls: type) -> bool:
    return getattr(cls, "__setstate__", None) is getattr(object, "__setstate__", None)


def _fix_import(module: str, name: str) -> tuple[str, str]:
    """Python 2 names as pickle's ``fix_imports`` maps them."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name
