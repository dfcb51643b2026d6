"""``tune`` and ``merge``: check inputs, train, write the output atomically, verify it."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from spt_interp.common.distributed import barrier, init_from_environment, rank_and_world
from spt_interp.common.outputs import check_out, staged_folder
from spt_interp.data import build_training_examples, load_dialogues, pad_token_id, protocol_for
from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask, random_mask
from spt_interp.mask.scores import file_hash
from spt_interp.model import (
    check_model_folder,
    load_base,
    resolve_device,
    resolve_dtype,
    weight_files,
)
from spt_interp.tuning.config import SAVE_KINDS, TuneConfig
from spt_interp.tuning.deltas import HeadDeltas, paper_trainable_count, weight_count
from spt_interp.tuning.loop import train
from spt_interp.tuning.lora import ModelLora
from spt_interp.tuning.resume import Checkpointer
from spt_interp.tuning.save import (
    MASK_FILE,
    RECORD_FILE,
    RECORD_FORMAT,
    base_identity,
    merged_weights,
    read_delta,
    read_weights,
    verify_outside_mask,
    write_delta,
    write_full,
    write_mask,
    write_record,
)
from spt_interp.tuning.sharding import full_state


def check_lengths(examples: list, config: Any, data: Path) -> None:
    """Raise when a training dialogue is longer than the model's context."""
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    longest = max(len(e.input_ids) for e in examples)
    if limit is not None and longest > limit:
        raise SptInterpError(
            f"{data}: a training dialogue is {longest} tokens, longer than the model's "
            f"{limit}-token context"
        )


