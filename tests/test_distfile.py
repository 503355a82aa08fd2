"""The distribution file round-trips bit-exactly and refuses what it cannot use, naming the file."""

from __future__ import annotations

import pytest
import torch

from dreamdist.core.distfile import load_distribution
from dreamdist.core.distribution import PromptDistribution
from dreamdist.core.encoder import SoftPromptEncoder
from dreamdist.utils.errors import DistributionFileError, FingerprintMismatchError


def test_round_trip_is_bit_exact(tiny_distribution):
    a = load_distribution(tiny_distribution)
    from dreamdist.core.distfile import save_distribution

    copy = save_distribution(tiny_distribution.with_name("copy.safetensors"), a)
    b = load_distribution(copy)
    assert torch.equal(a.ctx, b.ctx)
    assert a.metadata() == b.metadata()
    assert (b.num_prompts, b.num_tokens) == (4, 2)


def test_mismatched_text_encoder_is_refused_naming_both(tiny_distribution, other_model_dir):
    other = SoftPromptEncoder.from_pretrained(other_model_dir)
    with pytest.raises(FingerprintMismatchError) as err:
        PromptDistribution.from_files([tiny_distribution], other, encoder_name=str(other_model_dir))
    msg = str(err.value)
    assert str(tiny_distribution) in msg and "tiny-eps" in msg and "tiny-other" in msg


def test_half_precision_copy_of_the_same_encoder_is_accepted(tiny_distribution, tiny_model_dir):
    half = SoftPromptEncoder.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    PromptDistribution.from_files([tiny_distribution], half)  # no error


def test_truncated_file_is_refused(tiny_distribution, tmp_path):
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(tiny_distribution.read_bytes()[:-50])
    with pytest.raises(DistributionFileError, match="truncated.safetensors"):
        load_distribution(bad)


def test_foreign_and_missing_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "lora.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(DistributionFileError, match="lora.safetensors: not a dreamdist distribution"):
        load_distribution(foreign)
    with pytest.raises(DistributionFileError, match="nothere.safetensors: no such"):
        load_distribution(tmp_path / "nothere.safetensors")
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(DistributionFileError, match="notes.safetensors"):
        load_distribution(text)


def test_newer_format_version_is_refused(tiny_distribution, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tiny_distribution), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["format_version"] = "99"
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata=meta)
    with pytest.raises(DistributionFileError, match="newer.safetensors: format version 99 is newer"):
        load_distribution(newer)
