"""`dreamdist train --components C`: the mixture's assignments (k-means start, EM on the denoising
loss), its file, resume, and the one-component records that stay those of a dreamdist without mixtures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import stop_at
from PIL import Image, ImageDraw

from dreamdist.cli import main
from dreamdist.core.distfile import load_distribution
from dreamdist.train import TrainConfig, TrainingInterrupted, train_distribution
from dreamdist.train.checkpoint import Checkpoint
from dreamdist.train.components import Assignment, keep_every_component, kmeans
from dreamdist.train.config import METHOD
from dreamdist.train.trainer import Trainer
from dreamdist.utils.errors import InputError

SMALL = TrainConfig(
    num_prompts=2,
    num_tokens=2,
    samples=2,
    batch_size=2,
    steps=8,
    lr=3e-2,
    checkpoint_every=0,
    components=2,
    assign_every=4,
)


@pytest.fixture(scope="module")
def two_modes(tmp_path_factory) -> Path:
    """Three red squares on white and three blue discs on black: two modes nothing could confuse."""
    folder = tmp_path_factory.mktemp("two_modes")
    for i in range(3):
        red = Image.new("RGB", (40, 40), (255, 255, 255))
        ImageDraw.Draw(red).rectangle((6 + i, 6, 30 + i, 30), fill=(230, 20, 20))
        red.save(folder / f"red{i}.png")
        blue = Image.new("RGB", (40, 40), (0, 0, 0))
        ImageDraw.Draw(blue).ellipse((6, 6 + i, 32, 32 + i), fill=(20, 40, 240))
        blue.save(folder / f"blue{i}.png")
    return folder


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    from dreamdist.core.runtime import load_pipeline

    return load_pipeline(tiny_model_dir, torch.device("cpu"))


def test_kmeans_and_no_empty_component():
    g = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(5, 3, generator=g), torch.randn(4, 3, generator=g) + 20])
    labels = kmeans(points, 2, torch.Generator().manual_seed(1))
    assert len(set(labels[:5].tolist())) == 1 and len(set(labels[5:].tolist())) == 1 and labels[0] != labels[5]
    # component 2 is empty: it takes the image whose cost rises least by moving (image 1: 0.5 -> 0.6)
    cost = torch.tensor([[0.1, 0.9, 0.9], [0.5, 0.9, 0.6], [0.9, 0.2, 0.95], [0.3, 0.9, 0.9]])
    assert keep_every_component(cost, torch.tensor([0, 0, 1, 0])).tolist() == [0, 2, 1, 0]
    # a component's only image is never taken from it
    assert keep_every_component(cost, torch.tensor([0, 1, 1, 1])).tolist()[0] == 0
    assert Assignment(torch.tensor([0, 0, 1, 0]), 3).weights == [0.75, 0.25, 0.0]
    assert Assignment(torch.tensor([0, 0, 1, 0]), 3).sizes() == "3 / 1 / 0"


def test_mixture_trains_one_gaussian_per_component_and_writes_version_2(pipe, two_modes, tmp_path):
    config = replace(SMALL, assign_every=100)  # no E step: the k-means start, kept
    result = train_distribution(two_modes, pipe, tmp_path / "m.safetensors", config, progress=False)
    dist = load_distribution(result.out)
    assert dist.format_version == 2 and dist.num_components == 2 and dist.num_prompts == 2
    assert dist.ctx.shape[0] == 4
    groups = sorted(sorted(c.images) for c in dist.components)
    assert groups == [["blue0.png", "blue1.png", "blue2.png"], ["red0.png", "red1.png", "red2.png"]]
    assert [c.weight for c in dist.components] == [0.5, 0.5]
    assert dist.training["components"] == 2 and dist.training["assign_every"] == 100


def test_e_step_moves_each_image_to_its_lowest_cost(pipe, two_modes, tmp_path, monkeypatch):
    trainer = Trainer(
        two_modes, pipe, tmp_path / "e.safetensors", SMALL, progress=False, checkpoint=False, log_csv=False
    )
    costs = trainer.denoising_costs()
    assert costs.shape == (6, 2) and torch.isfinite(costs).all() and (costs > 0).all()
    assert torch.equal(costs, trainer.denoising_costs())  # the step's own draws: the same when asked again
    with torch.no_grad():  # two identical components score identically: the draws are shared
        trainer.prompts.ctx[2:] = trainer.prompts.ctx[:2]
    same = trainer.denoising_costs()
    assert torch.equal(same[:, 0], same[:, 1])
    rigged = torch.tensor([[0.1, 0.2]] * 5 + [[0.3, 0.2]])
    monkeypatch.setattr(trainer, "denoising_costs", lambda: rigged)
    trainer._reassign()
    assert trainer.assignment.owners.tolist() == [0, 0, 0, 0, 0, 1]
    monkeypatch.setattr(trainer, "denoising_costs", lambda: torch.tensor([[0.1, 0.2]] * 6))
    trainer._reassign()  # all prefer component 0: component 1 keeps the image that loses least
    assert sorted(trainer.assignment.owners.tolist()) == [0, 0, 0, 0, 0, 1]


def test_mixture_resume_is_bit_identical_across_e_steps(pipe, two_modes, tmp_path):
    config = replace(SMALL, steps=10, assign_every=3, checkpoint_every=5)
    straight = train_distribution(two_modes, pipe, tmp_path / "a" / "d.safetensors", config, progress=False)

    out = tmp_path / "b" / "d.safetensors"
    with pytest.raises(TrainingInterrupted) as stopped:
        train_distribution(two_modes, pipe, out, config, progress=False, callback=stop_at(5))
    assert Checkpoint.load(stopped.value.checkpoint).assignment.shape == (6,)
    resumed = train_distribution(two_modes, pipe, out, config, progress=False, resume=True)
    a, b = load_distribution(straight.out), load_distribution(out)
    assert torch.equal(a.ctx, b.ctx) and a.components == b.components
    assert resumed.diffusion_losses == straight.diffusion_losses[5:]


def test_more_components_than_images_is_refused(pipe, two_modes, tmp_path):
    with pytest.raises(InputError, match="--components 7 needs at least 7 reference images; .* has 6"):
        train_distribution(two_modes, pipe, tmp_path / "x.safetensors", replace(SMALL, components=7), progress=False)
    assert not (tmp_path / "x.safetensors").exists()


def test_one_component_records_are_those_without_mixtures(pipe, two_modes, tmp_path):
    config = replace(SMALL, components=1, steps=4, checkpoint_every=2)
    assert "components" not in config.values(METHOD) and "assign_every" not in config.values(METHOD)
    assert "components" in SMALL.values(METHOD)
    result = train_distribution(two_modes, pipe, tmp_path / "one.safetensors", config, progress=False)
    dist = load_distribution(result.out)
    assert dist.format_version == 1 and dist.num_components == 1
    assert "components" not in dist.training and "assign_every" not in dist.training
    saved = Checkpoint.load(result.checkpoint)
    assert saved.assignment is None and "components" not in saved.settings


def test_cli_trains_inspects_and_samples_a_mixture(two_modes, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert (
        main(
            [
                "train",
                str(two_modes),
                "--model",
                str(tiny_model_dir),
                "--out",
                str(out),
                "--num-prompts",
                "2",
                "--num-tokens",
                "2",
                "--samples",
                "1",
                "--steps",
                "4",
                "--components",
                "2",
                "--assign-every",
                "2",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    said = capsys.readouterr()
    assert "(2 components x 2 prompts x 2 tokens, 6 images" in said.out
    assert "components start with 3 / 3 images (k-means on their latents)" in said.err
    assert "step 2: components hold" in said.err
    assert main(["inspect", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_components"] == 2 and report["format_version"] == 2
    names = sorted(n for c in report["components"] for n in c["images"])
    assert names == sorted(p.name for p in two_modes.iterdir())
    assert all("positions" in c and "nearest_tokens" in c for c in report["components"])
    assert main(["inspect", str(out)]) == 0
    assert "component 1: weight" in capsys.readouterr().out
    assert main(["sample", str(out), "--out", str(tmp_path / "s"), "--n", "6", "--steps", "1", "--seed", "0"]) == 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    from dreamdist.core.mixture import pick_component

    weights = [c.weight for c in load_distribution(out).components]
    assert [e["component"] for e in manifest["images"]] == [pick_component(weights, s) for s in range(6)]
