"""Write tuning outputs: a full HF folder, or only the changed slices; merge; verify.

``--save full`` rewrites the base's own safetensors files tensor by tensor (same shards, same
names, same dtypes), so every tensor outside the mask keeps the base's exact bytes, and copies
the tokenizer, config and protocol files. ``--save delta`` writes the slices' changes
(float32) and the mask; ``merge`` applies them with the same rule, giving the same bits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.fields import read_json, typed
from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask, MaskSlice
from spt_interp.model.architecture import COMPONENTS
from spt_interp.model.folder import weight_files, weights_hash
from spt_interp.tuning.deltas import merge_slice

RECORD_FILE = "tuning.json"
DELTA_FILE = "delta.safetensors"
MASK_FILE = "head-mask.json"
RECORD_FORMAT = "spt-interp/tuning"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def parameter_for_key(key: str, names: set[str]) -> str | None:
    """Return the model name a file key stores ("h.0..." is "transformer.h.0..." in GPT-2)."""
    if key in names:
        return key
    matches = [name for name in names if name.endswith("." + key)]
    return matches[0] if len(matches) == 1 else None


def read_weights(folder: Path) -> dict[str, dict[str, Tensor]]:
    """Return {file name: {key: tensor}} of the folder's safetensors files."""
    return {file.name: load_file(file) for file in weight_files(folder)}


