"""The house (docs/architecture.md): rooms that import downwards only, no circles, the
seam between engine and web app both ways, pure statistics, and small modules.

Imports are read from the source (every import statement, those inside functions
too); an import under `if TYPE_CHECKING:` names a type only and is not counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 40

# Each side's rooms, lowest first: a module may import its own room and the rooms of
# lower layers, never a room of its own layer or above.
LAYERS = {
    "engine": [{"engine.stats", "engine.nets", "engine"}, {"engine.formats"}, {"engine.builder"},
               {"engine.crowd"}, {"engine.retrain"}, {"engine.serve"}, {"engine.cli"},
               {"engine.__main__"}],
    "webapp": [{"webapp.stats"}, {"webapp.config", "webapp.extensions"},
               {"webapp.models", "webapp.http"}, {"webapp.jobs"},
               {"webapp.play", "webapp.reports"}, {"webapp.tryout"}, {"webapp.views"},
               {"webapp.cli"}, {"webapp"}],
}
SEAM = {"engine": ("webapp", "flask", "sqlalchemy", "werkzeug", "alembic"),
        "webapp": ("engine", "torch", "torchvision", "annoy")}
PURE_STATS = ("numpy", "webapp.stats")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for side in LAYERS for p in sorted((ROOT / side).rglob("*.py"))}


MODULES = _modules()


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str) -> set[str]:
    """Every module name `name` imports, absolute (relative imports resolved)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if f"{base}.{alias.name}" in MODULES)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _internal(name: str) -> set[str]:
    """The project's own modules `name` imports (a package's __init__ for `from pkg import`)."""
    out = set()
    for imported in _imports(name):
        while imported and imported not in MODULES:
            imported = imported.rpartition(".")[0]
        if imported and imported != name:
            out.add(imported)
    return out


GRAPH = {name: _internal(name) for name in MODULES}


def _room(name: str) -> str:
    side = name.split(".")[0]
    rooms = set().union(*LAYERS[side])
    while name not in rooms:
        name = name.rpartition(".")[0]
    return name


def _layer(room: str) -> int:
    return next(i for i, rooms in enumerate(LAYERS[room.split(".")[0]]) if room in rooms)


def test_every_module_is_in_a_room():
    for name in MODULES:
        assert _room(name), name


def test_no_import_circles():
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_rooms_import_downwards_only():
    wrong = []
    for name, deps in GRAPH.items():
        room = _room(name)
        for dep in deps:
            other = _room(dep)
            if other != room and _layer(other) >= _layer(room):
                wrong.append(f"{name} ({room}) imports {dep} ({other})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("side", sorted(SEAM))
def test_the_seam_holds_in_the_source(side):
    crossing = [f"{name} imports {imported}" for name in MODULES if name.split(".")[0] == side
                for imported in _imports(name)
                if imported.split(".")[0] in SEAM[side]]
    assert not crossing, "\n".join(crossing)


def test_statistics_import_neither_flask_nor_sqlalchemy():
    stdlib = sys.stdlib_module_names
    impure = [f"{name} imports {imported}" for name in MODULES if name.startswith("webapp.stats")
              for imported in _imports(name)
              if imported.split(".")[0] not in stdlib and imported != "__future__"
              and not imported.startswith(PURE_STATS)]
    assert not impure, "\n".join(impure)


def test_a_running_web_app_has_loaded_no_engine_and_no_torch(tmp_path):
    code = ("import sys; from webapp import create_app; "
            f"app = create_app({{'TESTING': True, 'SQLALCHEMY_DATABASE_URI': "
            f"'sqlite:///{tmp_path}/x.sqlite', 'DOPE_IMAGE_DIR': '{tmp_path}/img'}}); "
            "app.test_client().get('/'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('engine', 'torch', 'torchvision', 'annoy')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_engine_cli_and_the_crowd_start_without_torch():
    """engine/nets/__init__.py and engine/formats/ are torch-free: `python -m engine --help`
    and the crowd's vote files need no torch."""
    code = ("import sys, engine.cli.main, engine.formats.builddir, engine.crowd.simulate, "
            "engine.crowd.campaign; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_modules_and_functions_are_small():
    big = []
    for name, path in MODULES.items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            big.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big.append(f"{name}.{node.name}: {length} lines")
    assert not big, "\n".join(big)
