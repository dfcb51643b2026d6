"""Shared fixtures: tiny random models saved as local HF folders (no network)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch

from spt_interp.model.tiny import (
    FAMILY_ARCHITECTURES,
    TINY_ARCHITECTURES,
    build_bpe_tokenizer,
    save_tiny_model,
)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return build_bpe_tokenizer()


# A minimal chat template: BOS, "<|role|>content\n" per message, "<|assistant|>" to generate.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture
def chat_tokenizer(bpe_tokenizer):
    """The tiny BPE with CHAT_TEMPLATE (a copy: the session's tokenizer stays template-less)."""
    import copy

    tokenizer = copy.deepcopy(bpe_tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, bpe_tokenizer):
    """One folder per architecture: 2 layers, 4 heads (2 key/value heads where GQA applies)."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        architecture: save_tiny_model(architecture, root / architecture, tokenizer=bpe_tokenizer)
        for architecture in TINY_ARCHITECTURES
    }


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory, bpe_tokenizer):
    """One folder per family of the architecture table (2 layers, 4 heads); tests only read it."""
    root = tmp_path_factory.mktemp("families")
    return {
        name: save_tiny_model(name, root / name, tokenizer=bpe_tokenizer, n_ctx=256)
        for name in FAMILY_ARCHITECTURES
    }


@pytest.fixture(params=TINY_ARCHITECTURES)
def tiny_model_dir(request, tiny_model_dirs):
    return tiny_model_dirs[request.param]


@pytest.fixture(scope="session")
def organism_dir(tmp_path_factory):
    """The built-in organism written once (DIR/model, DIR/data); tests only read it."""
    from spt_interp.organism import write_organism

    out = tmp_path_factory.mktemp("organism") / "o"
    write_organism(out, progress=False)
    return out


@pytest.fixture(scope="session")
def sample_data_file(tmp_path_factory):
    """The sample dialogues' first five records (its sixth is malformed on purpose)."""
    from pathlib import Path

    sample = Path(__file__).parent / "data" / "are_you_sure_sample.jsonl"
    path = tmp_path_factory.mktemp("data") / "sample.jsonl"
    path.write_text("\n".join(sample.read_text().splitlines()[:5]) + "\n")
    return path


@pytest.fixture(scope="session")
def targets_llama_dir(tiny_model_dirs, tmp_path_factory):
    """The tiny Llama with decision targets whose first tokens the tiny BPE keeps apart."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("model") / "llama"
    shutil.copytree(tiny_model_dirs["llama"], folder)
    protocol = {"sycophantic_targets": ["I"], "anti_sycophantic_targets": ["The"]}
    (folder / "spt-interp.json").write_text(json.dumps(protocol))
    return folder
