"""`dreamdist train` on the tiny model (CPU): learning, frozen weights, resume, caching, bad input, CLI."""

from __future__ import annotations

import csv
import math
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import stop_at
from PIL import Image, ImageDraw

from dreamdist.cli import main
from dreamdist.core.distfile import load_distribution
from dreamdist.train import (
    PreviewWarning,
    SettingWarning,
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    default_paths,
    train_distribution,
)
from dreamdist.train.losscurve import loss_curve_path
from dreamdist.train.prompts import PromptSet
from dreamdist.utils.compat import cpu_autocast_supports
from dreamdist.utils.errors import DreamdistError, InputError
from dreamdist.utils.stop import StopRequest

# Small K/M/S/B keep each step at a few tens of milliseconds on two CPU cores.
SMALL = TrainConfig(num_prompts=4, num_tokens=2, samples=2, batch_size=2, steps=30, lr=3e-2, checkpoint_every=0)


def draw_images(folder: Path, count: int = 6) -> Path:
    """Synthetic reference images: coloured shapes on white, various sizes and formats."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        size = (36 + 4 * i, 32 + 2 * (i % 3))
        image = Image.new("RGB", size, (255, 255, 255))
        draw = ImageDraw.Draw(image)
        colour = (220, 40 + 30 * i, 60)
        if i % 2:
            draw.ellipse((4, 4, size[0] - 6, size[1] - 4), fill=colour)
        else:
            draw.rectangle((6, 6, size[0] - 8, size[1] - 6), fill=colour)
        image.save(folder / f"ref{i}.{'png' if i % 3 else 'jpg'}")
    return folder


def expected_crop_positions(width: int, height: int, resolution: int, step: int) -> int:
    """Random-crop positions of one image, written out independently of dreamdist.images: the image
    resized to ``resolution`` on its short side (torchvision's rule: the long side truncated), then
    every ``step`` pixels along the long side, both ends included, at most 33."""
    long_side = int(resolution * max(width, height) / min(width, height))
    span = long_side - resolution
    return 1 if span <= 0 else min(33, math.ceil(span / step) + 1)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return draw_images(tmp_path_factory.mktemp("refs") / "images")


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    import warnings

    from dreamdist.core.runtime import load_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers' torch_dtype deprecation notice
        return load_pipeline(tiny_model_dir, torch.device("cpu"))


def weights(pipe) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.detach().clone()
        for name in ("unet", "vae", "text_encoder")
        for key, value in getattr(pipe, name).state_dict().items()
    }


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_training_learns_only_the_vectors_and_writes_a_usable_file(pipe, images, tmp_path, tiny_model_dir):
    before = weights(pipe)
    vae_rows, unet_batches, text_batches, at_first_step = [], [], [], []
    hooks = [
        pipe.vae.encoder.register_forward_hook(lambda m, args, out: vae_rows.append(args[0].shape[0])),
        pipe.unet.register_forward_hook(lambda m, args, out: unet_batches.append(args[0].shape[0])),
        pipe.text_encoder.register_forward_hook(
            lambda m, args, kwargs, out: text_batches.append(kwargs["input_ids"].shape[0]), with_kwargs=True
        ),
    ]

    def first_step(info):
        if info.step == 1:
            at_first_step.append(sum(vae_rows))

    out = tmp_path / "run" / "dist.safetensors"
    try:
        result = train_distribution(images, pipe, out, SMALL, progress=False, callback=first_step)
    finally:
        for hook in hooks:
            hook.remove()
    # the same draws with (almost) frozen vectors: the loss the trained vectors must beat
    baseline = train_distribution(
        images, pipe, tmp_path / "base" / "dist.safetensors", replace(SMALL, lr=1e-9), progress=False
    )

    # learning. Per-step losses vary far more with the random timesteps and noise than training
    # moves them, so "last 10 steps vs first 10" of one run is a coin toss on a random-weight model.
    # Instead compare with a run that draws the very same batches, timesteps and noise (same seed)
    # but barely moves its vectors: identical first step, then a clearly lower smoothed loss.
    trained, frozen = result.diffusion_losses, baseline.diffusion_losses
    assert len(trained) == 30 and all(math.isfinite(x) for x in trained)
    assert trained[0] == frozen[0]
    gain_last = sum(f - t for f, t in zip(frozen[-10:], trained[-10:])) / 10
    gain_first = sum(f - t for f, t in zip(frozen[:10], trained[:10])) / 10
    assert gain_last > 0.01 and gain_last > gain_first, (gain_first, gain_last)

    # frozen model: bit-identical weights, no gradient anywhere
    after = weights(pipe)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for name in ("unet", "vae", "text_encoder"):
        assert all(p.grad is None and not p.requires_grad for p in getattr(pipe, name).parameters())

    # caching and batching: VAE once per crop position, before the first step; one UNet call per
    # step with the B x S samples as one batch; one text-encoder call per step on the K prompts
    positions = sum(expected_crop_positions(*Image.open(p).size, 32, 2) for p in sorted(images.iterdir()))
    assert result.vae_images_encoded == positions and sum(vae_rows) == positions and at_first_step == [positions]
    assert unet_batches == [SMALL.batch_size * SMALL.samples] * 30
    assert text_batches == [SMALL.num_prompts] * 30

    # the file: loads, samples, records how it was made; the log has one row per step
    from dreamdist.core.distribution import PromptDistribution
    from dreamdist.core.encoder import SoftPromptEncoder

    assert result.finished and result.out == out and out.is_file()
    dist = load_distribution(out)
    assert dist.ctx.shape == (4, 2, 32) and dist.image_count == 6
    assert dist.training["steps_done"] == 30 and dist.training["prediction_type"] == "epsilon"
    assert not torch.equal(dist.ctx, PromptSet(4, 2, 32, seed=0).ctx.detach())
    encoder = SoftPromptEncoder.from_pretrained(tiny_model_dir)
    sample = PromptDistribution.from_files([out], encoder).sample([0])
    assert sample.shape == (1, 77, 32) and torch.isfinite(sample).all()
    rows = csv_rows(default_paths(out)["log_csv"])
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert float(rows[-1]["diffusion_loss"]) == pytest.approx(trained[-1], rel=1e-5)
    assert default_paths(out)["checkpoint"].is_file()
    curve = Image.open(loss_curve_path(default_paths(out)["log_csv"]))  # the loss curve beside the CSV
    assert curve.format == "PNG" and curve.size == (700, 320)


def test_interrupt_and_resume_is_bit_identical(pipe, images, tmp_path):
    config = replace(SMALL, steps=20, checkpoint_every=7)
    straight = train_distribution(images, pipe, tmp_path / "a" / "d.safetensors", config, progress=False)

    out = tmp_path / "b" / "d.safetensors"
    with pytest.raises(TrainingInterrupted) as stopped:
        train_distribution(images, pipe, out, config, progress=False, callback=stop_at(10))
    assert stopped.value.step == 10 and stopped.value.checkpoint.is_file() and not out.exists()
    with pytest.raises(InputError, match="--resume"):  # an existing checkpoint is never silently discarded
        train_distribution(images, pipe, out, config, progress=False)
    resumed = train_distribution(images, pipe, out, config, progress=False, resume=True)

    assert resumed.resumed_from == 10 and resumed.finished
    assert torch.equal(load_distribution(out).ctx, load_distribution(straight.out).ctx)
    assert resumed.diffusion_losses == straight.diffusion_losses[10:]
    rows = csv_rows(default_paths(out)["log_csv"])
    assert [int(r["step"]) for r in rows] == list(range(1, 21))


def test_sigterm_checkpoints_and_max_steps_this_run(pipe, images, tmp_path, caplog):
    out = tmp_path / "d.safetensors"
    config = replace(SMALL, steps=6)
    previous = signal.getsignal(signal.SIGTERM)

    def terminate_at_2(info):
        if info.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as stopped:
        train_distribution(images, pipe, out, config, progress=False, callback=terminate_at_2)
    assert stopped.value.signal_name == "SIGTERM" and stopped.value.step == 2
    assert "SIGTERM: stopping after this step and saving a checkpoint" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    part = train_distribution(images, pipe, out, config, progress=False, resume=True, max_steps_this_run=2)
    assert not part.finished and part.step == 4 and part.out is None and not out.exists()
    done = train_distribution(images, pipe, out, config, progress=False, resume=True)
    assert done.finished and done.step == 6 and out.is_file()
    straight = train_distribution(images, pipe, tmp_path / "s.safetensors", config, progress=False)
    assert torch.equal(load_distribution(out).ctx, load_distribution(straight.out).ctx)


@pytest.mark.parametrize("second_sigint_aborts", [True, False])
def test_stop_request_records_the_first_signal(second_sigint_aborts):
    said: list[str] = []
    stop = StopRequest(said.append, second_sigint_aborts=second_sigint_aborts)
    previous = signal.getsignal(signal.SIGINT)
    with stop.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM" and said == ["SIGTERM"]
        if second_sigint_aborts:
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.signal_name == "SIGINT" and said == ["SIGTERM", "SIGINT"]
    assert signal.getsignal(signal.SIGINT) is previous


def test_nan_loss_stops_and_keeps_last_good_checkpoint(pipe, images, tmp_path, monkeypatch):
    import dreamdist.train.trainer as train_module

    real = train_module.ortho_loss
    calls = []

    def poisoned(pooled, kind="abs"):
        calls.append(1)
        value = real(pooled, kind)
        return value * float("nan") if len(calls) == 4 else value

    monkeypatch.setattr(train_module, "ortho_loss", poisoned)
    out = tmp_path / "d.safetensors"
    config = replace(SMALL, steps=10, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 4.*step 2\) is kept"):
        train_distribution(images, pipe, out, config, progress=False)
    assert not out.exists()
    state = torch.load(default_paths(out)["checkpoint"], weights_only=True)
    assert state["step"] == 2 and torch.isfinite(state["ctx"]).all()


def test_v_prediction_and_epsilon_targets(tiny_model_dir_v, images, tmp_path, monkeypatch):
    from diffusers import DDPMScheduler

    velocity_calls = []
    real = DDPMScheduler.get_velocity

    def spy(self, *args, **kwargs):
        velocity_calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DDPMScheduler, "get_velocity", spy)
    result = train_distribution(
        images, tiny_model_dir_v, tmp_path / "v.safetensors", replace(SMALL, steps=3), device="cpu", progress=False
    )
    assert result.finished and all(math.isfinite(x) for x in result.diffusion_losses)
    assert load_distribution(result.out).training["prediction_type"] == "v_prediction"
    assert len(velocity_calls) == 3  # the target is the velocity, once per step


def test_epsilon_model_does_not_use_velocity(pipe, images, tmp_path, monkeypatch):
    from diffusers import DDPMScheduler

    monkeypatch.setattr(DDPMScheduler, "get_velocity", lambda *a, **k: pytest.fail("epsilon model used velocity"))
    result = train_distribution(images, pipe, tmp_path / "e.safetensors", replace(SMALL, steps=2), progress=False)
    assert result.finished


def test_preview_grids_and_a_failed_preview_does_not_stop_training(pipe, images, tmp_path, monkeypatch):
    config = replace(SMALL, steps=2, preview_every=2, preview_count=2, preview_steps=2)
    result = train_distribution(images, pipe, tmp_path / "p.safetensors", config, progress=False)
    assert [p.name for p in result.previews] == ["step-000002.png"]
    assert Image.open(result.previews[0]).size[0] > 0

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("dreamdist.train.runlog.render_grid", broken)
    with pytest.warns(PreviewWarning, match="preview at step 2 failed: RuntimeError: out of memory"):
        result = train_distribution(images, pipe, tmp_path / "q.safetensors", config, progress=False)
    assert result.finished and result.previews == []


def test_gradient_checkpointing_gives_the_same_vectors(pipe, images, tmp_path):
    config = replace(SMALL, steps=2)
    plain = train_distribution(images, pipe, tmp_path / "a.safetensors", config, progress=False)
    ckpt = train_distribution(
        images, pipe, tmp_path / "b.safetensors", replace(config, gradient_checkpointing=True), progress=False
    )
    assert torch.allclose(load_distribution(plain.out).ctx, load_distribution(ckpt.out).ctx, atol=1e-6)
    assert not pipe.unet.is_gradient_checkpointing  # restored


# --------------------------------------------------------------------------- bad input, CLI


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "no reference images found"),
        ("missing", "no such folder"),
        ("text-file", r"notes\.txt.*not an image file"),
        ("corrupt", r"bad\.png: (not a readable image|corrupt or truncated image)"),
        ("truncated", r"cut\.jpg: (corrupt or truncated|not a readable)"),
        ("template", "does not fit"),
        ("two-templates", "either --template or --prefix/--suffix"),
        ("no-placeholder", "exactly one '{}' placeholder"),
        ("no-prompts", "--num-prompts must be at least 1"),
        ("resolution", "--resolution 34 must be a multiple of 4"),
        ("resume-nothing", "--resume: no checkpoint"),
        ("bad-model", "cannot load model"),
    ],
)
def test_bad_input_one_line_and_nothing_written(case, message, tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    if case not in ("empty", "missing"):
        draw_images(folder, 3)
    extra: list[str] = []
    if case == "missing":
        folder = tmp_path / "nowhere"
    elif case == "text-file":
        (folder / "notes.txt").write_text("not an image")
    elif case == "corrupt":
        (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    elif case == "truncated":
        Image.effect_noise((64, 64), 60).convert("RGB").save(folder / "cut.jpg")
        data = (folder / "cut.jpg").read_bytes()
        (folder / "cut.jpg").write_bytes(data[: len(data) // 3])
    elif case == "template":
        extra = ["--num-tokens", "80"]
    elif case == "two-templates":
        extra = ["--template", "a photo of {}", "--prefix", "a"]
    elif case == "no-placeholder":
        extra = ["--template", "a photo of"]
    elif case == "no-prompts":
        extra = ["--num-prompts", "0"]
    elif case == "resolution":
        extra = ["--resolution", "34"]
    elif case == "resume-nothing":
        extra = ["--resume"]
    model = tmp_path / "no-model" if case == "bad-model" else tiny_model_dir
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = _cli(
        capsys,
        "train",
        folder,
        "--model",
        model,
        "--out",
        out_dir / "d.safetensors",
        "--steps",
        "2",
        "--num-prompts",
        "4",
        "--num-tokens",
        "2",
        "--samples",
        "1",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    )
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dreamdist train: error: "), err
    assert __import__("re").search(message, lines[0]), lines[0]
    assert list(out_dir.iterdir()) == []


def test_existing_output_is_not_overwritten_without_force(pipe, images, tmp_path):
    out = tmp_path / "d.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(InputError, match="exists; pass --force"):
        train_distribution(images, pipe, out, replace(SMALL, steps=1), progress=False)
    assert out.read_bytes() == b"precious" and sorted(p.name for p in tmp_path.iterdir()) == ["d.safetensors"]
    result = train_distribution(images, pipe, out, replace(SMALL, steps=1), progress=False, overwrite=True)
    assert load_distribution(result.out).ctx.shape == (4, 2, 32)


def test_resume_refuses_other_settings(pipe, images, tmp_path):
    out = tmp_path / "d.safetensors"
    config = replace(SMALL, steps=4)
    train_distribution(images, pipe, out, config, progress=False, max_steps_this_run=1)
    with pytest.raises(DreamdistError, match=r"different settings \(num_prompts: checkpoint 4, now 5"):
        train_distribution(images, pipe, out, replace(config, num_prompts=5), progress=False, resume=True)


def test_cli_trains_single_image_with_warning(tiny_model_dir, tmp_path, capsys):
    folder = draw_images(tmp_path / "one", 1)
    out = tmp_path / "single.safetensors"
    code, stdout, err = _cli(
        capsys,
        "train",
        folder,
        "--model",
        tiny_model_dir,
        "--out",
        out,
        "--steps",
        "3",
        "--num-prompts",
        "3",
        "--num-tokens",
        "2",
        "--samples",
        "2",
        "--batch-size",
        "2",
        "--template",
        "a photo of {}",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == 0, err
    assert "warning:" in err and "only one reference image" in err
    assert f"wrote {out}" in stdout
    dist = load_distribution(out)
    assert dist.template == "a photo of {}" and dist.training["steps_done"] == 3
    assert dist.training["num_prompts"] == 3 and dist.image_count == 1


def test_cli_names_settings_by_flag_and_prints_the_resume_message(pipe, images, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "d.safetensors"
    with pytest.warns(SettingWarning, match="num_prompts 1 learns a single prompt"):  # the API names fields
        train_distribution(
            images, pipe, out, replace(SMALL, num_prompts=1, steps=2), progress=False, max_steps_this_run=1
        )
    code, stdout, err = _cli(
        capsys,
        "train",
        images,
        "--model",
        tiny_model_dir,
        "--out",
        out,
        "--resume",
        "--num-prompts",
        "1",
        "--num-tokens",
        "2",
        "--samples",
        "2",
        "--batch-size",
        "2",
        "--steps",
        "2",
        "--lr",
        "0.03",
        "--checkpoint-every",
        "0",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == 0, err
    assert f"dreamdist train: resuming from {default_paths(out)['checkpoint']} at step 1/2" in err
    assert "dreamdist train: warning: --num-prompts 1 learns a single prompt" in err
    assert "1 steps (resumed at 1)" in stdout


def test_cli_help_explains_paper_defaults(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for expected in (
        "paper: 32",
        "paper: 8",
        "paper: 4",
        "paper: 5e-3",
        "paper: 1500",
        "paper: 1e-3",
        "reference script: 4",
        "AdamW",
        "eq. 5",
        "--resume",
        "--preview-every",
        "--precision",
        "--gradient-checkpointing",
        "--checkpoint-every",
        "--log-csv",
        "(default: 32)",
    ):
        assert expected in text, expected


def test_single_prompt_baseline_trains_with_a_warning(pipe, images, tmp_path):
    with pytest.warns(UserWarning, match="single prompt"):
        result = train_distribution(
            images, pipe, tmp_path / "k1.safetensors", replace(SMALL, num_prompts=1, steps=2), progress=False
        )
    assert result.finished and result.ortho_losses == [0.0, 0.0]
    assert all(math.isfinite(x) for x in result.diffusion_losses)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_autocast_paths(precision, tiny_model_dir, images, tmp_path):
    """The CUDA code paths, run on CPU: half-precision weights under autocast, fp32 learned vectors,
    and for fp16 the GradScaler (loss scaling, unscale before clipping, skipped inf steps)."""
    config = replace(SMALL, steps=3, precision=precision)
    if not cpu_autocast_supports(torch.float16 if precision == "fp16" else torch.bfloat16):  # torch 2.0: bf16 only
        with pytest.raises(InputError, match=f"precision {precision} on the CPU needs a newer torch"):
            train_distribution(images, tiny_model_dir, tmp_path / "h.safetensors", config, device="cpu")
        assert not (tmp_path / "h.safetensors").exists()
        return
    result = train_distribution(
        images, tiny_model_dir, tmp_path / "h.safetensors", config, device="cpu", progress=False
    )
    assert result.finished and all(math.isfinite(x) for x in result.diffusion_losses)
    dist = load_distribution(result.out)
    assert dist.ctx.dtype == torch.float32 and dist.training["precision"] == precision
    assert not torch.equal(dist.ctx, PromptSet(4, 2, 32, seed=0).ctx.detach())


# --------------------------------------------------------------------------- augmentation, as the authors


def test_random_crops_are_the_crops_latents_drawn_from_the_run_generator(pipe, images, tmp_path):
    from dreamdist.train import Trainer

    config = replace(SMALL, steps=1)
    assert (config.crop, config.flip) == ("random", False)  # the authors' train.sh: random crops, no flips
    trainer = Trainer(images, pipe, tmp_path / "a.safetensors", config, progress=False)
    model, refs = trainer.model, trainer.images
    counts = [expected_crop_positions(*Image.open(p).size, 32, model.vae_scale) for p in trainer.image_paths]
    assert trainer.crop_count.tolist() == counts and trainer.vae_images_encoded == sum(counts)
    for i, start in enumerate(trainer.crop_start.tolist()):  # each entry: the latents of exactly that crop
        mean, std = model.encode_latents(refs.crops(i, model.vae_scale))
        assert torch.allclose(trainer.latent_mean[start : start + counts[i]], mean, atol=1e-5)
        assert torch.allclose(trainer.latent_std[start : start + counts[i]], std, atol=1e-5)
        first, last = refs.crops(i, model.vae_scale)[[0, -1]]
        assert torch.equal(first, refs.resized[i][:, :32, :32])  # both ends of the long side
        assert torch.equal(last, refs.resized[i][:, -32:, -32:])

    def drawn(t, n=120):
        entries = torch.cat([t.draw()["index"] for _ in range(n)])
        return entries.tolist()

    again = Trainer(images, pipe, tmp_path / "b.safetensors", config, progress=False)
    first = drawn(trainer)
    assert first == drawn(again)  # the run's CPU generator: the same crops for the same seed
    other = Trainer(images, pipe, tmp_path / "c.safetensors", replace(config, seed=1), progress=False)
    assert drawn(other) != first
    starts = trainer.crop_start.tolist()
    used = {}
    for entry in first:
        image = max(i for i, s in enumerate(starts) if s <= entry)
        assert entry < starts[image] + counts[image]
        used.setdefault(image, set()).add(entry)
    assert all(len(used[i]) >= min(3, counts[i]) for i in range(len(counts)))  # many positions of every image


def test_centre_crops_and_flips_on_request(pipe, images, tmp_path):
    from dreamdist.train import Trainer

    config = replace(SMALL, steps=1, crop="center", flip=True)
    trainer = Trainer(images, pipe, tmp_path / "a.safetensors", config, progress=False)
    assert trainer.vae_images_encoded == 12  # each image and its mirror image, once
    mean, _ = trainer.model.encode_latents(trainer.images.with_flips())
    assert torch.allclose(trainer.latent_mean, mean, atol=1e-6)
    entries = torch.cat([trainer.draw()["index"] for _ in range(60)])
    assert entries.min() >= 0 and entries.max() < 12 and len(set(entries.tolist())) == 12


def test_min_snr_weighting_of_the_diffusion_loss(pipe, images, tmp_path):
    config = replace(SMALL, steps=4, lr=1e-9)
    plain = train_distribution(
        images, pipe, tmp_path / "a.safetensors", replace(config, snr_gamma=0.0), progress=False
    ).diffusion_losses
    # epsilon: min(SNR, gamma) / SNR is exactly 1 where SNR <= gamma, so a huge gamma is no weighting
    huge = train_distribution(
        images, pipe, tmp_path / "b.safetensors", replace(config, snr_gamma=1e9), progress=False
    ).diffusion_losses
    five = train_distribution(images, pipe, tmp_path / "c.safetensors", config, progress=False)
    assert huge == plain
    assert all(w <= p + 1e-7 for w, p in zip(five.diffusion_losses, plain)) and five.diffusion_losses != plain
    assert load_distribution(five.out).training["snr_gamma"] == 5.0


def test_v_prediction_snr_kinds_differ(tiny_model_dir_v, images, tmp_path):
    config = replace(SMALL, steps=2, lr=1e-9)
    hang = train_distribution(
        images, tiny_model_dir_v, tmp_path / "a.safetensors", config, device="cpu", progress=False
    )
    authors = train_distribution(
        images,
        tiny_model_dir_v,
        tmp_path / "b.safetensors",
        replace(config, snr_kind="authors-code"),
        device="cpu",
        progress=False,
    )
    assert authors.diffusion_losses != hang.diffusion_losses
    assert load_distribution(authors.out).training["snr_kind"] == "authors-code"


def test_config_names_the_authors_choices():
    assert TrainConfig(ortho_kind="squared").ortho_kind == "authors-code"  # the old name, the authors' value
    config = TrainConfig()
    assert (config.snr_gamma, config.snr_kind, config.crop, config.flip, config.unet_batch) == (
        5.0,
        "min-snr",
        "random",
        False,
        "auto",
    )
    assert TrainConfig(unet_batch="4").unet_batch == 4
    for bad, name in (
        (dict(snr_gamma=-1.0), "snr_gamma"),
        (dict(crop="middle"), "crop"),
        (dict(unet_batch=0), "unet_batch"),
        (dict(unet_batch="some"), "unet_batch"),
        (dict(snr_kind="max"), "snr_kind"),
    ):
        with pytest.raises(DreamdistError, match=name):
            TrainConfig(**bad).validate()


def test_cli_flip_crop_and_unet_batch_flags(images, tiny_model_dir, tmp_path, capsys):
    base = [
        "train",
        images,
        "--model",
        tiny_model_dir,
        "--num-prompts",
        "2",
        "--num-tokens",
        "1",
        "--samples",
        "2",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--no-progress",
    ]
    code, _, err = _cli(
        capsys,
        *base,
        "--out",
        tmp_path / "a.safetensors",
        "--flip",
        "--crop",
        "center",
        "--unet-batch",
        "1",
        "--snr-gamma",
        "0",
        "--ortho-kind",
        "squared",
    )
    assert code == 0, err
    assert "memory: estimated peak" in err and "RAM available" in err and "in 4 chunks of 1 evaluation" in err
    training = load_distribution(tmp_path / "a.safetensors").training
    assert (training["flip"], training["crop"], training["snr_gamma"], training["ortho_kind"]) == (
        True,
        "center",
        0.0,
        "authors-code",
    )
    assert (training["unet_batch"], training["unet_chunks"], training["unet_batch_setting"]) == (1, 4, 1)
    code, _, err = _cli(capsys, *base, "--out", tmp_path / "b.safetensors", "--no-flip")  # still accepted
    assert code == 0, err
    training = load_distribution(tmp_path / "b.safetensors").training
    assert (training["flip"], training["crop"], training["unet_batch"]) == (False, "random", 4)
    code, _, err = _cli(capsys, *base, "--out", tmp_path / "c.safetensors", "--unet-batch", "lots")
    assert code == 2 and "--unet-batch must be auto or at least 1, not 'lots'" in err


# --------------------------------------------------------------------------- checkpoints from before


def _as_version_1(path: Path, ortho_kind: str | None = None) -> None:
    """Rewrite a checkpoint as dreamdist wrote it before Min-SNR weighting and random crops."""
    import json

    state = torch.load(path, weights_only=True)
    settings = json.loads(state["settings"])
    for key in ("snr_gamma", "snr_kind", "crop"):
        del settings[key]
    if ortho_kind:
        settings["ortho_kind"] = ortho_kind
    state.update(version=1, settings=json.dumps(settings, sort_keys=True))
    torch.save(state, path)


def test_version_1_checkpoint_resumes_with_its_settings_only(pipe, images, tmp_path):
    legacy = replace(SMALL, steps=4, snr_gamma=0.0, crop="center", flip=True)
    straight = train_distribution(images, pipe, tmp_path / "s.safetensors", legacy, progress=False)
    out = tmp_path / "d.safetensors"
    train_distribution(images, pipe, out, legacy, progress=False, max_steps_this_run=2)
    _as_version_1(default_paths(out)["checkpoint"])
    with pytest.raises(
        InputError,
        match=r"snr_gamma: checkpoint 0.0, now 5.0.*older dreamdist.*--snr-gamma 0 "
        r"--crop center",
    ):
        train_distribution(images, pipe, out, replace(SMALL, steps=4), progress=False, resume=True)
    resumed = train_distribution(images, pipe, out, legacy, progress=False, resume=True)
    assert resumed.resumed_from == 2 and torch.equal(load_distribution(out).ctx, load_distribution(straight.out).ctx)

    other = tmp_path / "o.safetensors"
    train_distribution(
        images, pipe, other, replace(legacy, ortho_kind="authors-code"), progress=False, max_steps_this_run=1
    )
    _as_version_1(default_paths(other)["checkpoint"], ortho_kind="squared")
    with pytest.raises(InputError, match="half the authors' value.*--force"):
        train_distribution(images, pipe, other, replace(legacy, ortho_kind="authors-code"), progress=False, resume=True)


# --------------------------------------------------------------------------- UNet chunks (issue 17)


@pytest.mark.parametrize("chunk", [1, 4])
def test_chunked_step_computes_the_same_update(pipe, images, tmp_path, chunk):
    config = replace(SMALL, batch_size=4, samples=2, steps=2)  # B x S = 8 UNet evaluations per step
    calls: list[int] = []
    hook = pipe.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        whole = train_distribution(
            images, pipe, tmp_path / "a.safetensors", replace(config, unet_batch=8), progress=False
        )
        assert calls == [8, 8]
        calls.clear()
        chunked = train_distribution(
            images, pipe, tmp_path / "b.safetensors", replace(config, unet_batch=chunk), progress=False
        )
        assert calls == [chunk] * (16 // chunk)
    finally:
        hook.remove()
    assert chunked.diffusion_losses == pytest.approx(whole.diffusion_losses, rel=1e-5)
    ctx_whole, ctx_chunked = load_distribution(whole.out).ctx, load_distribution(chunked.out).ctx
    assert torch.allclose(ctx_chunked, ctx_whole, atol=1e-6, rtol=1e-5)
    assert load_distribution(chunked.out).training["unet_chunks"] == 8 // chunk


def test_auto_chunks_and_checkpointing_follow_the_free_memory(pipe, images, tmp_path, monkeypatch):
    import dreamdist.train.trainer as trainer_module
    from dreamdist.train import Trainer
    from dreamdist.train.memory import needed

    config = replace(SMALL, batch_size=4, samples=2, steps=1)
    roomy = Trainer(images, pipe, tmp_path / "r.safetensors", config, progress=False)
    assert (roomy.memory.unet_batch, roomy.memory.gradient_checkpointing) == (8, False)  # this machine's RAM
    estimate = roomy.memory_estimate
    assert estimate.unet(False)[1] > estimate.unet(True)[1] > 0  # per evaluation, checkpointing keeps less

    def with_free(free: float, name: str) -> Trainer:
        monkeypatch.setattr(trainer_module, "free_memory", lambda device: int(free))
        return Trainer(images, pipe, tmp_path / f"{name}.safetensors", config, progress=False)

    four = with_free(needed(estimate.peak(4, False)) + 1, "four")  # 4 fit, 5 do not: 2 chunks of 4
    assert (four.memory.unet_batch, four.memory.gradient_checkpointing, four.memory.fits) == (4, False, True)
    three = with_free(needed(estimate.peak(3, False)) + 1, "three")  # 3 fit: 3 chunks, balanced 3 + 3 + 2
    assert (three.memory.unet_batch, three.memory.chunks) == (3, 3)
    tight = with_free(needed(estimate.peak(1, False)) - 1, "tight")  # not even 1: checkpointing on
    assert tight.memory.gradient_checkpointing and tight.memory.fits and tight.memory.unet_batch >= 1
    hopeless = with_free(0, "none")
    assert (hopeless.memory.unet_batch, hopeless.memory.gradient_checkpointing, hopeless.memory.fits) == (
        1,
        True,
        False,
    )
    assert "does not fit even so" in hopeless.memory.describe()

    seen: list[bool] = []
    hook = pipe.unet.register_forward_hook(lambda m, args, out: seen.append(m.is_gradient_checkpointing))
    try:
        result = tight.run()
    finally:
        hook.remove()
    assert seen and all(seen) and not pipe.unet.is_gradient_checkpointing  # on for the run, then as before
    training = load_distribution(result.out).training
    assert training["gradient_checkpointing"] is True and training["unet_batch_setting"] == "auto"
    assert training["unet_batch"] == tight.memory.unet_batch
    assert training["memory_free_gib"] == pytest.approx((needed(estimate.peak(1, False)) - 1) / 2**30, abs=1e-3)


# --------------------------------------------------------------------------- files follow the umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_every_file_train_writes_follows_the_umask(images, tiny_model_dir, tmp_path, capsys, umask, mode):
    out = tmp_path / "run" / "d.safetensors"
    previous = os.umask(umask)
    try:
        code, _, err = _cli(
            capsys,
            "train",
            images,
            "--model",
            tiny_model_dir,
            "--out",
            out,
            "--num-prompts",
            "2",
            "--num-tokens",
            "1",
            "--samples",
            "1",
            "--batch-size",
            "1",
            "--steps",
            "2",
            "--preview-every",
            "2",
            "--preview-count",
            "1",
            "--preview-steps",
            "1",
            "--device",
            "cpu",
            "--no-progress",
        )
    finally:
        os.umask(previous)
    assert code == 0, err
    paths = default_paths(out)
    written = [
        out,
        paths["checkpoint"],
        paths["log_csv"],
        loss_curve_path(paths["log_csv"]),
        paths["preview_dir"] / "step-000002.png",
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(p.name for p in [*written[:4], paths["preview_dir"]])
    for path in written:
        assert path.stat().st_mode & 0o777 == mode, path
    assert paths["preview_dir"].stat().st_mode & 0o777 == 0o777 & ~umask
