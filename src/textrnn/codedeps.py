"""Which source files each stage runs: the import closure of its code, read from the source (nothing is
imported), so that the code dependencies in dvc.yaml and in the Prefect cache keys cannot miss a module.

A module counts when any line of a file in the closure imports it (at module level or inside a function)
or names it as a string (`python -m textrnn.ddp_train`). A package's `__init__.py` counts with each of
its modules, since importing the module runs it. The compiled kernels count as their Cython source.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "textrnn"
PACKAGE_ROOT = Path(__file__).resolve().parent
_MODULE_NAME = re.compile(rf"{PACKAGE}(\.[A-Za-z_][A-Za-z0-9_]*)+")


def module_file(module: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The file of `textrnn.a.b` (a.py, a/__init__.py or, compiled, a.pyx), or None if there is none."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts) if parts else root
    for candidate in (base.with_suffix(".py") if parts else None, base / "__init__.py",
                      base.with_suffix(".pyx") if parts else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, root: Path = PACKAGE_ROOT) -> set[str]:
    """The textrnn modules that `path` imports or names, each with its parent packages. A module's lazy
    attributes (PEP 562 `__getattr__`, e.g. `textrnn.Predictor`) run only when asked for by name, which the
    stages never do: their imports are not followed."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    eager = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")]
    return _modules_named((node for top in eager for node in ast.walk(top)), root)


def _modules_named(nodes: Iterable[ast.AST], root: Path) -> set[str]:
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from textrnn.stages import train`: the name may be a module of the package.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.fullmatch(node.value):
            found.add(node.value)
    ours = {m for m in found if (m == PACKAGE or m.startswith(PACKAGE + ".")) and module_file(m, root)}
    return ours | {parent for m in ours for parent in _parents(m)}


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(roots: Iterable[Path], root: Path = PACKAGE_ROOT, unread: Iterable[Path] = ()) -> list[Path]:
    """Every file that running `roots` can execute, sorted. Files in `unread` count without their imports
    being followed; a compiled module's source is not parsed."""
    seen: set[Path] = set(unread)
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        # Importing a module runs its packages' __init__.py first.
        todo.extend(d / "__init__.py" for d in path.parents if d.is_relative_to(root) and (d / "__init__.py").is_file())
        if path.suffix == ".py":
            todo.extend(module_file(m, root) for m in imported_modules(path, root))
    return sorted(seen)


@functools.cache
def stage_code(name: str, root: Path = PACKAGE_ROOT) -> tuple[str, ...]:
    """Stage `name`'s code, relative to the package folder: the closure of its module and of the wrapper
    in `pipeline.py` that calls it (the wrapper's own imports, not those of the other stages' wrappers)."""
    pipeline = root / "pipeline.py"
    roots = [root / "stages" / f"{name}.py", *_wrapper_imports(pipeline, f"_{name}", root)]
    return tuple(str(p.relative_to(root)) for p in closure(roots, root, unread=[pipeline]))


def _wrapper_imports(pipeline: Path, function: str, root: Path) -> list[Path]:
    """Files imported at module level of pipeline.py and inside its function `function`."""
    tree = ast.parse(pipeline.read_text(encoding="utf-8"))
    nodes = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    nodes += [n for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == function for n in ast.walk(f)]
    return [module_file(m, root) for m in sorted(_modules_named(nodes, root))]
