"""The one output rule every writing command follows, and the staging folder it writes through.

Every command writes into ``--out``, refuses to replace anything there without ``--force``, never
writes into (or replaces a folder holding) what it reads, and fails before any heavy work when
the place cannot be written. A command that writes a whole folder builds it under a hidden
sibling name and renames it into place at the end, so an interrupted run leaves nothing
half-written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spt_interp.common.atomic import current_umask, deferred_interrupts
from spt_interp.errors import SptInterpError


def check_out(
    out: str | Path,
    *,
    force: bool,
    reads: Sequence[str | Path] = (),
    files: Sequence[str] | None = None,
    create_parents: bool = False,
) -> Path:
    """Return ``out`` resolved once a command may write there; raise SptInterpError if not.

    ``files`` None: ``out`` is a folder (or file) the command replaces as a whole; given: the
    names the command writes inside the folder ``out``, and only those are protected. ``reads``
    are the inputs: ``out`` may not be one of them or lie inside one, and a whole-folder ``out``
    may not hold one either (replacing it would delete the input). ``create_parents`` makes
    missing parent folders as ``mkdir -p`` would; otherwise they must exist.
    """
    given = Path(out)
    target = given.expanduser().resolve()
    for read in reads:
        source = Path(read).expanduser().resolve()
        what = f"the model folder {read}" if source.is_dir() else f"the input {read}"
        if target == source:
            raise SptInterpError(f"--out {given} is {what}, which this command reads")
        if source in target.parents:
            raise SptInterpError(f"--out {given} is inside {what}, which this command reads")
        if files is None and target in source.parents:
            raise SptInterpError(f"--out {given} holds {what}, which this command reads")
    if files is None:
        if target.exists() and not force:
            raise SptInterpError(f"{given} already exists; pass --force to replace it")
    else:
        if target.exists() and not target.is_dir():
            raise SptInterpError(f"--out {given} is a file, not a folder")
        existing = [name for name in files if (target / name).exists()]
        if existing and not force:
            raise SptInterpError(
                f"{given} already holds {', '.join(existing)}; pass --force to replace it"
            )
    # A whole-folder output is staged beside ``out``; files are written inside it.
    where = target if files is not None and target.is_dir() else target.parent
    _check_writable(given, where, create_parents)
    return target


def _check_writable(out: Path, parent: Path, create_parents: bool) -> None:
    """Raise "cannot write" unless a folder can be made in ``parent``, so that a run fails
    before its work, not at the end."""
    if not parent.is_dir() and not create_parents:
        raise SptInterpError(f"cannot write {out}: folder {parent} does not exist")
    # One probe per process: the ranks of a torchrun job all check --out at once, and with a
    # shared name one rank's rmdir removed the probe another was about to remove.
    probe = parent / f".{out.name}.write-test-{os.getpid()}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError as err:
        raise SptInterpError(f"cannot write {out}: {err.strerror or err}") from None


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """Yield a fresh hidden sibling of ``out`` to write into; when the block ends normally it
    replaces ``out`` by a rename, and whatever way it ends the staging folder is gone."""
    target = Path(out)
    old = target.parent / f".{target.name}.old"

    def swap_in(staging: Path) -> None:
        # A rename cannot replace a non-empty folder (--force was checked before): the old one
        # moves aside first. A SIGKILL between the two renames leaves ``out`` absent and the
        # old output whole under .NAME.old, until a later run has put its own in place.
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)

    with _staged(target.parent / f".{target.name}.partial", target, swap_in) as staging:
        yield staging


@contextmanager
def _staged(staging: Path, target: Path, commit: Callable[[Path], None]) -> Iterator[Path]:
    """Yield the empty folder ``staging``; when the block ends normally, give its contents the
    modes of a plain write and ``commit`` them (held against Ctrl-C as one step); whatever way
    it ends, ``staging`` is gone. A write refused by the filesystem names ``target``."""
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        yield staging
        _ordinary_permissions(staging)
        with deferred_interrupts():
            commit(staging)
    except PermissionError as err:
        raise SptInterpError(f"cannot write {target}: {err.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _ordinary_permissions(folder: Path) -> None:
    """Give the folder and its files the modes a plain write would (some writers, safetensors'
    among them, create files readable by their owner only)."""
    umask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


STAGED_FILES = ".spt-interp.partial"


@contextmanager
def staged_files(out: str | Path) -> Iterator[Path]:
    """Yield a hidden folder inside the folder ``out`` to write a command's files into; when the
    block ends normally each file is renamed into ``out``, and whatever way it ends the hidden
    folder is gone.

    For commands that write named files into a folder that may hold others (locate, knockout):
    an interrupted run leaves none of its files in ``out``. The renames at the end are held
    against Ctrl-C as one step; a SIGKILL during them (one rename per file, no copying) can
    leave some files new and the rest as they were.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)

    def move_in(staging: Path) -> None:
        for path in sorted(staging.iterdir()):
            os.replace(path, folder / path.name)

    with _staged(folder / STAGED_FILES, folder, move_in) as staging:
        yield staging


def final_paths(written: dict[str, Any], staging: Path, out: str | Path) -> dict[str, str]:
    """Return ``written`` with each path inside ``staging`` given as its place in ``out`` once
    staged_files has moved it (other values, such as a note why there is no PNG, unchanged)."""
    return {
        key: str(Path(out) / Path(value).name) if Path(str(value)).parent == staging else str(value)
        for key, value in written.items()
    }
