"""``tune``: tune a model in memory with any registered method; ``TunedModel`` keeps the result.

The model is tuned in place: after ``tune`` it computes with the tuned weights, and the
``TunedModel`` holds the update (the method's ``WeightUpdate``) and the run's record.
``TunedModel.save`` writes it as a full HF folder or a compact delta (atomically, as the
``tune`` command does: ``tuning.folders.tune_folder`` is this function between reading the
folders and writing the output).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spt_interp.common.distributed import rank_and_world
from spt_interp.common.outputs import check_out, staged_folder
from spt_interp.data import pad_token_id
from spt_interp.data.training import TrainingExample
from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask
from spt_interp.model import HookedModel, weight_files
from spt_interp.model.devices import DTYPES
from spt_interp.tuning.config import SAVE_KINDS, TuneConfig
from spt_interp.tuning.deltas import restore_parameters
from spt_interp.tuning.loop import TrainResult, train
from spt_interp.tuning.methods import TuningMethod, create_method, find_method
from spt_interp.tuning.resume import Checkpointer
from spt_interp.tuning.save import (
    MASK_FILE,
    RECORD_FILE,
    RECORD_FORMAT,
    base_identity,
    read_delta,
    read_weights,
    verify_outside_mask,
    write_delta,
    write_full,
    write_mask,
    write_record,
)
from spt_interp.tuning.updates import SliceChanges, WeightUpdate


def check_request(
    method: type[TuningMethod], *, mask_given: bool, save: str | None = None, fsdp: bool = False
) -> None:
    """Raise SptInterpError when the method cannot run or be saved as asked (before loading)."""
    if save is not None and save not in SAVE_KINDS:
        raise SptInterpError(f"--save {save!r} is not one of {', '.join(SAVE_KINDS)}")
    if method.uses_mask and not mask_given:
        raise SptInterpError(f"--mode {method.name} needs --mask (a head mask JSON)")
    if save == "delta" and not method.has_compact_delta:
        raise SptInterpError(
            f"--save delta keeps masked head slices only; --mode {method.name} changes every "
            "layer: use --save full"
        )
    if fsdp and not method.trains_weights:
        raise SptInterpError(f"--fsdp shards full SFT; --mode {method.name} trains a few slices")


@dataclass
class TunedModel:
    """A tuned model in memory: ``model`` computes with the tuned weights (merged in place),
    ``update`` is what the run changed (None when it stopped early), ``record`` what it did.

    ``mask`` is the mask the method trained (a random draw for random heads), ``precision``
    what the run computed in (``save`` completes it with what was written), ``seconds`` how
    long it trained (unrounded).
    """

    model: HookedModel
    update: WeightUpdate | None
    record: dict[str, Any]
    method: type[TuningMethod]
    mask: HeadMask | None = None
    precision: tuple[str, bool] = ("float32", False)
    seconds: float = 0.0

    @classmethod
    def load(cls, folder: str | Path, model: HookedModel) -> TunedModel:
        """Return ``model`` tuned by a saved delta (``save(..., save="delta")``), merged into it
        in place by the rule the tuned model itself was merged with (the same bits).

        Refuses a delta made for a model of another shape (its fingerprint).
        """
        folder = Path(folder)
        record, values = read_delta(folder)
        mode = record.get("mode")
        method = find_method(mode) if isinstance(mode, str) else None
        if method is None:
            raise SptInterpError(f"{folder / RECORD_FILE}: mode {mode!r} is no tuning method")
        if record["base"]["fingerprint"] != model.fingerprint():
            raise SptInterpError(f"{folder}: the delta was made for another model ({model.path})")
        update = SliceChanges(values)
        update.merge(model.hf_parameters)
        mask = HeadMask.load(folder / MASK_FILE) if (folder / MASK_FILE).is_file() else None
        return cls(model, update, record, method, mask)

    def save(self, out: str | Path, save: str = "full", *, force: bool = False) -> dict[str, Any]:
        """Return the written record after writing the tuned model to ``out``.

        ``save="full"``: the base folder's files (``model.path``) with the changed tensors;
        ``"delta"``: the changed slices alone, where the method has them. Written to a hidden
        sibling folder and renamed, so a failed save leaves nothing at ``out``.
        """
        check_request(self.method, mask_given=True, save=save)
        folder = self._base_folder()
        return self.write(check_out(out, force=force, reads=[folder]), save)

    def write(self, out: Path, save: str) -> dict[str, Any]:
        """Return the written record after writing to ``out`` (already checked by the caller)."""
        if self.update is None:
            raise SptInterpError(f"nothing to save: the run stopped {self.record.get('stopped')}")
        folder = self._base_folder()
        record = dict(self.record)
        verification = record.pop("verification", None)
        record.update(kind=save, precision=precision_note(self.method, *self.precision, save))
        if "weights_hash" not in record["base"]:
            record["base"] = base_identity(folder, record["base"]["fingerprint"])
        with staged_folder(out) as staging:
            tuned = self.update.tuned_files(folder, self.model.hf_parameters)
            if save == "full":
                write_full(folder, staging, tuned)
                tuned = read_weights(staging)  # verify what was written, not what was meant
            else:
                record["slices"] = write_delta(staging, self.update.compact())
            slices = self.update.slices()
            if slices is not None:
                verification = verify_outside_mask(read_weights(folder), tuned, slices)
            if verification is not None:
                record["verification"] = verification
            write_mask(staging, self.mask)
            write_record(staging, record)
        return record

    def restore(self, base: dict[str, Tensor]) -> HookedModel:
        """Return the model after putting the base's weights back from ``base`` (an untouched
        copy's parameters by HF name), bit for bit. The update is dropped: keep
        ``update.detached()`` first where it is still wanted (full SFT's refers to the model's
        own tensors)."""
        if self.update is not None:
            names = self.update.parameter_names()
            restore_parameters(self.model.hf_parameters, {name: base[name] for name in names})
        self.update = None
        return self.model

    def _base_folder(self) -> Path:
        folder = self.model.path
        if folder is None:
            raise SptInterpError("the tuned model has no base folder to write its files from")
        weight_files(folder)
        return folder


def tune(
    model: HookedModel,
    examples: list[TrainingExample],
    mask: HeadMask | None,
    config: TuneConfig,
    *,
    dtype: torch.dtype | None = None,
    checkpointer: Checkpointer | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    gradient_checkpointing: bool = False,
    fsdp: bool = False,
    progress: bool = True,
) -> TunedModel:
    """Return the tuned model after tuning ``model`` in place on ``examples`` with
    ``config``'s method (``mask``: the head mask, for the methods that train inside one).

    ``dtype`` is what the run computes in (default: the model's): a method that trains the
    weights runs its forward under autocast in it. With ``checkpointer`` the run checkpoints
    (the run's own identity, its mode, settings and trained mask, is added to the
    checkpointer's, so a checkpoint of another run is refused on ``resume``); with
    ``stop_after`` it stops after that many steps and returns unfinished (``update`` None).
    A NaN loss raises SptInterpError; the model's weights are then as the method left them
    (untouched, but for a method that trains the weights).
    """
    kind = config.method.method
    check_request(kind, mask_given=mask is not None, fsdp=fsdp)
    if kind.uses_mask:
        mask.validate(model)
    compute = dtype or model.dtype
    autocast = kind.autocast_dtype(compute)
    fingerprint = model.fingerprint()
    method = create_method(config.method, model.plain_model, mask, config.seed)
    if checkpointer is not None:
        trained = method.mask.to_dict() if method.mask is not None else None
        run = {"mode": config.mode, "hyperparameters": config.as_dict(), "mask": trained}
        checkpointer.identity = {**run, **checkpointer.identity}
    precision = (dtype_name(compute), autocast is not None)
    try:
        method.attach()  # on until finish(): the update is read off it after the run
        result = train(
            method.model,
            examples,
            config.training,
            pad_id=pad_token_id(model.tokenizer),
            method=method,
            checkpointer=checkpointer,
            resume=resume,
            stop_after=stop_after,
            progress=progress,
            autocast_dtype=autocast,
            gradient_checkpointing=gradient_checkpointing,
            fsdp=fsdp,
        )
        record = run_record(
            method,
            config,
            examples,
            result,
            mask_given=mask,
            base={"path": str(model.path), "fingerprint": fingerprint},
            precision=precision,
            gradient_checkpointing=gradient_checkpointing,
            fsdp=fsdp,
        )
        if not result.finished:
            record["stopped"] = f"after step {result.steps_done}; continue with --resume"
            record["checkpoint"] = str(checkpointer.path) if checkpointer else None
            return TunedModel(model, None, record, kind, method.mask, precision, result.seconds)
        update, verification = _finish(method)
    finally:
        method.detach()  # nothing when finished; after a failure, the method comes off
    if verification is not None:
        record["verification"] = verification
    return TunedModel(model, update, record, kind, method.mask, precision, result.seconds)


def _finish(method: TuningMethod) -> tuple[WeightUpdate, dict[str, Any] | None]:
    """Return the method's update, merged into the model, and the check that the merge left
    every weight outside the method's slices bit-identical (None: it has no slices)."""
    slices = method.slices()
    if slices is None:
        return method.finish(), None
    parameters = dict(method.model.named_parameters())
    names = list(dict.fromkeys(piece.parameter for piece in slices))
    before = {name: parameters[name].detach().clone() for name in names}
    update = method.finish()
    after = {name: parameters[name].detach() for name in names}
    return update, verify_outside_mask({"memory": before}, {"memory": after}, slices)


def run_record(
    method: TuningMethod,
    config: TuneConfig,
    examples: list[TrainingExample],
    result: TrainResult,
    *,
    mask_given: HeadMask | None,
    base: dict[str, str],
    precision: tuple[str, bool],
    gradient_checkpointing: bool,
    fsdp: bool,
) -> dict[str, Any]:
    """Return the record of a run in memory (``write`` adds what was written and where)."""
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "version": 1,
        "kind": None,
        "mode": config.mode,
        "hyperparameters": config.as_dict(),
        "mask": method.mask.to_dict() if method.mask is not None else None,
        "mask_given": mask_given.to_dict() if mask_given is not None else None,
        "data": {"examples": len(examples), "loss_on": config.loss_on},
        "base": base,
        "trainable_parameters": method.trainable_count(),
        "steps_done": result.steps_done,
        "losses": result.losses,
        "train_seconds": round(result.seconds, 3),
        "samples_per_second": round(result.samples / max(result.seconds, 1e-9), 3),
        "optimizer_state_bytes": result.optimizer_bytes,
        "processes": rank_and_world()[1],
        "precision": precision_note(type(method), *precision, None),
        "gradient_checkpointing": gradient_checkpointing,
        "fsdp": fsdp,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(method.record_fields())
    return record


def dtype_name(dtype: torch.dtype) -> str:
    """Return the ``--dtype`` name of a torch dtype ("bfloat16")."""
    names = {value: name for name, value in DTYPES.items()}
    return names.get(dtype, str(dtype).removeprefix("torch."))


def precision_note(method: type[TuningMethod], dtype: str, autocast: bool, save: str | None) -> str:
    """Return what the run computed in (and, once saved, what ``save`` wrote), in one sentence."""
    if dtype == "float32":
        return "float32 throughout"
    if autocast:
        return f"float32 weights and optimizer, forward under {dtype} autocast"
    kept = f"base frozen in {dtype}; {method.trained_noun} and optimizer state float32"
    if save is None:
        return kept
    written = (
        "float32 deltas"
        if save == "delta"
        else "the sum rounded to the weight files' dtype (lossy where the files are "
        f"{dtype}, as merged LoRA is)"
    )
    return f"{kept}; wrote {written}"
