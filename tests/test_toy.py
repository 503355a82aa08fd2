"""The toy world: generator + rule-based classifier, the shipped toy model, its training script and
the fidelity benchmark (on a 2-step budget)."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamdist.toy import BACKGROUNDS, COLOURS, SHAPES, ToySpec, classify, draw, make_dataset, toy_model_path


def test_dataset_is_a_pure_function_of_the_seed():
    a, specs_a = make_dataset(8, seed=3)
    b, specs_b = make_dataset(8, seed=3)
    c, _ = make_dataset(8, seed=4)
    assert specs_a == specs_b and np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1


def test_caption_words_are_in_the_tiny_vocabulary():
    from dreamdist.tiny_model import TINY_WORDS

    spec = ToySpec("triangle", "yellow", "black")
    assert spec.caption() == "a yellow triangle on a black background"
    for word in [*SHAPES, *COLOURS, *BACKGROUNDS, "a", "on", "background"]:
        assert word in TINY_WORDS


def test_classifier_is_exact_on_ground_truth():
    images, specs = make_dataset(600, seed=11)
    labels = [classify(im) for im in images]
    colour = np.mean([lab.colour == s.colour for lab, s in zip(labels, specs)])
    shape = np.mean([lab.shape == s.shape for lab, s in zip(labels, specs)])
    assert colour == 1.0 and shape >= 0.99, (colour, shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_classifier_on_every_combination_at_the_smallest_size(shape):
    for colour in COLOURS:
        for bg in BACKGROUNDS:
            label = classify(draw(ToySpec(shape, colour, bg, size=10.0, cx=9.0, cy=22.0)))
            assert (label.colour, label.shape) == (colour, shape)


def test_classifier_refuses_blank_and_blob_images():
    assert classify(np.full((32, 32, 3), 0.5, np.float32)).shape == "none"
    blob = np.full((32, 32, 3), 0.5, np.float32)
    blob[4:28, 14:18] = COLOURS["red"]  # a thin bar: neither square, circle nor triangle
    blob[14:18, 4:28] = COLOURS["red"]
    label = classify(blob)
    assert label.colour == "red" and label.shape == "unknown"
    uint8 = (draw(ToySpec("circle", "green", "white")) * 255).astype(np.uint8)
    assert str(classify(uint8)) == "green circle"


# --------------------------------------------------------------------------- the shipped toy model

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_toy_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def toy_pipe():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(toy_model_path(), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_shipped_toy_model_is_small_and_uses_the_tiny_model_classes(toy_pipe):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    files = [f for f in toy_model_path().rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 5_000_000
    assert any(f.name.endswith(".safetensors") for f in files) and not any(f.suffix == ".bin" for f in files)
    assert isinstance(toy_pipe.tokenizer, CLIPTokenizer) and isinstance(toy_pipe.text_encoder, CLIPTextModel)
    assert isinstance(toy_pipe.unet, UNet2DConditionModel) and isinstance(toy_pipe.vae, AutoencoderKL)
    assert isinstance(toy_pipe.scheduler, DDIMScheduler)
    assert toy_pipe.scheduler.config.prediction_type == "epsilon"
    tok = toy_pipe.tokenizer
    cfg = toy_pipe.text_encoder.config
    special = (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == special
    caption = "a green triangle on a grey background"
    assert tok.decode(tok(caption, add_special_tokens=False).input_ids).strip() == caption
    # one dtype for every loader: fp32 whatever the weights are stored in
    assert {toy_pipe.unet.dtype, toy_pipe.vae.dtype, toy_pipe.text_encoder.dtype} == {torch.float32}


def test_shipped_toy_model_draws_the_asked_colour(toy_pipe):
    began = time.perf_counter()
    image = toy_pipe(
        "a blue square",
        height=32,
        width=32,
        num_inference_steps=20,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    seconds = time.perf_counter() - began
    print(f"toy model: one 32x32 image, 20 steps, in {seconds:.2f}s")
    assert image.shape == (32, 32, 3)
    assert classify(image).colour == "blue"


def test_training_script_runs_a_few_steps(tmp_path):
    from diffusers import StableDiffusionPipeline

    train = _script("train_toy_model")
    out = tmp_path / "toy"
    assert (
        train.main(
            [
                "--out",
                str(out),
                "--images",
                "32",
                "--vae-steps",
                "2",
                "--vae-batch",
                "4",
                "--steps",
                "2",
                "--batch",
                "4",
            ]
        )
        == 0
    )
    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", height=32, width=32, num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (32, 32, 3)
    assert (out / "TOY_MODEL.json").is_file() and not list(tmp_path.glob(".toy*"))


def test_bench_fidelity_runs_on_a_two_step_budget(tmp_path, capsys):
    bench = _script("bench_fidelity")
    assert (
        bench.main(
            [
                "--train-steps",
                "2",
                "--samples",
                "2",
                "--sample-steps",
                "2",
                "--prompts",
                "2",
                "--train-samples",
                "1",
                "--train-batch",
                "2",
                "--json",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| section | setting |" in out and "single prompt K=1" in out and "mixture C=2, K=2 each" in out
    assert "two-mode components: component 0 (weight" in out
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert len(rows) == 5 + 3 + 5 + 1 + len(bench.EDIT_TEMPLATES) + 4
    assert all(0 <= r["red_square"] + r["blue_circle"] <= 1 for r in rows)
    # Table-1 distribution metrics (toy features) on sections 1-3, not on the edits
    assert "| FD | density | coverage |" in out
    for r in rows:
        if r["section"][0] in "45":
            assert "density" not in r
        else:
            assert r["density"] >= 0 and 0 <= r["dc_coverage"] <= 1 and r["fd"] >= 0
