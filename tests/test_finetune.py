"""Stage 2 (`dreamdist finetune`): the UNet, and only the UNet, is fine-tuned on the references while
the distribution stays frozen; the output is a pipeline folder every consumer loads."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dreamdist.core.distfile import file_sha256
from dreamdist.finetune import INFO_NAME, FinetuneConfig, finetune, read_info
from dreamdist.utils.errors import InputError

HAS_PEFT = importlib.util.find_spec("peft") is not None
UNET = Path("unet") / "diffusion_pytorch_model.safetensors"


def _quick(**kw) -> FinetuneConfig:
    base = dict(steps=3, samples=2, batch_size=2, lr=1e-3, checkpoint_every=0)
    base.update(kw)
    return FinetuneConfig(**base)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """Reference images and a stage-1 distribution trained on them (tiny model)."""
    from dreamdist.toy.shapes import random_spec, save_reference_set
    from dreamdist.train import TrainConfig, train_distribution

    root = tmp_path_factory.mktemp("finetune")
    rng = np.random.default_rng(0)
    refs = root / "refs"
    save_reference_set(refs, [random_spec(rng) for _ in range(3)], seed=0)
    dist = root / "dist.safetensors"
    train_distribution(
        refs,
        str(tiny_model_dir),
        dist,
        TrainConfig(num_prompts=3, num_tokens=2, samples=2, steps=2, batch_size=2),
        device="cpu",
        progress=False,
        checkpoint=False,
        log_csv=False,
    )
    return {"refs": Path(refs), "dist": dist, "model": Path(tiny_model_dir)}


def _run(world, out, config=None, **kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("progress", False)
    return finetune(world["dist"], world["refs"], out, config or _quick(), model=str(world["model"]), **kw)


def test_full_finetune_changes_only_the_unet_and_keeps_the_distribution(world, tmp_path):
    before = file_sha256(world["dist"])
    result = _run(world, tmp_path / "ft")
    out = result.out
    assert result.finished and out == tmp_path / "ft"
    assert file_sha256(world["dist"]) == before  # the distribution is only read
    base, tuned = load_file(world["model"] / UNET), load_file(out / UNET)
    assert base.keys() == tuned.keys()
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    for part in ("text_encoder", "vae", "tokenizer", "scheduler"):  # linked, not copied
        assert (out / part).is_symlink() and (out / part).resolve() == (world["model"] / part).resolve()
    info = read_info(out)
    assert info["distribution_sha256"] == before and info["settings"]["method"] == "full"
    assert (out / "model_index.json").is_file() and (out / "README.md").is_file()


def test_output_loads_in_diffusers_and_passes_the_fingerprint_check(world, tmp_path):
    from diffusers import StableDiffusionPipeline

    from dreamdist.sampling import Sampler

    out = _run(world, tmp_path / "ft").out
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None, requires_safety_checker=False)
    tuned = load_file(out / UNET)
    assert all(torch.equal(p, tuned[k]) for k, p in pipe.unet.state_dict().items())
    sampler = Sampler.load(out, device="cpu")
    sampler.distribution([world["dist"]])  # FingerprintMismatchError if the text encoder differed


def test_cli_finetune_then_sample_with_the_folder(world, tmp_path, capsys):
    from dreamdist.cli import main

    out = tmp_path / "cli-ft"
    assert (
        main(
            [
                "finetune",
                str(world["dist"]),
                str(world["refs"]),
                "--out",
                str(out),
                "--model",
                str(world["model"]),
                "--steps",
                "2",
                "--samples",
                "2",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (out / INFO_NAME).is_file()
    samples = tmp_path / "samples"
    assert (
        main(
            [
                "sample",
                str(world["dist"]),
                "--model",
                str(out),
                "--n",
                "2",
                "--steps",
                "2",
                "--device",
                "cpu",
                "--out",
                str(samples),
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(list(samples.glob("*.png"))) >= 2
    assert (
        main(
            [
                "finetune",
                str(world["dist"]),
                str(world["refs"]),
                "--out",
                str(out),
                "--model",
                str(world["model"]),
                "--steps",
                "2",
            ]
        )
        == 2
    )  # exists: refused without --force
    assert "exists" in capsys.readouterr().err


def test_resume_is_bit_exact_on_cpu(world, tmp_path):
    config = _quick(steps=4, checkpoint_every=2)
    whole = _run(world, tmp_path / "whole", config).out
    part = _run(world, tmp_path / "part", config, max_steps_this_run=2)
    assert not part.finished and part.out is None and not (tmp_path / "part").exists()
    resumed = _run(world, tmp_path / "part", config, resume=True)
    assert resumed.resumed_from == 2 and resumed.finished
    a, b = load_file(whole / UNET), load_file(resumed.out / UNET)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "part.log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    with pytest.raises(InputError, match="different settings"):
        _run(world, tmp_path / "part2", _quick(steps=4, lr=2e-3), resume=True, checkpoint=tmp_path / "part.ckpt")


def test_a_crash_while_writing_leaves_no_folder(world, tmp_path, monkeypatch):
    import dreamdist.finetune.output as output

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(output, "save_file", broken, raising=False)
    monkeypatch.setattr("safetensors.torch.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        _run(world, tmp_path / "ft")
    assert not (tmp_path / "ft").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_refuses_another_text_encoder(world, tmp_path, other_model_dir):
    from dreamdist.utils.errors import FingerprintMismatchError

    with pytest.raises(FingerprintMismatchError):
        finetune(
            world["dist"],
            world["refs"],
            tmp_path / "ft",
            _quick(),
            model=str(other_model_dir),
            device="cpu",
            progress=False,
        )
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not HAS_PEFT, reason="peft not installed (pip install 'dreamdist[lora]')")
def test_lora_trains_adapters_and_saves_a_fused_unet(world, tmp_path):
    result = _run(world, tmp_path / "lora", _quick(method="lora", lr=1e-2))
    out = result.out
    base, tuned = load_file(world["model"] / UNET), load_file(out / UNET)
    assert base.keys() == tuned.keys()  # fused: plain diffusers names, no peft needed to load it
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(any(t in k for t in ("to_q", "to_k", "to_v", "to_out")) for k in changed)
    assert (out / "lora" / "adapter_model.safetensors").is_file()


def test_lora_without_peft_is_one_line(world, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("no peft")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(InputError, match=r"dreamdist\[lora\]"):
        _run(world, tmp_path / "lora", _quick(method="lora"))


def test_prior_preservation_draws_class_images_once(world, tmp_path):
    config = _quick(class_prompt="a red square", class_images=3, class_steps=2)
    class_dir = tmp_path / "class"
    first = _run(world, tmp_path / "a", config, class_dir=class_dir)
    assert first.class_images_made == 3 and len(list(class_dir.glob("*.png"))) == 3
    assert all(p > 0 for p in first.prior_losses)
    stamps = {p.name: p.stat().st_mtime_ns for p in class_dir.glob("*.png")}
    second = _run(world, tmp_path / "b", config, class_dir=class_dir)
    assert second.class_images_made == 0
    assert stamps == {p.name: p.stat().st_mtime_ns for p in class_dir.glob("*.png")}
    with pytest.raises(InputError, match="class images made otherwise"):
        _run(
            world,
            tmp_path / "c",
            _quick(class_prompt="a blue circle", class_images=3, class_steps=2),
            class_dir=class_dir,
        )


def test_bad_settings_name_the_flag(world, tmp_path, capsys):
    from dreamdist.cli import main

    assert main(["finetune", str(world["dist"]), str(world["refs"]), "--out", str(tmp_path / "x"), "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_a_mixture_conditions_each_image_on_its_own_component(world, tmp_path):
    from dreamdist.core.distfile import load_distribution
    from dreamdist.finetune.trainer import FinetuneTrainer
    from dreamdist.train import TrainConfig, train_distribution

    mixture = tmp_path / "mixture.safetensors"
    train_distribution(
        world["refs"],
        str(world["model"]),
        mixture,
        TrainConfig(num_prompts=3, num_tokens=2, samples=1, steps=2, batch_size=2, components=2),
        device="cpu",
        progress=False,
        checkpoint=False,
        log_csv=False,
    )
    owner = {n: c for c, comp in enumerate(load_distribution(mixture).components) for n in comp.images}
    trainer = FinetuneTrainer(
        mixture,
        world["refs"],
        tmp_path / "ft",
        _quick(gamma=0.0),
        model=str(world["model"]),
        device="cpu",
        progress=False,
    )
    assert trainer.image_component.tolist() == [owner[p.name] for p in trainer.image_paths]
    draws = trainer.draw()
    cond = trainer.conditioning(draws)  # gamma 0: each image's component mean
    for i, row in zip(draws["index"].tolist(), cond):
        c = owner[trainer.image_paths[i % len(trainer.image_paths)].name]
        assert torch.equal(row[0], trainer.gaussian.mu[c]) and not torch.equal(row[0], trainer.gaussian.mu[1 - c])
    assert trainer.run().out.is_dir()
    other = tmp_path / "other"
    other.mkdir()
    for name, src in zip(("new.png", "new2.png"), sorted(world["refs"].glob("*.png"))):
        (other / name).write_bytes(src.read_bytes())
    with pytest.raises(InputError, match="new.png, new2.png: in none of the 2 components"):
        FinetuneTrainer(mixture, other, tmp_path / "x", _quick(), model=str(world["model"]), device="cpu")
