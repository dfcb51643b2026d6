"""The transformers range: declared once, checked at import, refused in one line outside it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spt_interp.errors import SptInterpError
from spt_interp.model import hf_internals

ROOT = Path(__file__).resolve().parents[1]
FIX = "pip install 'transformers>=5.24,<5.26'"


def _refusal(found: str | None, monkeypatch) -> str | None:
    """Return the check's message with ``found`` as the installed version (None: it passes)."""
    monkeypatch.setattr(hf_internals, "installed_transformers", lambda: found)
    try:
        hf_internals.check_transformers_version()
    except SptInterpError as err:
        return str(err)
    return None


def test_pyproject_declares_the_range_the_import_check_enforces():
    declared = re.findall(r'"transformers([<>=!~,.\d]+)"', (ROOT / "pyproject.toml").read_text())
    assert declared == [hf_internals.SUPPORTED_TRANSFORMERS]
    assert hf_internals.SUPPORTED_TRANSFORMERS == ">=5.24,<5.26"


def test_the_installed_transformers_passes_the_check():
    from importlib.metadata import version

    assert hf_internals.installed_transformers() == version("transformers")
    hf_internals.check_transformers_version()


@pytest.mark.parametrize("found", ["5.24.0", "5.24.3", "5.25.0", "5.25.9"])
def test_both_ends_of_the_range_pass(found, monkeypatch):
    assert _refusal(found, monkeypatch) is None


@pytest.mark.parametrize("found", ["5.23.2", "5.26.0", "5.26.0.dev0", "6.0.0", "4.57.1"])
def test_a_version_outside_the_range_is_refused_in_one_line(found, monkeypatch):
    message = _refusal(found, monkeypatch)
    assert message == (
        f"transformers {found} is installed; spt-interp supports transformers>=5.24,<5.26: {FIX}"
    )


def test_a_missing_transformers_is_refused_in_one_line(monkeypatch):
    message = _refusal(None, monkeypatch)
    assert message == f"transformers is not installed; spt-interp needs it: {FIX}"


def _run_with_transformers(found: str, code: str) -> subprocess.CompletedProcess:
    """Return the result of ``code`` in a fresh interpreter whose package metadata reports
    transformers ``found`` (the installed one stays in place)."""
    fake = (
        "import importlib.metadata as m\n"
        "real = m.version\n"
        f"m.version = lambda name: {found!r} if name == 'transformers' else real(name)\n"
    )
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", fake + code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=300,
    )


def test_the_top_package_imports_without_checking_or_loading_torch():
    code = "import sys, spt_interp\nprint('torch' in sys.modules, 'transformers' in sys.modules)"
    done = _run_with_transformers("5.26.0", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_importing_the_model_stage_raises_the_line_before_transformers_is_imported():
    done = _run_with_transformers(
        "5.26.0",
        "import sys\n"
        "try:\n"
        "    import spt_interp.patching\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, 'transformers' in sys.modules)\n"
        "    print(err)\n",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "SptInterpError False",
        f"transformers 5.26.0 is installed; spt-interp supports transformers>=5.24,<5.26: {FIX}",
    ]


def test_the_command_line_prints_one_line_and_exits_2():
    done = _run_with_transformers("5.23.0", "from spt_interp.cli import main\nmain()")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: transformers 5.23.0 is installed; spt-interp supports transformers>=5.24,<5.26: "
        f"{FIX}"
    ]


def test_a_loaded_model_runs_its_own_torch_forwards_not_hub_kernels(tiny_model_dirs):
    from spt_interp.model import load_model

    hooked = load_model(tiny_model_dirs["llama"])
    assert hooked.hf_model.use_kernels is False
    hooked.hf_model.train()  # 5.25 kernelizes again on a mode change when kernels are on
    assert hooked.hf_model.use_kernels is False
