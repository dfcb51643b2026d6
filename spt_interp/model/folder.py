"""A local Hugging Face model folder: what it must hold, its architecture, its weight files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from spt_interp.common.families import family_of
from spt_interp.common.fields import read_json, typed
from spt_interp.errors import SptInterpError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def check_model_folder(path: str | Path) -> Path:
    """Return the folder as a Path, or raise SptInterpError naming what it lacks."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise SptInterpError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise SptInterpError(f"model path {folder} is a file, not a Hugging Face model folder")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise SptInterpError(f"{folder} has no config.json: not a Hugging Face model folder")
    config = read_json(config_file)
    if not isinstance(config, dict) or "model_type" not in config:
        raise SptInterpError(f"{config_file} has no model_type: not a Hugging Face model config")
    _check_config_types(config_file, config)
    if not any(
        p.name.endswith(WEIGHT_SUFFIXES) and not p.name.startswith("training_args")
        for p in folder.iterdir()
    ):
        raise SptInterpError(f"{folder} has no weights (model.safetensors or model-*.safetensors)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise SptInterpError(
            f"{folder} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json)"
        )
    return folder


# Config fields that give the model's shape: a positive integer where present (None lets
# transformers derive one). transformers' own checks raise anything from TypeError to
# ZeroDivisionError on "four", [4], 0 or -4, and let a negative layer count through.
SHAPE_FIELDS = (
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_size",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "n_layer",
    "n_head",
    "n_embd",
    "n_inner",
    "n_positions",
    "n_ctx",
)


def _check_config_types(config_file: Path, config: dict) -> None:
    """Raise SptInterpError naming the field when a config field has the wrong type."""
    if not isinstance(config["model_type"], str) or not config["model_type"]:
        raise SptInterpError(f"{config_file}: model_type must be a non-empty string")
    architectures = config.get("architectures")
    if architectures is not None and (
        not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures)
    ):
        raise SptInterpError(f"{config_file}: architectures must be a list of class names")
    for name in SHAPE_FIELDS:
        value = config.get(name)
        if value is not None and typed(value, int, f"{config_file}: {name}") < 1:
            raise SptInterpError(f"{config_file}: {name} must be positive, got {value}")


def supported_architectures() -> set[str]:
    """Return the HF architecture names TransformerLens 4 can wrap."""
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    return set(SUPPORTED_ARCHITECTURES)


def check_architecture(folder: Path) -> str:
    """Return the folder's architecture name, or raise if TransformerLens cannot wrap it."""
    config = json.loads((folder / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not architectures:
        raise SptInterpError(
            f"{folder / 'config.json'} names no architectures (e.g. LlamaForCausalLM)"
        )
    architecture = architectures[0]
    try:
        # The table first: it names what spt-interp can map to heads, and where to add more.
        family_of(architecture, config.get("model_type"))
    except SptInterpError as err:
        raise SptInterpError(f"{folder}: {err}") from None
    if architecture not in supported_architectures():
        raise SptInterpError(
            f"{folder}: architecture {architecture} is not one this TransformerLens can wrap"
        )
    return architecture


def weight_files(folder: Path) -> list[Path]:
    """Return the folder's safetensors weight files (the shards, or model.safetensors)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise SptInterpError(
            f"{folder} has no .safetensors weights; the trainer reads and writes safetensors only"
        )
    return files


def weights_hash(folder: Path) -> str:
    """Return ``sha256:<hex>`` over the folder's safetensors files (names and bytes)."""
    digest = hashlib.sha256()
    for file in weight_files(folder):
        digest.update(file.name.encode())
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 24), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def check_loading_info(folder: Path, info: dict[str, Any]) -> None:
    """Raise when a weight is missing from the files or has another shape than the config's.

    transformers fills both with fresh random values and only logs a report, so a weights
    file with a tensor renamed or dropped used to load as a partly random model.
    """
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        key, in_file, for_config = mismatched[0]
        raise SptInterpError(
            f"{folder}: the weights do not fit config.json: {key} is {list(in_file)} in the "
            f"weights, {list(for_config)} for the config"
        )
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise SptInterpError(
            f"{folder}: the weights lack {len(missing)} tensor(s) the config needs: "
            f"{', '.join(missing[:3])}"
        )
