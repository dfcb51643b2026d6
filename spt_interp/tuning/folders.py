"""``tune_folder`` and ``merge``: the ``tune`` and ``merge`` commands, from folders to folders.

``tune_folder`` checks every input before the model loads, tunes in memory (``run.tune``) and
writes the output atomically, verified; ``merge`` puts a delta folder on its base.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from spt_interp.common.distributed import barrier, group_from_environment, rank_and_world
from spt_interp.common.outputs import check_out, staged_folder
from spt_interp.data import protocol_for, read_training_file
from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask
from spt_interp.mask.scores import file_hash
from spt_interp.model import (
    check_model_folder,
    load_base,
    resolve_device,
    resolve_dtype,
    weight_files,
)
from spt_interp.tuning.config import TuneConfig
from spt_interp.tuning.resume import Checkpointer
from spt_interp.tuning.run import check_request, precision_note, tune
from spt_interp.tuning.save import (
    MASK_FILE,
    RECORD_FILE,
    base_identity,
    merged_weights,
    read_delta,
    read_weights,
    verify_outside_mask,
    write_full,
    write_record,
)


def check_lengths(examples: list, config: Any, data: Path) -> None:
    """Raise when a training dialogue is longer than the model's context."""
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    longest = max(len(e.input_ids) for e in examples)
    if limit is not None and longest > limit:
        raise SptInterpError(
            f"{data}: a training dialogue is {longest} tokens, longer than the model's "
            f"{limit}-token context"
        )


def tune_folder(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    config: TuneConfig,
    *,
    mask: str | Path | HeadMask | None = None,
    save: str = "full",
    force: bool = False,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    stop_after: int | None = None,
    device: str = "auto",
    dtype: str = "float32",
    gradient_checkpointing: bool = False,
    fsdp: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Return the run's record after tuning ``model`` on ``data`` and writing ``out``.

    Every input is checked before the model loads and before training; the output is written
    to a hidden sibling folder and renamed, so a failed run (a NaN loss included) writes
    nothing to ``out``. With ``stop_after`` the run checkpoints and returns unfinished.

    ``dtype`` is what the frozen base computes in: the head deltas, LoRA's factors and their
    optimizer state stay float32. Full SFT keeps float32 weights (an update below one bfloat16
    step would be lost) and runs its forward under autocast in ``dtype``.
    """
    method = config.method.method
    check_request(method, mask_given=mask is not None, save=save, fsdp=fsdp)
    if fsdp and (checkpoint_every or stop_after or resume):
        raise SptInterpError("--fsdp runs cannot checkpoint or resume yet")
    if stop_after is not None and stop_after < 1:
        raise SptInterpError(f"--stop-after must be at least 1, got {stop_after}")
    data = Path(data)
    training = read_training_file(data)  # dialogues or TRL rows, every line checked
    head_mask = HeadMask.load(mask) if isinstance(mask, (str, Path)) else mask
    folder = check_model_folder(model)
    weight_files(folder)
    out = check_out(out, force=force, reads=[folder])
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else out.parent / f"{out.name}.checkpoints"
    if resume and not (checkpoints / "checkpoint.pt").is_file():
        raise SptInterpError(f"--resume: no checkpoint at {checkpoints / 'checkpoint.pt'}")
    target, compute = resolve_device(device), resolve_dtype(dtype)

    with group_from_environment():
        rank, world = rank_and_world()
        base = load_base(folder, device=target, dtype=method.load_dtype(compute))
        if method.uses_mask:
            head_mask.validate(base)
        examples = training.examples(
            base.tokenizer, protocol_for(folder), config.seed, loss_on=config.loss_on
        )
        check_lengths(examples, base.config, data)
        fingerprint, data_hash = base.fingerprint(), file_hash(data)
        checkpointer = None
        if checkpoint_every or stop_after or resume:
            identity = {
                "data_hash": data_hash,
                "base_fingerprint": fingerprint,
                "processes": world,
                "dtype": dtype,
            }
            checkpointer = Checkpointer(checkpoints, checkpoint_every, identity)
        tuned = tune(
            base,
            examples,
            head_mask,
            config,
            dtype=compute,
            checkpointer=checkpointer,
            resume=resume,
            stop_after=stop_after,
            progress=progress,
            gradient_checkpointing=gradient_checkpointing,
            fsdp=fsdp,
        )
        record = tuned.record
        record.update(
            kind=save,
            data={
                "file": str(data),
                "hash": data_hash,
                "format": training.format,
                "records": len(training),
                "examples": len(examples),
                "loss_on": config.loss_on,
            },
            base=base_identity(folder, fingerprint),
            precision=precision_note(method, *tuned.precision, save),
        )
        if tuned.update is None:
            return record
        if rank == 0:
            record = tuned.write(out, save)
        barrier()
        if checkpointer is not None:
            checkpointer.remove(rank)
        return record


def merge(base: str | Path, delta: str | Path, out: str | Path, *, force: bool = False) -> dict:
    """Return the merged record after writing ``base`` + the delta folder as a full HF folder.

    Refuses a base whose weight files are not the ones the delta was trained on.
    """
    folder = check_model_folder(base)
    delta_folder = Path(delta)
    record, values = read_delta(delta_folder)
    out = check_out(out, force=force, reads=[folder, delta_folder])
    identity = base_identity(folder, record["base"]["fingerprint"])
    if identity["weights_hash"] != record["base"]["weights_hash"]:
        # Named both: the delta's record (its weights_hash) may be the file that is wrong.
        raise SptInterpError(
            f"{delta_folder}: {folder} is not the base this delta was trained on (weights hash "
            f"{identity['weights_hash'][:23]}, the delta's {record['base']['weights_hash'][:23]})"
        )
    with staged_folder(out) as staging:
        # origin: a slice that does not fit the base is the delta record's fault.
        tuned = merged_weights(folder, slices=values, origin=delta_folder / RECORD_FILE)
        write_full(folder, staging, tuned)
        merged = {key: value for key, value in record.items() if key != "slices"}
        merged.update(
            kind="full",
            merged_from=str(delta_folder),
            verification=verify_outside_mask(
                read_weights(folder), read_weights(staging), [piece for piece, _ in values]
            ),
        )
        if (delta_folder / MASK_FILE).is_file():
            shutil.copy2(delta_folder / MASK_FILE, staging / MASK_FILE)
        write_record(staging, merged)
    return merged