def tune(
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
    if save not in SAVE_KINDS:
        raise SptInterpError(f"--save {save!r} is not one of {', '.join(SAVE_KINDS)}")
    if config.uses_mask and mask is None:
        raise SptInterpError(f"--mode {config.mode} needs --mask (a head mask JSON)")
    if not config.uses_mask and save == "delta":
        raise SptInterpError(
            f"--save delta keeps masked head slices only; --mode {config.mode} changes every "
            "layer: use --save full"
        )
    if fsdp and config.mode != "sft":
        raise SptInterpError(f"--fsdp shards full SFT; --mode {config.mode} trains a few slices")
    if fsdp and (checkpoint_every or stop_after or resume):
        raise SptInterpError("--fsdp runs cannot checkpoint or resume yet")
    if stop_after is not None and stop_after < 1:
        raise SptInterpError(f"--stop-after must be at least 1, got {stop_after}")
    data = Path(data)
    records = load_dialogues(data)
    head_mask = HeadMask.load(mask) if isinstance(mask, (str, Path)) else mask
    folder = check_model_folder(model)
    weight_files(folder)
    out = check_out(out, force=force, reads=[folder])
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else out.parent / f"{out.name}.checkpoints"
    if resume and not (checkpoints / "checkpoint.pt").is_file():
        raise SptInterpError(f"--resume: no checkpoint at {checkpoints / 'checkpoint.pt'}")
    target, compute_dtype = resolve_device(device), resolve_dtype(dtype)
    autocast = compute_dtype if config.mode == "sft" and compute_dtype != torch.float32 else None

    init_from_environment()
    rank, world = rank_and_world()
    base = load_base(folder, device=target, dtype=torch.float32 if autocast else compute_dtype)
    trained_mask = None
    if config.uses_mask:
        head_mask.validate(base)
        trained_mask = random_mask(head_mask, config.seed) if config.mode == "random" else head_mask
    protocol = protocol_for(folder)
    examples = build_training_examples(
        records, base.tokenizer, protocol, config.seed, loss_on=config.loss_on
    )
    check_lengths(examples, base.config, data)
    deltas = None
    if trained_mask is not None:
        lora = config.mode == "lora-heads"
        deltas = HeadDeltas.create(
            trained_mask,
            base.hf_parameters,
            lora_rank=config.lora_rank if lora else None,
            lora_alpha=config.lora_alpha if lora else None,
            seed=config.seed,
        )
    lora = None
    if config.mode == "lora":
        lora = ModelLora(base.model, config.lora_rank, config.lora_alpha, config.seed)
    identity = {
        "mode": config.mode,
        "hyperparameters": config.as_dict(),
        "mask": trained_mask.to_dict() if trained_mask is not None else None,
        "data_hash": file_hash(data),
        "base_fingerprint": base.fingerprint(),
        "processes": world,
        "dtype": dtype,
    }
    checkpointer = None
    if checkpoint_every or stop_after or resume:
        checkpointer = Checkpointer(checkpoints, checkpoint_every, identity)
    result = train(
        base.model,
        examples,
        config,
        pad_id=pad_token_id(base.tokenizer),
        deltas=deltas if lora is None else lora,
        checkpointer=checkpointer,
        resume=resume,
        stop_after=stop_after,
        progress=progress,
        autocast_dtype=autocast,
        gradient_checkpointing=gradient_checkpointing,
        fsdp=fsdp,
    )
    if lora is not None:
        trainable = lora.trainable_count()
    elif deltas is not None:
        trainable = deltas.trainable_count()
    else:
        trainable = sum(p.numel() for p in base.model.parameters())
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "version": 1,
        "kind": save,
        "mode": config.mode,
        "hyperparameters": config.as_dict(),
        "mask": identity["mask"],
        "mask_given": head_mask.to_dict() if head_mask is not None else None,
        "data": {"file": str(data), "hash": identity["data_hash"], "records": len(records),
                 "examples": len(examples), "loss_on": config.loss_on},
        "base": base_identity(folder, identity["base_fingerprint"]),
        "trainable_parameters": trainable,
        "steps_done": result.steps_done,
        "losses": result.losses,
        "train_seconds": round(result.seconds, 3),
        "samples_per_second": round(result.samples / max(result.seconds, 1e-9), 3),
        "optimizer_state_bytes": result.optimizer_bytes,
        "processes": world,
        "precision": precision_note(config.mode, dtype, autocast is not None, save),
        "gradient_checkpointing": gradient_checkpointing,
        "fsdp": fsdp,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    if lora is not None:
        from peft import __version__ as peft_version

        record["lora"] = {"rank": config.lora_rank, "alpha": config.lora_alpha,
                          "target_modules": "all-linear", "layers": len(lora.layers()),
                          "peft": peft_version,
                          "merged": "--save full adds peft's update into the weights"}  # fmt: skip
    if deltas is not None and config.mode != "lora-heads":
        record["paper_formula"] = {
            "value": paper_trainable_count(trained_mask),
            "formula": f"{len(trained_mask.components)} x d_head {trained_mask.model.d_head} x "
            f"d_model {trained_mask.model.d_model} x K {len(trained_mask.heads)}",
            "weights": weight_count(deltas),
            "biases": trainable - weight_count(deltas),
        }
    if not result.finished:
        record["stopped"] = f"after step {result.steps_done}; continue with --resume"
        record["checkpoint"] = str(checkpointer.path)
        return record
    trained = None
    if lora is not None:
        adapted = lora.factors().parameters()
        lora.merge_and_detach()  # peft adds B @ A * scale into base.model's weights
        # Only the adapted weights are written: the rest keep the files' bytes, whatever
        # dtype the base computed in.
        weights = dict(base.model.named_parameters())
        trained = {name: weights[name] for name in adapted}
    elif fsdp:
        trained = full_state(base.model)  # a collective: every rank gathers, rank 0 keeps
    elif deltas is None:
        trained = base.model.state_dict()
    if rank == 0:
        _write_output(folder, out, save, deltas, trained, trained_mask, record)
    barrier()
    if checkpointer is not None:
        checkpointer.remove(rank)
    return record


def _write_output(
    folder: Path,
    out: Path,
    save: str,
    deltas: HeadDeltas | None,
    trained: dict[str, Any] | None,
    mask: HeadMask | None,
    record: dict[str, Any],
) -> None:
    with staged_folder(out) as staging:
        values = deltas.values() if deltas is not None else None
        slices = [piece for piece, _ in values] if values is not None else None
        if values is not None:
            tuned = merged_weights(folder, slices=values)
        else:
            tuned = merged_weights(folder, trained=trained)
        if save == "full":
            write_full(folder, staging, tuned)
            tuned = read_weights(staging)  # verify what was written, not what was meant
        else:
            record["slices"] = write_delta(staging, values)
        if slices is not None:
            record["verification"] = verify_outside_mask(read_weights(folder), tuned, slices)
        write_mask(staging, mask)
        write_record(staging, record)


def precision_note(mode: str, dtype: str, autocast: bool, save: str) -> str:
    """Return what the run computed in and what ``--save`` wrote, in one sentence."""
    if dtype == "float32":
        return "float32 throughout"
    if autocast:
        return f"float32 weights and optimizer, forward under {dtype} autocast"
    trained = "LoRA factors" if mode == "lora" else "head deltas"
    written = (
        "float32 deltas" if save == "delta"
        else "the sum rounded to the weight files' dtype (lossy where the files are "
        f"{dtype}, as merged LoRA is)"
    )  # fmt: skip
    return f"base frozen in {dtype}; {trained} and optimizer state float32; wrote {written}"


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
