"""The type stub of the compiled module lists exactly what the module exports."""

import ast
import inspect
import pathlib

from joblib_rs import _core

STUB = pathlib.Path(inspect.getfile(_core)).with_name("_core.pyi")


def _stub_names() -> set[str]:
    tree = ast.parse(STUB.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_stub_matches_compiled_module():
    exported = {n for n in dir(_core) if not n.startswith("__") or n == "__version__"}
    exported.discard("__version__")
    stub = _stub_names() - {"__version__"}
    assert stub == exported


def test_stub_signatures_match():
    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            runtime = inspect.signature(getattr(_core, node.name))
            stub_params = [a.arg for a in node.args.posonlyargs + node.args.args]
            stub_params += [a.arg for a in node.args.kwonlyargs]
            assert list(runtime.parameters) == stub_params, node.name
