"""The user's ``allowed`` argument, parsed once into :class:`Rules`.

``load(..., allowed=...)`` ─► :func:`rules_for` (validated, cached by value) ─► Rules:
``safe`` turns on the safe set, ``exact`` lists single globals, ``packages`` the packages
whose classes are allowed. :class:`~joblib_rs._restricted.loader.Loader` consults them for
every global that is not one of the safe set's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from joblib_rs._restricted.base import _is_dunder


class Rules:
    """A parsed ``allowed`` argument.

    ``"safe"`` turns on the safe set; ``"pkg.mod.Name"`` allows that one global, defined
    in ``pkg.mod``; ``"pkg.*"`` allows the classes defined in ``pkg`` or its submodules.
    """

    def __init__(self, spec: Any, safe: bool, exact: frozenset[str], packages: tuple[str, ...]):
        self.spec = spec
        self.safe = safe
        self.exact = exact
        self.packages = packages
        # Containers of user classes (their own append/__setitem__) and object arrays
        # built from element lists are allowed once the user allowed any code.
        self.generic = bool(exact or packages)
        self.allow_object = self.generic

    def why_not(self, full: str) -> str:
        if self.safe and not (self.exact or self.packages):
            return "not in the data-only safe set"
        return "not in the safe set and matched by no entry"


_RULES_CACHE: dict[tuple[str, ...], Rules] = {}
#: The rules of an unrestricted load: any global (see :class:`TrustedLoader`).
_TRUSTED = Rules(None, safe=False, exact=frozenset({"*"}), packages=())


def rules_for(allowed: Any) -> Rules | None:
    """Parse ``load``'s ``allowed`` argument (None: no restriction)."""
    if allowed is None:
        return None
    if isinstance(allowed, str):
        items: list[Any] = [allowed]
    elif isinstance(allowed, Iterable):
        items = list(allowed)
    else:
        raise TypeError(
            f"allowed must be None, 'safe' or a list of 'module.name' entries, got {allowed!r}"
        )
    key: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"allowed entries must be strings, got {item!r}")
        key.append(item)
    cached = _RULES_CACHE.get(tuple(key))
    if cached is not None:
        return cached
    safe = False
    exact: set[str] = set()
    packages: list[str] = []
    for item in key:
        if item == "safe":
            safe = True
            continue
        base = item[:-2] if item.endswith(".*") else item
        parts = base.split(".")
        if len(parts) < (1 if item.endswith(".*") else 2) or not all(
            p.isidentifier() and not _is_dunder(p) for p in parts
        ):
            raise ValueError(
                f"allowed entry {item!r} must be 'safe', 'module.name' (one global) or "
                "'package.*' (the classes defined in a package); no other wildcards, no "
                "dunder names"
            )
        if item.endswith(".*"):
            packages.append(base)
        else:
            exact.add(item)
    rules = Rules(allowed, safe, frozenset(exact), tuple(packages))
    if len(_RULES_CACHE) < 64:
        _RULES_CACHE[tuple(key)] = rules
    return rules
