"""``joblib_rs.install()``: ``import joblib`` anywhere in the process resolves to joblib-rs.

::

    install() ─► sys.meta_path[0] = _JoblibFinder
                   import joblib         ─► the ``joblib`` face: a module delegating every
                                            attribute to ``joblib_rs`` (only ``__version__``
                                            differs: the joblib API version implemented)
                   import joblib.X       ─► the ``joblib_rs.X`` module object itself
               ─► os.environ["JOBLIB_RS_INSTALL"] = "1": worker processes (and any child
                  interpreter) run install() at start, from the ``joblib_rs_install.pth``
                  hook that the package puts in site-packages

Modules that imported the real joblib before the call keep the classes and functions they
took from it (a subclass of the real ``joblib.Parallel`` cannot be re-parented safely);
their module-level references to joblib *modules* are rebound to the joblib-rs ones, and a
warning names them. Call ``install()`` before importing scikit-learn, or use
``python -m joblib_rs run`` / ``JOBLIB_RS_INSTALL=1``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import warnings
from types import ModuleType, TracebackType
from typing import Any

#: The joblib API version joblib-rs implements: what ``joblib.__version__`` reports.
JOBLIB_API_VERSION = "1.6.0"
#: Set in the environment by :func:`install` so child interpreters install too.
ENV_VAR = "JOBLIB_RS_INSTALL"

_state: dict[str, Any] = {"finder": None, "saved": {}, "env": None}


class _JoblibFace(ModuleType):
    """The ``joblib`` module under :func:`install`: ``joblib_rs`` with joblib's version."""

    def __init__(self) -> None:
        super().__init__("joblib", "joblib, served by joblib-rs (joblib_rs.install()).")
        import joblib_rs

        self.__dict__["_target"] = joblib_rs
        self.__dict__["__version__"] = JOBLIB_API_VERSION
        self.__dict__["__path__"] = []  # a package: ``import joblib.X`` is asked of the finder
        self.__dict__["__file__"] = joblib_rs.__file__

    def __getattr__(self, name: str) -> Any:
        target = self.__dict__["_target"]
        try:
            return getattr(target, name)
        except AttributeError:
            # ``joblib.parallel`` etc. without importing them first, as a package allows.
            try:
                return importlib.import_module(f"joblib_rs.{name}")
            except ImportError:
                raise AttributeError(f"module 'joblib' has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        # Patching joblib.X (tests do) patches joblib-rs, which is what the code runs.
        if name.startswith("__"):
            self.__dict__[name] = value
        else:
            setattr(self.__dict__["_target"], name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.__dict__["_target"], name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self.__dict__["_target"])) | {"__version__"})


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, module: ModuleType) -> None:
        self.module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self.module

    def exec_module(self, module: ModuleType) -> None:
        """The module is joblib-rs's, already executed."""


class _JoblibFinder(importlib.abc.MetaPathFinder):
    """``joblib`` → the face, ``joblib.X`` → ``joblib_rs.X`` (ModuleNotFoundError if absent)."""

    def __init__(self) -> None:
        self.face = _JoblibFace()

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "joblib":
            module = self.face
        elif fullname.startswith("joblib."):
            try:
                module = importlib.import_module("joblib_rs." + fullname[len("joblib.") :])
            except ModuleNotFoundError:
                return None
        else:
            return None
        is_pkg = hasattr(module, "__path__")
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(module), is_package=is_pkg)


class Installation:
    """What :func:`install` returns: ``with joblib_rs.install(): ...`` uninstalls at exit."""

    def __enter__(self) -> Installation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        uninstall()


def install() -> Installation:
    """Make ``import joblib`` resolve to joblib-rs in this process and its child processes.

    From the call on, ``import joblib`` and ``import joblib.<submodule>`` anywhere give
    joblib-rs (``joblib.__version__`` is the joblib API version joblib-rs implements,
    ``joblib_rs.__version__`` its own). Works whether or not the real joblib is installed.
    Modules that imported the real joblib earlier have their references to joblib modules
    rebound; objects they took from it (``from joblib import Parallel``) stay real joblib's,
    and a :class:`RuntimeWarning` names those modules. Idempotent.

    Returns
    -------
    Installation
        A context manager: ``with joblib_rs.install(): ...`` calls :func:`uninstall` at exit.
    """
    if _state["finder"] is not None:
        return Installation()
    finder = _JoblibFinder()
    _state["finder"] = finder
    _state["env"] = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = "1"
    sys.meta_path.insert(0, finder)
    real = {n: m for n, m in sys.modules.items() if n == "joblib" or n.startswith("joblib.")}
    _state["saved"] = real
    for name in real:
        del sys.modules[name]
    if real:
        _rebind(real)
    return Installation()


def uninstall() -> None:
    """Undo :func:`install`: ``import joblib`` finds the real joblib again (if installed)."""
    finder = _state["finder"]
    if finder is None:
        return
    if finder in sys.meta_path:
        sys.meta_path.remove(finder)
    for name in [n for n in sys.modules if n == "joblib" or n.startswith("joblib.")]:
        del sys.modules[name]
    sys.modules.update(_state["saved"])
    if _state["env"] is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = _state["env"]
    _state.update(finder=None, saved={}, env=None)


def is_installed() -> bool:
    """Whether :func:`install` is in effect."""
    return _state["finder"] is not None


def _rebind(real: dict[str, ModuleType]) -> None:
    """Point module-level references to real joblib modules at the joblib-rs ones.

    Only in modules that hold nothing else of the real joblib: a module that took a class
    or function from it (or subclassed one) is left whole, so it stays consistent, and is
    named in a warning.
    """
    by_id = {id(m): n for n, m in real.items()}
    real_objects = _real_exports(real)
    kept: list[str] = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or mod_name.startswith(("joblib_rs", "joblib.")) or mod_name == "joblib":
            continue
        namespace = getattr(mod, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        refs = [attr for attr, value in namespace.items() if id(value) in by_id]
        holds = any(_from_real_joblib(value, real_objects) for value in namespace.values())
        if holds:
            kept.append(mod_name)
            continue
        for attr in refs:
            try:
                namespace[attr] = importlib.import_module(by_id[id(namespace[attr])])
            except ImportError:
                pass
    if kept:
        warnings.warn(
            "joblib was imported before joblib_rs.install(); these modules keep using the "
            f"real joblib: {', '.join(sorted(kept)[:10])}"
            f"{' ...' if len(kept) > 10 else ''}. Call install() before importing them "
            "(or run under `python -m joblib_rs run` / JOBLIB_RS_INSTALL=1).",
            RuntimeWarning,
            stacklevel=3,
        )


def _from_real_joblib(value: Any, real_objects: set[int]) -> bool:
    if id(value) in real_objects:
        return True
    if isinstance(value, type):
        return any(
            getattr(base, "__module__", "").split(".")[0] == "joblib" for base in value.__mro__
        )
    return False


def _real_exports(real: dict[str, ModuleType]) -> set[int]:
    """Ids of the classes and functions the real joblib defines (not what it imports)."""
    out: set[int] = set()
    for mod in real.values():
        for value in vars(mod).values():
            defined_in = getattr(value, "__module__", None)
            if (
                not isinstance(value, ModuleType)
                and isinstance(defined_in, str)
                and (defined_in == "joblib" or defined_in.startswith("joblib."))
            ):
                out.add(id(value))
    return out


def install_from_environment() -> None:
    """The ``.pth`` hook: install when ``JOBLIB_RS_INSTALL`` is set to a true value."""
    if os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on"):
        install()
