"""The package layout: arrows point one way, modules stay small, the public API resolves."""

from __future__ import annotations

import ast
from pathlib import Path

import spt_interp as spt

PACKAGE = Path(spt.__file__).parent
# Above every stage: the thin layers that chain them.
TOP = ("demo", "cli")


def _stage(module: str) -> int | None:
    """Return the rank of the stage a dotted module name belongs to (None: errors, the root)."""
    parts = module.split(".")
    if parts[0] != "spt_interp" or len(parts) == 1 or parts[1] == "errors":
        return None
    order = (*spt.STAGES, *TOP)
    return order.index(parts[1])


def _imports(path: Path) -> list[tuple[int, str]]:
    """Return (line, module) of every spt_interp import in a file, function-level ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, name) for line, name in found if name.startswith("spt_interp")]


def _modules() -> list[tuple[Path, str]]:
    return [
        (path, ".".join(("spt_interp", *path.relative_to(PACKAGE).with_suffix("").parts)))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def test_every_module_belongs_to_a_stage_and_imports_none_above_it():
    violations = []
    for path, name in _modules():
        if name in ("spt_interp.__init__", "spt_interp.errors"):
            continue
        own = _stage(name)
        assert own is not None, f"{name} is in no stage of spt_interp.STAGES"
        for line, imported in _imports(path):
            other = _stage(imported)
            if other is not None and other > own:
                violations.append(f"{path.relative_to(PACKAGE)}:{line} imports {imported}")
    assert violations == []


def test_no_module_is_over_400_lines():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path, _ in _modules()
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert long == {}


def test_the_public_api_resolves_every_name():
    assert "load_model" in spt.__all__ and "HeadMask" in spt.__all__
    for name in spt.__all__:
        assert getattr(spt, name) is not None, name
    assert spt.load_model is spt.model.load_model
    assert spt.tune is spt.tuning.tune
    assert "load_model" in dir(spt)
