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
    "svalign.hub",
    "svalign.config",
    "svalign.toy.config",
    "svalign.sad.config",
    "svalign.dynamics.config",
    "svalign.sae.config",
    "svalign.sae.corpus",
    "svalign.tables",
    "svalign.captions",
    "svalign.figures.canvas",
    "svalign.figures.toy",
    "svalign.figures.svd",
    "svalign.figures.sad",
    "svalign.figures.sae",
    "svalign.figures.dynamics",
    "svalign.explorer.data",
    "svalign.explorer.page",
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


# The layers of the library, lowest first: a module may import its own layer or a lower one, never a higher one.
# Stage packages compute; schemas (svalign.schemas via svalign.tables), figures, claims and captions are layers of
# their own with one module per stage, so no stage package owns (or imports) its presentation.
LAYERS = (
    # foundation: I/O, definitions, statistics, linear algebra, the torch-free option dataclasses of each stage
    (
        *("svalign.mappings", "svalign.runtime", "svalign.io", "svalign.definitions", "svalign.stats"),
        "svalign.linalg",
        *(f"svalign.{stage}.config" for stage in ("toy", "sad", "sae", "dynamics")),
    ),
    ("svalign.schemas", "svalign.tables"),
    (
        *("svalign.hub", "svalign.families", "svalign.heads", "svalign.hf_models", "svalign.models", "svalign.svd"),
        *("svalign.degeneracy", "svalign.nulls"),
    ),
    ("svalign.toy", "svalign.sad", "svalign.sae", "svalign.dynamics"),
    ("svalign.pipeline", "svalign.config"),
    ("svalign.claims", "svalign.figures", "svalign.captions", "svalign.report"),
    ("svalign.explorer",),
    ("svalign.docgen",),
)
# Within the stage layer, a stage may import only the stages before it (the SAE attribution reads SAD's forward loop).
STAGE_ORDER = {"svalign.toy": 0, "svalign.sad": 1, "svalign.sae": 2, "svalign.dynamics": 2}


def _layer(module: str) -> tuple[int, str]:
    """(layer index, the LAYERS prefix) of a module: the longest matching prefix wins (``svalign.sad.config``)."""
    matches = [
        (len(prefix), index, prefix)
        for index, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is in no layer of tests/unit/test_layout.py LAYERS: place it"
    _, index, prefix = max(matches)
    return index, prefix


def _uphill(module: str, dep: str) -> bool:
    (layer, prefix), (dep_layer, dep_prefix) = _layer(module), _layer(dep)
    if dep_layer != layer:
        return dep_layer > layer
    if prefix in STAGE_ORDER and dep_prefix in STAGE_ORDER and prefix != dep_prefix:
        return STAGE_ORDER[dep_prefix] >= STAGE_ORDER[prefix]
    return False


def test_imports_run_downhill():
    """No module imports a higher layer (LAYERS), e.g. no schema or figure reaches into a stage's computation."""
    modules = {_module_name(path): path for path in SRC.rglob("*.py")}
    edges = [
        (name, dep)
        for name, path in modules.items()
        for dep in _imports(path)
        if dep in modules and dep != name and not name.startswith(dep + ".")
    ]
    uphill = [f"{name} -> {dep}" for name, dep in edges if _uphill(name, dep)]
    assert not uphill, "imports that run uphill:\n" + "\n".join(sorted(uphill))


def test_the_layer_check_fails_on_an_uphill_import():
    """The check above can fail: a table importing a stage, a stage importing a figure, SAD importing the SAE."""
    assert _uphill("svalign.tables", "svalign.sae.run")
    assert _uphill("svalign.sae.run", "svalign.figures.sae")
    assert _uphill("svalign.sad.run", "svalign.sae.attribution")
    assert not _uphill("svalign.sae.run", "svalign.sad.forward")
    assert not _uphill("svalign.captions", "svalign.sae.config")


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
