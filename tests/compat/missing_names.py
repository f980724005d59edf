"""Report the names joblib's modules have and joblib-rs's lack, module by module.

For each module of the installed joblib (except its tests and vendored ``externals``), the
names of its ``__dict__`` are compared with those of the ``joblib_rs`` module of the same name:
public names, plus the private names joblib's test suite or known downstream tools use (listed
in :data:`WANTED_PRIVATE`). Names joblib merely imports from elsewhere (``os``, ``warnings``,
a function of another module...) are left out.

Usage::

    python tests/compat/missing_names.py [--markdown]

Exit status 0; the report goes to stdout.
"""

from __future__ import annotations
import __future__

import argparse
import importlib
import pkgutil
import sys
import types

#: Private names that code outside joblib relies on, by module.
WANTED_PRIVATE: dict[str, set[str]] = {
    "hashing": {"_ConsistentSet", "_MyHash"},
    "func_inspect": {"_clean_win_chars", "_signature_str", "_function_called_str"},
    "_utils": {"_TracebackCapturingWrapper", "_retrieve_traceback_capturing_wrapped_call"},
    "_memmapping_reducer": {
        "_get_backing_memmap",
        "_get_temp_dir",
        "_strided_from_memmap",
        "_WeakArrayKeyMap",
    },
    "compressor": {
        "_COMPRESSORS",
        "_LZ4_PREFIX",
        "_ZFILE_PREFIX",
        "_GZIP_PREFIX",
        "_BZ2_PREFIX",
        "_XZ_PREFIX",
        "_LZMA_PREFIX",
    },
    "numpy_pickle_utils": {
        "_COMPRESSORS",
        "_read_fileobject",
        "_write_fileobject",
        "_detect_compressor",
        "_reconstruct",
        "_ensure_native_byte_order",
        "_is_numpy_array_byte_order_mismatch",
    },
    "numpy_pickle": {"_read_bytes"},
    "parallel": {"_Sentinel"},
}

#: Modules not compared: tests, vendored packages.
SKIPPED = ("joblib.test", "joblib.externals", "joblib.testing")


def joblib_modules() -> list[str]:
    """Dotted names of joblib's own modules."""
    import joblib

    names = ["joblib"]
    for info in pkgutil.walk_packages(joblib.__path__, "joblib."):
        if not info.name.startswith(SKIPPED):
            names.append(info.name)
    return sorted(names)


def _own_names(module: types.ModuleType, rel: str) -> set[str]:
    """Names defined (or deliberately re-exported) by ``module``."""
    wanted = WANTED_PRIVATE.get(rel, set())
    declared = set(getattr(module, "__all__", ()))
    names = set()
    for name, value in vars(module).items():
        if name.startswith("__"):
            continue
        if name.startswith("_") and name not in wanted:
            continue
        if isinstance(value, types.ModuleType | __future__._Feature):
            continue
        if name.islower() and isinstance(value, int | str | float):
            continue  # a loop variable left at module level
        origin = getattr(value, "__module__", None)
        if (
            name not in declared
            and isinstance(origin, str)
            and not origin.startswith("joblib")
            and isinstance(value, type | types.FunctionType | types.BuiltinFunctionType)
        ):
            continue  # imported from the standard library or a dependency
        names.add(name)
    return names


def report() -> dict[str, list[str] | None]:
    """``{joblib module: missing names}`` (``None`` when the whole module is missing)."""
    out: dict[str, list[str] | None] = {}
    for name in joblib_modules():
        rel = name.split(".", 1)[1] if "." in name else ""
        try:
            theirs = importlib.import_module(name)
        except Exception:  # a module needing an optional dependency
            continue
        rs_name = "joblib_rs" + (f".{rel}" if rel else "")
        try:
            ours = importlib.import_module(rs_name)
        except ModuleNotFoundError:
            out[name] = None
            continue
        missing = sorted(n for n in _own_names(theirs, rel) if not hasattr(ours, n))
        if missing:
            out[name] = missing
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="a markdown table")
    args = parser.parse_args(argv)
    result = report()
    if args.markdown:
        print("| joblib module | missing in joblib-rs |\n| --- | --- |")
    for module, missing in result.items():
        text = "whole module" if missing is None else ", ".join(missing)
        print(f"| `{module}` | {text} |" if args.markdown else f"{module}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
