"""The training loop: AdamW (or SGD), warmup + cosine to 0, gradient accumulation, data parallel.

Runs on a plain HF causal LM with a tuning method attached (``tuning.methods``): the method
says what trains (``parameters()``), what the loss is computed through (``forward``) and what a
checkpoint keeps (``state()``); the loop knows no method by name. Data parallel over
``torch.distributed`` (torchrun / accelerate launch): each process takes every world-th example
of the step's global batch, and the summed gradients are all-reduced, so N processes give the
one-process result up to float rounding. The loss is the token-mean cross-entropy over the
global batch's labelled tokens. The model trains with every dropout at 0 (``training_mode``) so
that runs, resumed runs and data-parallel runs are reproducible.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from spt_interp.common.distributed import rank_and_world
from spt_interp.data.training import IGNORE_INDEX, TrainingExample
from spt_interp.errors import SptInterpError
from spt_interp.tuning.config import TrainingArguments
from spt_interp.tuning.methods import TuningMethod
from spt_interp.tuning.resume import Checkpointer
from spt_interp.tuning.train_mode import training_mode


@dataclass
class TrainResult:
    """What a run did: steps completed, loss per step, seconds spent training."""

    steps_done: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    samples: int = 0
    finished: bool = True
    optimizer_bytes: int = 0


def example_order(n_examples: int, seed: int, start: int, count: int) -> list[int]:
    """Return ``count`` example indices from position ``start`` of the seeded epoch stream.

    Each epoch is a fresh permutation drawn from (seed, epoch): any step's batch can be
    recomputed from the step number alone, which is what makes ``--resume`` exact.
    """
    order: list[int] = []
    position = start
    while len(order) < count:
        epoch, offset = divmod(position, n_examples)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        permutation = torch.randperm(n_examples, generator=generator).tolist()
        take = permutation[offset : offset + count - len(order)]
        order.extend(take)
        position += len(take)
    return order


def collate(
    examples: list[TrainingExample], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Return right-padded (input_ids, attention_mask, labels) of the examples."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels)
    return ids, mask, labels


def labelled_tokens(example: TrainingExample) -> int:
    """Return how many positions of the example take loss (next-token targets not ignored)."""
    return sum(1 for label in example.labels[1:] if label != IGNORE_INDEX)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainingArguments) -> Any:
    """Return transformers' linear warmup then cosine to 0 over the run's steps (a LambdaLR,
    so a checkpoint keeps its state)."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)


def token_loss_sum(
    forward: Callable[..., Any],
    ids: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    labels: Int[Tensor, "batch pos"],
) -> Tensor:
    """Return the summed next-token cross-entropy over labelled positions."""
    logits = forward(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, 1:].flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def train(
    model: torch.nn.Module,
    examples: list[TrainingExample],
    config: TrainingArguments,
    *,
    pad_id: int,
    method: TuningMethod,
    checkpointer: Checkpointer | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
    gradient_checkpointing: bool = False,
    fsdp: bool = False,
) -> TrainResult:
    """Return the result of training ``method`` on ``model`` over the examples.

    A method that is not attached is attached for the run and taken off after; one attached by
    the caller stays on (its ``finish()`` then takes it off with the update merged).
    ``stop_after`` ends the run after that many steps (checkpointed, to go on with ``resume``).
    ``autocast_dtype`` runs the forward under ``torch.autocast`` (float32 weights: mixed
    precision); ``gradient_checkpointing`` recomputes each layer in the backward (HF's own,
    non-reentrant) instead of keeping its activations. ``fsdp`` shards a method that trains
    the weights over the processes (``method.shard()``; the model stays sharded after).
    Raises SptInterpError on a NaN/inf loss, before the optimizer applies it.
    """
    if not examples:
        raise SptInterpError("no training examples")
    rank, world = rank_and_world()
    if config.batch_size < world:
        raise SptInterpError(f"--batch-size {config.batch_size} is smaller than {world} processes")
    if fsdp and (not method.trains_weights or world == 1):
        raise SptInterpError(
            "--fsdp shards full SFT over processes: use --mode sft under torchrun or "
            "accelerate launch"
        )
    # Attached for the whole run, not per forward: a recomputing backward (gradient
    # checkpointing) runs the modules again and must see the method too.
    attached_here = not method.attached
    method.attach()
    try:
        return _train(
            model,
            examples,
            config,
            pad_id,
            method,
            checkpointer,
            resume,
            stop_after,
            progress,
            autocast_dtype,
            gradient_checkpointing,
            fsdp,
        )
    finally:
        if attached_here:
            method.detach()


