"""The package layout: arrows point one way, functions stay small, the public API resolves."""

from __future__ import annotations

import ast
from pathlib import Path

import spt_interp as spt

PACKAGE = Path(spt.__file__).parent
# Above every stage: the thin layers that chain them.
TOP = ("demo", "pair_demo", "cli")


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


def _body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Return the lines a function's body spans, its signature and docstring not counted."""
    body = function.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        if isinstance(first.value.value, str) and len(body) > 1:
            body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1


def test_no_function_body_is_over_80_lines():
    long = {
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}": lines
        for path, _ in _modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (lines := _body_lines(node)) > 80
    }
    assert long == {}


def test_the_body_count_skips_the_signature_and_the_docstring():
    source = (
        'def f(\n    a,\n    b,\n):\n    """Doc.\n\n    More.\n    """\n    x = 1\n\n    return x\n'
    )
    (function,) = ast.parse(source).body
    assert _body_lines(function) == 3


def test_the_public_api_resolves_every_name():
    assert "load_model" in spt.__all__ and "HeadMask" in spt.__all__
    for name in spt.__all__:
        assert getattr(spt, name) is not None, name
    assert spt.load_model is spt.model.load_model
    assert spt.tune is spt.tuning.tune
    assert "load_model" in dir(spt)


def test_the_type_checking_imports_mirror_the_lazy_table():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    ]
    imported = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    stages = {name for name, module in imported.items() if module == "spt_interp"}
    public = {name: module for name, module in imported.items() if module != "spt_interp"}
    assert stages == set(spt.STAGES)
    assert public == spt._PUBLIC
