"""The library's structure: torch-free modules stay torch-free, imports form no circle, sizes stay readable."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "svalign"
# Modules that validation, dry runs, figures and report captions import: none of them may pull in torch.
TORCH_FREE = [
    "svalign.io",
    "svalign.tables",
    "svalign.mappings",
    "svalign.families",
    "svalign.config",
    "svalign.toy.config",
    "svalign.sad.config",
    "svalign.dynamics.config",
    "svalign.sae.config",
    "svalign.sae.corpus",
    "svalign.sae.schemas",
    "svalign.sae.summary",
    "svalign.sae.figures",
    "svalign.figures",
    "svalign.report",
    "svalign.runtime",
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """svalign modules that ``path`` imports at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("svalign"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("svalign"))
    return found


@pytest.mark.parametrize("module", TORCH_FREE)
def test_torch_free_modules_import_without_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_import_circle():
    modules = {_module_name(path): path for path in SRC.rglob("*.py")}
    graph = {name: {dep for dep in _imports(path) if dep in modules and dep != name} for name, path in modules.items()}

    def visit(name: str, stack: tuple[str, ...]) -> None:
        for dep in graph[name]:
            assert dep not in stack, f"import circle: {' -> '.join((*stack, dep))}"
            visit(dep, (*stack, dep))

    for name in graph:
        visit(name, (name,))


def test_package_inits_import_nothing():
    """`import svalign.toy.config` must not run torch-heavy siblings through the package's __init__."""
    for init in SRC.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert not [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], init


def test_no_oversized_files_or_functions():
    """~550 lines a file, ~60 a function: beyond that a module or function holds more than one concern."""
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert text.count("\n") <= 560, f"{path} has {text.count(chr(10))} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{path}:{node.lineno} {node.name} has {length} lines"
