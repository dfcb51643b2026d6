"""Shared fixtures: tiny random models saved as local HF folders (no network)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch

from spt_interp.model.tiny import TINY_ARCHITECTURES, build_bpe_tokenizer, save_tiny_model

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return build_bpe_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, bpe_tokenizer):
    """One folder per architecture: 2 layers, 4 heads (2 key/value heads where GQA applies)."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        architecture: save_tiny_model(architecture, root / architecture, tokenizer=bpe_tokenizer)
        for architecture in TINY_ARCHITECTURES
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
