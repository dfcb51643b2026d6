"""`spt-interp tune` and `merge`: pinpoint tuning (and its baselines), and applying a delta."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from spt_interp.cli.app import DeviceOption, ModelOption, app, choice_list, one_line_errors
from spt_interp.model.devices import DTYPES
from spt_interp.tuning.config import LOSS_ON, MODES, OPTIMIZERS, SAVE_KINDS


@app.command()
@one_line_errors
def tune(
    model: ModelOption,
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="JSONL to tune on: dialogues (SycophancyEval style), or TRL rows "
            '({"prompt", "completion"} or {"messages"}; loss on the completion).',
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (a new HF model or delta).")],
    mask: Annotated[
        Path | None, typer.Option(help="Head mask JSON (from export-mask); not used by sft.")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            metavar=choice_list(MODES),
            help="spt (masked heads), sft (all), lora (peft LoRA on every linear layer), "
            "lora-heads (LoRA on the masked slices), random (K random heads).",
        ),
    ] = "spt",
    save: Annotated[
        str,
        typer.Option(
            metavar=choice_list(SAVE_KINDS),
            help="full (an HF folder) or delta (changed slices + mask).",
        ),
    ] = "full",
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 100,
    batch_size: Annotated[int, typer.Option(help="Examples per step, over all processes.")] = 16,
    micro_batch_size: Annotated[
        int | None, typer.Option(help="Examples per forward pass (gradient accumulation).")
    ] = None,
    warmup_steps: Annotated[int, typer.Option(help="Linear warmup steps before cosine.")] = 0,
    weight_decay: Annotated[float, typer.Option(help="Decoupled (AdamW) or L2 (SGD) decay.")] = 0.0,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm (0: none).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Data order, wording, LoRA init, random heads.")] = 0,
    loss_on: Annotated[
        str, typer.Option(metavar=choice_list(LOSS_ON), help="Which tokens take loss.")
    ] = "reply",
    lora_rank: Annotated[
        int | None, typer.Option(help="LoRA rank (default: 16 for lora, 8 for lora-heads).")
    ] = None,
    lora_alpha: Annotated[
        float | None, typer.Option(help="LoRA alpha (default: twice the rank).")
    ] = None,
    optimizer: Annotated[
        str,
        typer.Option(
            metavar=choice_list(OPTIMIZERS),
            help="adamw (the paper's) or sgd (plain; linear in the gradient).",
        ),
    ] = "adamw",
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint every N steps (0: off).")] = 0,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Checkpoint folder [default: OUT.checkpoints].")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint.")] = False,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop (checkpointed) after N steps; go on with --resume.")
    ] = None,
    device: DeviceOption = "auto",
    dtype: Annotated[
        str,
        typer.Option(
            metavar=choice_list(tuple(DTYPES)),
            help="What the frozen base computes in; deltas, LoRA factors and optimizer state "
            "stay float32 (sft: float32 weights under autocast).",
        ),
    ] = "float32",
    gradient_checkpointing: Annotated[
        bool, typer.Option(help="Recompute each layer in the backward instead of storing it.")
    ] = False,
    fsdp: Annotated[
        bool,
        typer.Option(
            help="Shard full SFT over the processes (torchrun / accelerate launch; on by "
            "itself under accelerate launch --use_fsdp)."
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Tune only the masked heads (or all weights, LoRA on the heads, random heads); save."""
    from spt_interp.common.distributed import group_from_environment, rank_and_world
    from spt_interp.tuning import TuneConfig, tune_folder
    from spt_interp.tuning.sharding import accelerate_asks_for_fsdp

    # `accelerate launch --use_fsdp` (flags or its config file) asks for the same sharding.
    fsdp = fsdp or accelerate_asks_for_fsdp()

    config = TuneConfig(
        mode=mode,
        lr=lr,
        steps=steps,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm or None,
        seed=seed,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        loss_on=loss_on,
        optimizer=optimizer,
    )
    # Held here, not only inside tune_folder, so that the rank is still known for printing.
    with group_from_environment():
        record = tune_folder(
            model,
            data,
            out,
            config,
            mask=mask,
            save=save,
            force=force,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            resume=resume,
            stop_after=stop_after,
            device=device,
            dtype=dtype,
            gradient_checkpointing=gradient_checkpointing,
            fsdp=fsdp,
        )
        rank = rank_and_world()[0]
    if rank != 0:
        return
    losses = record["losses"]
    print(
        f"mode {record['mode']}: {record['steps_done']} steps, loss {losses[0]:.4f} -> "
        f"{losses[-1]:.4f}, {record['train_seconds']:.1f} s, {record['processes']} process(es)"
    )
    print(f"trainable parameters: {record['trainable_parameters']}")
    if record["precision"] != "float32 throughout":
        print(f"precision: {record['precision']}")
    formula = record.get("paper_formula")
    if formula:
        print(
            f"paper formula: {formula['formula']} = {formula['value']} "
            f"(weights {formula['weights']}, biases {formula['biases']})"
        )
    if "stopped" in record:
        print(f"stopped {record['stopped']} ({record['checkpoint']})")
        return
    check = record.get("verification")
    if check:
        print(
            f"verified: {check['tensors_compared']} tensors, everything outside the mask "
            f"bit-identical to the base ({check['changed_elements_inside_mask']} changed "
            "inside)"
        )
    print(f"wrote {out}", file=sys.stderr)


@app.command()
@one_line_errors
def merge(
    base: Annotated[Path, typer.Option("--base", help="The base model folder the delta is for.")],
    delta: Annotated[Path, typer.Option("--delta", help="A `tune --save delta` folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the merged HF model.")],
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Apply a tuning delta to its base model; write a full HF folder."""
    from spt_interp.tuning import merge as run_merge

    record = run_merge(base, delta, out, force=force)
    check = record["verification"]
    print(
        f"merged {delta} into {base}: {check['tensors_compared']} tensors, outside the mask "
        "bit-identical"
    )
    print(f"wrote {out}", file=sys.stderr)
