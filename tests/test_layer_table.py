"""Every package imports only the packages its row of the table in docs/architecture.md allows."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medssl3d"
BASE = {"errors", "atomic", "distributed"}
LOWER = BASE | {"torch_files", "transforms", "data", "networks", "losses", "encoder_export", "methods", "prep",
                "transfer", "dimension_transfer", "preprocessing"}
MAY_IMPORT = {
    **{name: set() for name in BASE},
    "torch_files": {"atomic"},
    "transforms": {"errors", "atomic"},
    "data": {"errors", "atomic"},
    "networks": set(),
    "losses": {"distributed"},
    "encoder_export": {"networks", "torch_files"},
    "methods": {"networks", "losses", "transforms"},
    "prep": {"errors", "atomic", "transforms"},
    "transfer": {"networks", "encoder_export"},
    "dimension_transfer": {"networks", "encoder_export"},
    "engine": {"networks", "encoder_export", "torch_files", "distributed", "atomic", "errors"},
    "preprocessing": {"prep", "transforms", "data", "atomic", "errors"},
    "detection": LOWER,
    "evaluation": LOWER | {"detection"},  # scores detection runs with detection.metrics
}  # cli, demo, demo_ct and bundle_errors sit on top and may import anything


def _imports(path: Path) -> set[str]:
    """The top-level medssl3d units a module imports (relative imports resolved)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(parts[: len(parts) - node.level])
            names = [".".join(base + [node.module])] if node.module else [".".join(base + [a.name]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "medssl3d":
            names = [node.module] if node.module != "medssl3d" else [f"medssl3d.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("medssl3d.")]
        found |= {name.split(".")[1] for name in names if name.count(".") >= 1 and name.startswith("medssl3d.")}
    return found


def test_every_package_imports_only_what_its_layer_allows():
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = path.relative_to(PACKAGE).with_suffix("").parts[0]
        if unit not in MAY_IMPORT:
            continue
        for target in _imports(path) - {unit} - MAY_IMPORT[unit]:
            broken.append(f"{path.relative_to(PACKAGE.parent)} imports medssl3d.{target}")
    assert not broken, "\n".join(broken)


def test_the_checker_sees_relative_and_absolute_imports():
    assert {"networks", "losses"} <= _imports(PACKAGE / "methods" / "__init__.py") | _imports(
        PACKAGE / "methods" / "simclr.py")
    assert "encoder_export" in _imports(PACKAGE / "transfer.py")
