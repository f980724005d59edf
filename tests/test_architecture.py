"""The package's shape: no import circle through the parallel engine, modules of a readable
size that open by saying what they are for.

Reads the sources (module-level imports only; an import inside a function is a deliberate,
commented exception such as an optional plugin).
"""

import ast
import importlib.util
import pathlib

# Found without importing the package, so a circle is reported here, not as an import error.
ROOT = pathlib.Path(importlib.util.find_spec("joblib_rs").origin).parent
# The parallel engine's modules (docs/architecture.md); the memory modules' layering is
# tested in test_memory_hit.py.
ENGINE = [
    "parallel.py",
    "_call.py",
    "_batch.py",
    "_parallel_backends.py",
    "_process_pool.py",
    "_task_pickle.py",
    "_worker.py",
    "_threads.py",
    "_progress.py",
    "_interrupts.py",
    "_dask.py",
    *(f"_backends/{p.name}" for p in (ROOT / "_backends").glob("*.py")),
]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            body = node.body if isinstance(node, ast.If | ast.Try) else [node]
            for stmt in body:
                if isinstance(stmt, ast.ImportFrom) and (stmt.module or "").startswith(
                    "joblib_rs"
                ):
                    names = [a.name for a in stmt.names]
                    subs = [n for n in names if f"{stmt.module}.{n}" in modules]
                    deps.update(f"{stmt.module}.{s}" for s in subs)
                    # Names other than submodules (or the compiled _core) need the package.
                    if any(n not in subs and n != "_core" for n in names):
                        deps.add(stmt.module)
                elif isinstance(stmt, ast.Import):
                    deps.update(a.name for a in stmt.names if a.name in modules)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _engine_module_names() -> set[str]:
    return {_module_name(ROOT / name) for name in ENGINE}


def test_no_import_circle_through_the_parallel_engine():
    # Scoped to the engine (this file's subject); other concerns have their own owners.
    graph = _import_graph()
    engine = _engine_module_names() | {"joblib_rs._backends"}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    through_engine = [c for c in circles if engine & set(c)]
    assert not through_engine, [" -> ".join(c) for c in through_engine]


def test_parallel_engine_modules_stay_readable():
    sizes = {name: len((ROOT / name).read_text().splitlines()) for name in ENGINE}
    assert max(sizes.values()) <= 620, sizes


# Every module of the package, not only the engine's: a readable size, and a docstring that
# opens it and says what the module is for and how data flows through it.
MAX_MODULE_LINES = 600
#: Modules allowed over the limit, with the most lines they may have and why. An entry is
#: for a module that genuinely cannot be split yet; remove it once the module is split.
OVERSIZED: dict[str, int] = {}


def _package_modules() -> dict[str, pathlib.Path]:
    return {p.relative_to(ROOT).as_posix(): p for p in sorted(ROOT.rglob("*.py"))}


def test_every_module_stays_readable():
    modules = _package_modules()
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules.items()}
    too_long = {name: n for name, n in sizes.items() if n > OVERSIZED.get(name, MAX_MODULE_LINES)}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: split them: {too_long}"
    # An exemption that is no longer needed is removed, not kept "just in case".
    stale = {name for name in OVERSIZED if sizes.get(name, 0) <= MAX_MODULE_LINES}
    assert not stale, f"remove these entries of OVERSIZED: {sorted(stale)}"


def test_every_module_opens_with_what_it_is_for():
    undocumented = []
    for name, path in _package_modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text()))
        # A sentence at least: what the module is for, not only its name.
        if doc is None or len(doc.split()) < 5:
            undocumented.append(name)
    assert not undocumented, f"no docstring saying what the module is for: {undocumented}"
