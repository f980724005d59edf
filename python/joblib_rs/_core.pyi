"""Type stubs of the compiled core, ``joblib_rs._core``."""

from typing import Any

__version__: str
HASH_FORMAT_VERSION: int

def hash(obj: Any, hash_name: str = "xxh3", coerce_mmap: bool = False) -> str: ...
