"""Layers point one way: the engine never imports the evaluation, and the export format, the transfer and the
evaluation never import the engine (reading an export must not load the training workflow)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medssl3d"


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the medssl3d modules ``path`` imports (relative imports resolved), anywhere in the file."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.startswith("medssl3d")}


def _files(*places: str) -> list[Path]:
    found = []
    for place in places:
        path = PACKAGE / place
        found.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return found


def _reaching(files: list[Path], forbidden: str) -> dict[str, list[str]]:
    found = {}
    for path in files:
        bad = sorted(n for n in _imported_modules(path) if n == forbidden or n.startswith(forbidden + "."))
        if bad:
            found[str(path.relative_to(PACKAGE.parent))] = bad
    return found


def test_the_resolver_sees_relative_and_absolute_imports(tmp_path):
    # the rule below would pass vacuously if imports were missed: check the resolver on known files
    assert "medssl3d.engine.checkpoint.TrainingCheckpoint" in _imported_modules(PACKAGE / "engine" / "trainer.py")
    assert "medssl3d.encoder_export" in _imported_modules(PACKAGE / "transfer.py")
    assert "medssl3d.evaluation.knn.knn_classify" in _imported_modules(PACKAGE / "evaluation" / "online_knn.py")


@pytest.mark.parametrize("upper", ["medssl3d.evaluation", "medssl3d.losses", "medssl3d.methods"])
def test_the_engine_never_imports_the_evaluation_the_losses_or_the_methods(upper):
    # validation handlers are handed to build_trainer; rank helpers live in medssl3d.distributed
    assert _reaching(_files("engine"), upper) == {}


@pytest.mark.parametrize("place", ["evaluation", "transfer.py", "encoder_export.py", "distributed.py", "losses",
                                   "networks", "atomic.py", "torch_files.py"])
def test_lower_layers_never_import_the_engine(place):
    assert _reaching(_files(place), "medssl3d.engine") == {}


def test_reading_an_export_and_evaluating_do_not_load_the_engine():
    code = ("import sys, medssl3d.transfer, medssl3d.evaluation, medssl3d.encoder_export; "
            "print(sorted(m for m in sys.modules if m.startswith('medssl3d.engine')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
