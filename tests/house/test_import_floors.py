"""The core package's folders are floors, and no import climbs (docs/contributing/internals.md).

`contract` is the ground floor, then `adapters`, `pipeline`, `operations`, `cli` on top. A module may
import its own floor and the floors below it; a folder's name then says what may depend on it, and a
newcomer can read the house from the ground up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CORE = Path(__file__).resolve().parents[2] / "layers" / "core" / "model_cache"
FLOORS = ("contract", "adapters", "pipeline", "operations", "cli")


def module_name(path: Path, core: Path) -> str:
    parts = path.relative_to(core.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package: str = "model_cache") -> list[tuple[int, str]]:
    """Every `{package}...` name a module imports, with its line: `from model_cache.x import y` counts as
    `model_cache.x.y` too, since `y` may be a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == package:
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == package]
    return found


def floor_of(dotted: str) -> int | None:
    parts = dotted.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else None


def climbing_imports(core: Path) -> list[str]:
    climbs = []
    for path in sorted(core.rglob("*.py")):
        own = floor_of(module_name(path, core))
        for line, target in imported_modules(path):
            their = floor_of(target)
            if own is not None and their is not None and their > own:
                climbs.append(f"{path.relative_to(core)}:{line} ({FLOORS[own]}) imports {target} ({FLOORS[their]})")
    return climbs


def test_every_module_of_the_core_lives_on_a_floor() -> None:
    # GIVEN the core package
    # WHEN its modules are listed
    flat = [path.name for path in CORE.glob("*.py") if path.name != "__init__.py"]
    folders = sorted(path.name for path in CORE.iterdir() if path.is_dir() and (path / "__init__.py").exists())
    # THEN only the package marker stands at the top, and every folder is a floor
    assert flat == []
    assert folders == sorted(FLOORS)


def test_no_module_imports_from_a_floor_above_its_own() -> None:
    # GIVEN every module of every floor
    # WHEN its imports are read
    climbs = climbing_imports(CORE)
    # THEN none reaches up
    assert climbs == []


@pytest.mark.parametrize("package", ["layers/core/model_cache", "loader/src/model_cache_loader"])
def test_the_product_never_imports_the_test_doubles(package: str) -> None:
    # GIVEN a package that ships (the Lambda layer, the copier image, the loader wheel)
    root = CORE.parents[2] / package
    # WHEN its imports are read
    doubles = [
        f"{path.relative_to(root)}:{line} imports {target}"
        for path in sorted(root.rglob("*.py"))
        for line, target in imported_modules(path, "model_cache_devtools")
    ]
    # THEN none is of the devtools package, which is installed only for development
    assert doubles == []


def test_a_climbing_import_is_found(tmp_path: Path) -> None:
    # GIVEN a copy of two floors where the pipeline imports from the cli
    core = tmp_path / "model_cache"
    for floor in ("pipeline", "cli"):
        (core / floor).mkdir(parents=True)
        (core / floor / "__init__.py").write_text("")
    (core / "cli" / "common.py").write_text("X = 1\n")
    (core / "pipeline" / "plan.py").write_text("import json\n\nfrom model_cache.cli import common\n")
    # WHEN its imports are read
    climbs = climbing_imports(core)
    # THEN the climb is named, with its line and both floors
    assert climbs == ["pipeline/plan.py:3 (pipeline) imports model_cache.cli.common (cli)"]