def _train(
    model: torch.nn.Module,
    examples: list[TrainingExample],
    config: TrainingArguments,
    pad_id: int,
    method: TuningMethod,
    checkpointer: Checkpointer | None,
    resume: bool,
    stop_after: int | None,
    progress: bool,
    autocast_dtype: torch.dtype | None,
    gradient_checkpointing: bool,
    fsdp: bool,
) -> TrainResult:
    """Return the result of ``train`` with the method attached."""
    rank, world = rank_and_world()
    device = next(model.parameters()).device
    if fsdp:
        method.shard()
    parameters = method.parameters()
    optimizer = make_optimizer(parameters, config)
    schedule = make_schedule(optimizer, config)
    result = TrainResult(steps_done=0)
    if resume:
        if checkpointer is None:
            raise SptInterpError("--resume needs a checkpoint folder")
        state = checkpointer.load()
        method.load_state(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        result = TrainResult(
            state["step"], list(state["losses"]), float(state["seconds"]), int(state["samples"])
        )
    micro = config.micro_batch_size or math.ceil(config.batch_size / world)
    last = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = tqdm(
        range(result.steps_done, last),
        initial=result.steps_done,
        total=config.steps,
        desc=f"tuning ({method.name})",
        disable=not progress or rank != 0,
    )
    started = time.perf_counter() - result.seconds
    forward = method.forward
    if autocast_dtype is not None:
        forward = autocast_forward(forward, device.type, autocast_dtype)
    try:
        with training_mode(model, gradient_checkpointing):
            for step in bar:
                step_loss, samples = _step(
                    forward, examples, config, step, pad_id, micro, device, parameters, fsdp
                )
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                result.steps_done = step + 1
                result.samples += samples
                result.losses.append(step_loss)
                bar.set_postfix(loss=f"{step_loss:.4f}")
                result.seconds = time.perf_counter() - started
                if checkpointer is not None and checkpointer.due(
                    result.steps_done, last, config.steps
                ):
                    checkpointer.save(
                        {
                            "step": result.steps_done,
                            "losses": result.losses,
                            "seconds": result.seconds,
                            "samples": result.samples,
                            "trainable": method.state(),
                            "optimizer": optimizer.state_dict(),
                            "schedule": schedule.state_dict(),
                        },
                        rank=rank,
                    )
    finally:
        bar.close()
    result.finished = result.steps_done >= config.steps
    result.optimizer_bytes = optimizer_state_bytes(optimizer)
    return result


def _step(
    forward: Callable[..., Any],
    examples: list[TrainingExample],
    config: TrainingArguments,
    step: int,
    pad_id: int,
    micro: int,
    device: torch.device,
    parameters: list[Tensor],
    fsdp: bool,
) -> tuple[float, int]:
    """Return (token-mean loss, examples) of one step's forward and backward passes, with the
    gradients summed over processes and clipped (the optimizer step is the caller's)."""
    rank, world = rank_and_world()
    order = example_order(len(examples), config.seed, step * config.batch_size, config.batch_size)
    batch = [examples[i] for i in order]
    n_tokens = sum(labelled_tokens(e) for e in batch)
    if n_tokens == 0:
        raise SptInterpError(f"step {step}: no labelled tokens in the batch")
    share = batch[rank::world]
    loss_sum = torch.zeros((), device=device)
    for start in range(0, len(share), micro):
        ids, mask, labels = collate(share[start : start + micro], pad_id)
        loss = token_loss_sum(forward, ids.to(device), mask.to(device), labels.to(device))
        # FSDP averages gradients over ranks: scaled, the average is the sum.
        (loss / n_tokens * (world if fsdp else 1)).backward()
        loss_sum += loss.detach()
    if fsdp:
        torch.distributed.all_reduce(loss_sum)
    elif world > 1:
        _all_reduce_gradients(parameters, loss_sum)
    step_loss = float(loss_sum) / n_tokens
    if not math.isfinite(step_loss):
        raise SptInterpError(
            f"the loss became {step_loss} at step {step + 1} (lr {config.lr}); "
            "stopped, nothing written: lower --lr or check the data"
        )
    if config.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
    return step_loss, len(batch)


def autocast_forward(
    forward: Callable[..., Any], device_type: str, dtype: torch.dtype
) -> Callable[..., Any]:
    """Return ``forward`` run under ``torch.autocast`` (the backward follows its casts)."""

    def cast(**kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=dtype):
            return forward(**kwargs)

    return cast


def make_optimizer(parameters: list[Tensor], config: TrainingArguments) -> torch.optim.Optimizer:
    """Return the run's optimizer over ``parameters``: AdamW (default) or plain SGD."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


def _all_reduce_gradients(parameters: list[Tensor], loss_sum: Tensor) -> None:
    """Sum every gradient and the loss over processes (one flat buffer: one collective)."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss_sum.reshape(1)])
    dist.all_reduce(flat)
    offset = 0
    for parameter, grad in zip(parameters, grads, strict=True):
        n = grad.numel()
        parameter.grad = flat[offset : offset + n].view_as(grad).clone()
        offset += n
    loss_sum.copy_(flat[-1])


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Return the bytes held by the optimizer's per-parameter state tensors."""
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, Tensor) and value.dim() > 0
    )
