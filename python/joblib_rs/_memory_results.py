"""What a cached call hands back, and the stand-ins used when there is no cache.

:class:`MemorizedResult` is a reference to a stored result (``call_and_shelve``): its location
and call id, read back with :meth:`MemorizedResult.get` through the store backend.
:class:`NotMemorizedFunc` and :class:`NotMemorizedResult` replace the cached function and its
result when ``Memory(location=None)``: same API, nothing written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from joblib_rs._func_inspect import pformat
from joblib_rs._memory_location import _store_backend_factory
from joblib_rs.logger import Logger

__all__ = [
    "AsyncNotMemorizedFunc",
    "MemorizedResult",
    "NotMemorizedFunc",
    "NotMemorizedResult",
]


class MemorizedResult(Logger):
    """Object representing a cached value.

    Attributes
    ----------
    location : str
        The location of joblib cache. Depends on the store backend used.
    func : function or str
        Function whose output is cached. The string case is intended only for instantiation
        based on the output of repr() on another instance (namely
        ``eval(repr(memorized_instance))`` works).
    args_id : str
        Hash of the function arguments.
    backend : str
        Type of store backend for reading/writing cache files. Default is 'local'.
    mmap_mode : {None, 'r+', 'r', 'w+', 'c'}
        The memmapping mode used when loading from cache numpy arrays. See numpy.load for the
        meaning of the different values.
    verbose : int
        Verbosity level (0 means no message).
    timestamp, metadata : string
        For internal use only.
    """

    def __init__(
        self,
        location: Any,
        call_id: tuple[str, str] | None = None,
        backend: str = "local",
        mmap_mode: str | None = None,
        verbose: int = 0,
        timestamp: float | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        func: str | None = None,
        args_id: str | None = None,
    ) -> None:
        Logger.__init__(self)
        if call_id is None:
            if func is None or args_id is None:
                raise TypeError("MemorizedResult needs call_id, or func and args_id")
            call_id = (func, args_id)
        self._call_id = tuple(call_id)
        self.store_backend = _store_backend_factory(
            backend, location, verbose=verbose, backend_options={"mmap_mode": mmap_mode}
        )
        self.mmap_mode = mmap_mode
        self.metadata = (
            metadata if metadata is not None else self.store_backend.get_metadata(self._call_id)
        )
        self.duration = self.metadata.get("duration", None)
        self.verbose = verbose
        self.timestamp = timestamp

    @property
    def func(self) -> str:
        return self.func_id

    @property
    def func_id(self) -> str:
        return self._call_id[0]

    @property
    def args_id(self) -> str:
        return self._call_id[1]

    def get(self) -> Any:
        """Read value from cache and return it."""
        try:
            return self.store_backend.load_item(
                self._call_id,
                timestamp=self.timestamp,
                metadata=self.metadata,
                verbose=self.verbose,
            )
        except KeyError as e:
            folder = os.path.join(self.store_backend.location, *self._call_id)
            raise KeyError(
                f"Non-existing cache value (may have been cleared).\nFile {folder} does not exist"
            ) from e
        except ValueError as e:
            folder = os.path.join(self.store_backend.location, *self._call_id)
            raise KeyError(
                "Error while trying to load a MemorizedResult's value. It seems that this "
                f"folder is corrupted : {folder}"
            ) from e

    def clear(self) -> None:
        """Clear value from cache."""
        self.store_backend.clear_item(self._call_id)

    def __repr__(self) -> str:
        func_id, args_id = self._call_id
        return (
            f'{self.__class__.__name__}(location="{self.store_backend.location}", '
            f'func="{func_id}", args_id="{args_id}")'
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["timestamp"] = None
        return state


class NotMemorizedResult:
    """Class representing an arbitrary value.

    This class is a replacement for MemorizedResult when there is no cache.
    """

    __slots__ = ("valid", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.valid = True

    def get(self) -> Any:
        if not self.valid:
            raise KeyError("No value stored.")
        return self.value

    def clear(self) -> None:
        self.valid = False
        self.value = None

    def __repr__(self) -> str:
        if self.valid:
            return f"{self.__class__.__name__}({pformat(self.value)})"
        return f"{self.__class__.__name__} with no value"

    def __getstate__(self) -> dict[str, Any]:
        return {"valid": self.valid, "value": self.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.valid = state["valid"]
        self.value = state["value"]


###############################################################################################
# Functions without a cache


class NotMemorizedFunc:
    """No-op object decorating a function.

    This class replaces MemorizedFunc when there is no cache. It provides an identical API
    but does not write anything on disk.

    Attributes
    ----------
    func : callable
        Original undecorated function.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def call_and_shelve(self, *args: Any, **kwargs: Any) -> NotMemorizedResult:
        return NotMemorizedResult(self.func(*args, **kwargs))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(func={self.func})"

    def clear(self, warn: bool = True) -> None:
        """Nothing to clear (``warn`` is accepted for MemorizedFunc's signature)."""

    def call(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        return self.func(*args, **kwargs), {}

    def check_call_in_cache(self, *args: Any, **kwargs: Any) -> bool:
        return False


class AsyncNotMemorizedFunc(NotMemorizedFunc):
    """:class:`NotMemorizedFunc` of a coroutine function."""

    async def call_and_shelve(self, *args: Any, **kwargs: Any) -> NotMemorizedResult:  # type: ignore[override]
        return NotMemorizedResult(await self.func(*args, **kwargs))
