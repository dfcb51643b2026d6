"""Run the spt-interp CLI and pause it at a named point, so that a test can kill it right there.

    KILL_POINT=save KILL_MARKER=/tmp/paused python tests/kill_harness.py tune --model ...

When the process reaches the point it creates KILL_MARKER and sleeps KILL_PAUSE seconds
(default 600; the test sends its signal meanwhile), then goes on. The points wrap library
functions from outside; the toolkit itself has no test hooks:

- ``compute``: before the KILL_COUNT-th call of any torch module (default 20): mid-work.
- ``checkpoint``: after the KILL_COUNT-th training checkpoint has been written.
- ``save``: after the first output file is complete inside a staging (``*.partial``) folder,
  before the others are written.
- ``commit``: every output file staged, before the first rename into place (of the staging
  folder named KILL_STAGING, if given).
- ``swap``: a --force run has moved the old output aside, before the new one is renamed in.
- ``replace``: a single output file written beside its target, before the rename.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from pathlib import Path

# A test run started in the background (``cmd &`` without job control) hands its children
# SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the INT points would
# sleep through their signal. The harness restores Python's own handler.
signal.signal(signal.SIGINT, signal.default_int_handler)

POINT = os.environ["KILL_POINT"]
MARKER = Path(os.environ["KILL_MARKER"])
PAUSE = float(os.environ.get("KILL_PAUSE", "600"))
COUNT = int(os.environ.get("KILL_COUNT", "20"))
calls = {"n": 0, "paused": False}


def pause() -> None:
    if calls["paused"]:
        return
    calls["paused"] = True
    MARKER.write_text(POINT)
    time.sleep(PAUSE)


def staged(path) -> bool:
    """Whether ``path`` lies in a staging folder (the toolkit's ``.NAME.partial``)."""
    return any(part.endswith(".partial") for part in Path(path).parent.parts)


def after(original, condition):
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        if condition(*args, **kwargs):
            pause()
        return result

    return wrapper


def nth_call(*args, **kwargs) -> bool:
    calls["n"] += 1
    return calls["n"] == COUNT


def install() -> None:
    # Installed before spt_interp (and transformers) import, so that names they import from
    # these modules are the wrapped ones.
    if POINT == "compute":
        import torch

        original = torch.nn.Module.__call__

        def call(self, *args, **kwargs):
            if nth_call():
                pause()
            return original(self, *args, **kwargs)

        torch.nn.Module.__call__ = call
    elif POINT == "checkpoint":
        from spt_interp.tuning import resume

        resume.Checkpointer.save = after(resume.Checkpointer.save, nth_call)
    elif POINT == "save":
        import safetensors.torch

        from spt_interp.common import atomic

        atomic.write_bytes_atomic = after(
            atomic.write_bytes_atomic, lambda path, *a, **k: staged(path)
        )
        for name in ("save_file", "save_model"):
            wrapped = getattr(safetensors.torch, name)
            setattr(
                safetensors.torch,
                name,
                after(wrapped, lambda tensors, filename, *a, **k: staged(filename)),
            )
    elif POINT == "commit":
        from spt_interp.common import outputs

        # KILL_STAGING names the staging folder to stop at (the demo stages inside its own).
        wanted = os.environ.get("KILL_STAGING")
        outputs._ordinary_permissions = after(
            outputs._ordinary_permissions, lambda folder: wanted in (None, Path(folder).name)
        )
    elif POINT == "swap":
        original_rename = Path.rename
        Path.rename = after(original_rename, lambda self, target: str(target).endswith(".old"))
    elif POINT == "replace":
        original_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if str(src).endswith(".partial") and not staged(dst):
                pause()
            return original_replace(src, dst, *args, **kwargs)

        os.replace = replace
    else:
        raise SystemExit(f"unknown KILL_POINT {POINT!r}")


if __name__ == "__main__":
    install()
    from spt_interp.cli import app

    sys.argv[0] = "spt-interp"
    app()
