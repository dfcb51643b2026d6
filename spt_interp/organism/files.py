"""Write the organism to disk: DIR/model (shipped or retrained weights) and DIR/data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from spt_interp.common.outputs import check_out, staged_folder
from spt_interp.errors import SptInterpError
from spt_interp.organism.dialogues import OrganismConfig, build_knowledge_base, build_splits
from spt_interp.organism.training import train_organism

ASSET_DIR = Path(__file__).parent.parent / "assets" / "organism"


def write_data(out_dir: str | Path, config: OrganismConfig | None = None) -> dict[str, Path]:
    """Write train / test / general JSONL splits into ``out_dir``; return their paths."""
    config = config or OrganismConfig()
    splits = build_splits(build_knowledge_base(config), config.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, records in splits.items():
        path = out_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        paths[name] = path
    return paths


def write_organism(
    out: str | Path, *, retrain: bool = False, force: bool = False, progress: bool = True
) -> dict:
    """Write DIR/model (an HF folder) and DIR/data/{train,test,general}.jsonl; return a summary.

    Everything is written into a temporary sibling folder first and renamed at the end, so a
    failed or interrupted run leaves nothing half-written.
    """
    out = Path(out)
    check_out(out, force=force)
    with staged_folder(out) as staging:
        if retrain:
            summary = train_organism(staging / "model", progress=progress)
        else:
            if not (ASSET_DIR / "model.safetensors").is_file():
                raise SptInterpError(
                    f"the shipped organism weights are missing from {ASSET_DIR}; run with --retrain"
                )
            shutil.copytree(ASSET_DIR, staging / "model")
            summary = {"seconds": 0.0}
        config = OrganismConfig(**json.loads((staging / "model" / "organism.json").read_text()))
        write_data(staging / "data", config)
    return {"model": str(out / "model"), "data": str(out / "data"), **summary}