def merged_weights(
    base_folder: Path,
    *,
    slices: list[tuple[MaskSlice, Tensor]] | None = None,
    trained: dict[str, Tensor] | None = None,
    origin: Path | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Return the base's weight files with slice changes added, or with trained tensors put in.

    Every tensor not named by a change is the base file's tensor itself (same bytes).
    ``origin`` is the file the slices were read from (a delta's record): a slice that does
    not fit the base is named by it.
    """
    files = read_weights(base_folder)
    keys = {key: file for file, tensors in files.items() for key in tensors}
    if slices is not None:
        names = {piece.parameter for piece, _ in slices}
        key_of = {}
        for key in keys:
            name = parameter_for_key(key, names)
            if name is not None:
                key_of[name] = key
        where = f"{origin}: " if origin is not None else ""
        for piece, change in slices:
            if piece.parameter not in key_of:
                raise SptInterpError(
                    f"{origin}: no tensor {piece.parameter!r} in the weights of {base_folder}"
                    if origin is not None
                    else f"{base_folder}: no tensor {piece.parameter} in its weights"
                )
            key = key_of[piece.parameter]
            tensor = files[keys[key]][key]
            fits = 0 <= piece.dim < tensor.dim() and piece.stop <= tensor.shape[piece.dim]
            if not fits or list(piece.index(tensor).shape) != list(change.shape):
                # A slice read from a file can name any range; narrow() would raise past the
                # tensor's end, and a change of another shape fail in the addition.
                raise SptInterpError(
                    f"{where}a change of shape {list(change.shape)} at [{piece.start}:"
                    f"{piece.stop}] along dim {piece.dim} does not fit {piece.parameter} of "
                    f"shape {list(tensor.shape)} in {base_folder}"
                )
            target = piece.index(tensor)
            target.copy_(merge_slice(target, change))
    if trained is not None:
        names = set(trained)
        for key, file in keys.items():
            name = parameter_for_key(key, names)
            if name is not None:
                base = files[file][key]
                files[file][key] = trained[name].detach().to("cpu", base.dtype).contiguous()
    return files


def write_full(base_folder: Path, staging: Path, files: dict[str, dict[str, Tensor]]) -> list[Path]:
    """Write an HF folder: the weight files given, and every other file of the base copied."""
    staging.mkdir(parents=True, exist_ok=True)
    for item in base_folder.iterdir():
        if (
            item.is_file()
            and not item.name.endswith(WEIGHT_SUFFIXES)
            and item.name not in (RECORD_FILE, MASK_FILE)
        ):
            shutil.copy2(item, staging / item.name)
    written = []
    for name, tensors in files.items():
        with safe_open(base_folder / name, framework="pt") as handle:
            metadata = handle.metadata() or {"format": "pt"}
        save_file(tensors, staging / name, metadata=metadata)
        written.append(staging / name)
    return written


def write_delta(staging: Path, slices: list[tuple[MaskSlice, Tensor]]) -> list[dict[str, Any]]:
    """Write the slice changes to delta.safetensors; return their manifest entries."""
    staging.mkdir(parents=True, exist_ok=True)
    tensors, manifest = {}, []
    for index, (piece, change) in enumerate(slices):
        key = f"delta.{index}"
        tensors[key] = change.float().contiguous()
        manifest.append(
            {
                "key": key,
                "parameter": piece.parameter,
                "dim": piece.dim,
                "start": piece.start,
                "stop": piece.stop,
                "layer": piece.layer,
                "component": piece.component,
                "heads": list(piece.heads),
            }
        )
    save_file(tensors, staging / DELTA_FILE, metadata={"format": "pt"})
    return manifest


def read_delta(folder: Path) -> tuple[dict[str, Any], list[tuple[MaskSlice, Tensor]]]:
    """Return (record, slice changes) of a ``--save delta`` folder; raise when it is not one.

    Every field merge uses is checked here, naming the file: a misformatted record or a
    corrupted delta.safetensors used to reach merge as an AttributeError, a SafetensorError
    or a failed ``narrow``.
    """
    record_file, delta_file = folder / RECORD_FILE, folder / DELTA_FILE
    if not record_file.is_file() or not delta_file.is_file():
        raise SptInterpError(f"{folder} is not a tuning delta (needs {RECORD_FILE}, {DELTA_FILE})")
    record = read_json(record_file)
    if (
        not isinstance(record, dict)
        or record.get("format") != RECORD_FORMAT
        or record.get("kind") != "delta"
    ):
        raise SptInterpError(f"{record_file} is not a delta record")
    base = record.get("base")
    if not isinstance(base, dict) or not all(
        isinstance(base.get(key), str) for key in ("fingerprint", "weights_hash")
    ):
        raise SptInterpError(
            f"{record_file}: base must be an object with string fingerprint and weights_hash"
        )
    entries = record.get("slices")
    if not isinstance(entries, list) or not entries:
        raise SptInterpError(f"{record_file}: slices must be a non-empty list")
    try:
        tensors = load_file(delta_file)
    except SafetensorError as err:
        raise SptInterpError(f"{delta_file} is not a readable safetensors file: {err}") from None
    slices = [
        _read_slice(entry, f"{record_file}: slices[{i}]", tensors)
        for i, entry in enumerate(entries)
    ]
    return record, slices


def _read_slice(entry: Any, where: str, tensors: dict[str, Tensor]) -> tuple[MaskSlice, Tensor]:
    """Return one manifest entry's slice and change, checked against its delta tensor."""
    if not isinstance(entry, dict):
        raise SptInterpError(f"{where} must be an object")
    for name, kind in (
        ("key", str),
        ("parameter", str),
        ("component", str),
        ("dim", int),
        ("start", int),
        ("stop", int),
        ("layer", int),
    ):
        typed(entry.get(name), kind, f"{where}.{name}")
    heads = entry.get("heads")
    if (
        not isinstance(heads, list)
        or not heads
        or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in heads)
    ):
        raise SptInterpError(f"{where}.heads must be a non-empty list of head numbers")
    if entry["component"] not in COMPONENTS or entry["layer"] < 0:
        raise SptInterpError(
            f"{where}: no component {entry['component']!r} of layer {entry['layer']}"
        )
    key, dim, start, stop = entry["key"], entry["dim"], entry["start"], entry["stop"]
    if key not in tensors:
        raise SptInterpError(f"{where}.key {key!r} is not a tensor of {DELTA_FILE}")
    change = tensors[key]
    # write_delta writes float32; another dtype (one flipped byte turns F32 into I32 or U32)
    # would be reinterpreted, not refused.
    if change.dtype != torch.float32:
        raise SptInterpError(f"{where}: delta tensor {key} is {change.dtype}, not float32")
    if not (0 <= dim < change.dim() and 0 <= start < stop and change.shape[dim] == stop - start):
        raise SptInterpError(
            f"{where}: [{start}:{stop}] along dim {dim} does not fit its delta tensor {key} "
            f"of shape {list(change.shape)}"
        )
    piece = MaskSlice(
        entry["parameter"], dim, start, stop, entry["layer"], entry["component"], tuple(heads)
    )
    return piece, change


def verify_outside_mask(
    base: dict[str, dict[str, Tensor]],
    tuned: dict[str, dict[str, Tensor]],
    slices: list[MaskSlice],
) -> dict[str, Any]:
    """Return counts after checking every element outside the slices is bit-identical.

    Raises SptInterpError naming the first tensor that changed outside the mask.
    """
    if set(base) != set(tuned):
        raise SptInterpError(f"weight files differ: {sorted(base)} vs {sorted(tuned)}")
    by_parameter: dict[str, list[MaskSlice]] = {}
    for piece in slices:
        by_parameter.setdefault(piece.parameter, []).append(piece)
    compared = changed_inside = 0
    for file, tensors in base.items():
        if set(tensors) != set(tuned[file]):
            raise SptInterpError(f"{file}: the tuned weights hold other tensor names")
        for key, before in tensors.items():
            after = tuned[file][key]
            if after.dtype != before.dtype or after.shape != before.shape:
                raise SptInterpError(f"{key}: dtype or shape changed")
            name = parameter_for_key(key, set(by_parameter))
            outside = torch.ones(before.shape, dtype=torch.bool)
            for piece in by_parameter.get(name, []) if name else []:
                piece.index(outside).fill_(False)
            # Byte views: bit identity, NaNs and signed zeros included.
            same = _bits(before) == _bits(after)
            if not bool(same[outside].all()):
                raise SptInterpError(f"{key} changed outside the mask's slices")
            changed_inside += int((~same[~outside]).sum())
            compared += 1
    return {
        "tensors_compared": compared,
        "outside_mask_identical": True,
        "changed_elements_inside_mask": changed_inside,
    }


def _bits(tensor: Tensor) -> Tensor:
    integer = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return tensor.contiguous().view(integer[tensor.element_size()])


def write_record(folder: Path, record: dict[str, Any]) -> Path:
    return write_text_atomic(folder / RECORD_FILE, json.dumps(record, indent=2) + "\n")


def write_mask(folder: Path, mask: HeadMask | None) -> None:
    if mask is not None:
        mask.save(folder / MASK_FILE)


def base_identity(folder: Path, fingerprint: str) -> dict[str, str]:
    """Return what identifies the base: its folder, fingerprint and weight files' hash."""
    return {"path": str(folder), "fingerprint": fingerprint, "weights_hash": weights_hash(folder)}
