"""The memory estimate (dreamdist.train.memory) against peaks measured on real CPU steps, and the
plan that picks UNet chunks, gradient checkpointing and the VAE batch from the free memory."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from packaging.version import Version

from dreamdist.train import TrainConfig, Trainer
from dreamdist.train.memory import (
    GIB,
    SD21_CONFIGS,
    LiveBytes,
    MemoryEstimate,
    ModelConfigs,
    Workload,
    attention_kind,
    balanced_chunk,
    budget,
    free_memory,
    needed,
    plan_memory,
)

README = Path(__file__).resolve().parents[1] / "README.md"
TOLERANCE = 0.10  # the accuracy the README and the module doc claim, on CPU


def test_live_bytes_follows_allocations_views_and_frees():
    weights = torch.zeros(1000)  # existed before: neither it nor its views count
    with LiveBytes() as live:
        a = torch.zeros(256)  # 1 KiB
        b = torch.zeros(512)  # 2 KiB
        view, alias = weights[:10], a.view(16, 16)
        weights.add_(1)  # in place on an old tensor: no allocation
        assert live.now == 3 * 1024
        del b
        assert live.now == 1024 and live.peak == 3 * 1024
        c = torch.zeros(1024)  # 4 KiB
        assert live.peak == 5 * 1024
    del view, alias, c


def test_attention_kind_is_what_torch_keeps_for_backward():
    assert attention_kind("cuda") == "flash"
    q = torch.zeros(1, 2, 16, 8, requires_grad=True)
    kept: list[tuple[int, ...]] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(tuple(t.shape)) or t, lambda t: t):
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    matrix = any(shape[-2:] == (16, 16) for shape in kept)
    assert attention_kind("cpu") == ("math" if matrix else "flash")


def test_free_memory_on_the_cpu_with_and_without_psutil(monkeypatch):
    import builtins

    free = free_memory(torch.device("cpu"))
    assert free is None or free > 0
    real_import = builtins.__import__

    def no_psutil(name, *args, **kwargs):
        if name == "psutil":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psutil)
    if Path("/proc/meminfo").is_file():
        assert free_memory(torch.device("cpu")) > 0
    assert free_memory(torch.device("meta")) is None


def measured_step(trainer: Trainer) -> int:
    """Peak bytes of the tensors one real training step allocates (its activations, gradients and
    temporaries; weights and the latent cache exist before it)."""
    draws = trainer.draw()
    with trainer.model.unet_checkpointing(trainer.memory.gradient_checkpointing), LiveBytes() as live:
        trainer.step(draws)
    trainer.prompts.ctx.grad = None
    return live.peak


def resident(trainer: Trainer) -> int:
    """Bytes that exist before a step: weights, latent cache, learned vectors."""
    parts = (trainer.model.pipe.unet, trainer.model.pipe.text_encoder, trainer.model.pipe.vae)
    weights = sum(t.numel() * t.element_size() for m in parts for t in [*m.parameters(), *m.buffers()])
    return weights + 2 * trainer.latent_mean.numel() * 4 + trainer.prompts.ctx.numel() * 4


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_estimate_is_within_tolerance_of_a_measured_cpu_step(tmp_path_factory, resolution, checkpointing):
    from test_train import draw_images

    from dreamdist.tiny_model import make_tiny_model

    root = tmp_path_factory.mktemp(f"mem{resolution}{checkpointing}")
    model = make_tiny_model(root / "model", resolution=resolution)
    images = draw_images(root / "images", 4)
    config = TrainConfig(
        num_prompts=8,
        num_tokens=2,
        samples=2,
        batch_size=4,
        steps=1,
        checkpoint_every=0,
        gradient_checkpointing=checkpointing,
    )
    trainer = Trainer(images, str(model), root / "d.safetensors", config, device="cpu", progress=False)
    estimate, n = trainer.memory_estimate, config.batch_size * config.samples
    assert (trainer.memory.unet_batch, trainer.memory.gradient_checkpointing) == (n, checkpointing)
    step = measured_step(trainer)
    assert abs(estimate.step(n, checkpointing) - step) <= TOLERANCE * step, (estimate.step(n, checkpointing), step)
    total = resident(trainer) + step
    predicted = estimate.peak(n, checkpointing, vae_batch=1, count_weights=True)
    assert abs(predicted - total) <= TOLERANCE * total, (predicted, total)


def test_gradient_checkpointing_keeps_less(tmp_path, tiny_model_dir):
    """Measured, on whichever stack runs the tests: diffusers < 0.20 checkpoints only in training
    mode, which the trainer switches on for the run."""
    from test_train import draw_images

    images = draw_images(tmp_path / "images", 3)
    peaks = {}
    for checkpointing in (False, True):
        config = TrainConfig(
            num_prompts=4,
            num_tokens=2,
            samples=2,
            batch_size=2,
            steps=1,
            checkpoint_every=0,
            gradient_checkpointing=checkpointing,
        )
        trainer = Trainer(
            images, str(tiny_model_dir), tmp_path / f"{checkpointing}.safetensors", config, device="cpu", progress=False
        )
        peaks[checkpointing] = measured_step(trainer)
        assert not trainer.model.pipe.unet.training  # left in eval mode
    assert peaks[True] < 0.8 * peaks[False]


def fake_estimate(per_eval: float, fixed: float = 1.0, text: float = 1.0, vae_per_image: float = 0.5) -> MemoryEstimate:
    """An estimate with round numbers (GiB), no dry run."""
    work = Workload(32, 8, 4, 4, 768, torch.bfloat16, "cuda", 20)
    estimate = MemoryEstimate(
        ModelConfigs({}, {}, {}),
        work,
        "flash",
        weights=int(fixed * GIB),
        fixed=0,
        vae=(0.0, vae_per_image * GIB),
        text_held=int(text * GIB),
        text_peak=int(text * GIB),
    )
    estimate._unet = {False: (0.0, per_eval * GIB), True: (0.0, per_eval / 4 * GIB)}
    return estimate


def test_plan_picks_chunks_then_checkpointing_then_says_it_does_not_fit():
    estimate = fake_estimate(per_eval=2.0)  # 1 + 1 + 16 x 2 = 34 GiB at once

    def plan(free_gib: float, setting="auto", checkpointing=False):
        return plan_memory(estimate, 16, setting, checkpointing, int(free_gib * GIB), "cuda:0")

    assert needed(estimate.peak(16, False, 1)) == pytest.approx(34 * GIB * 1.1 + 0.75 * GIB)
    whole = plan(80)
    assert (whole.unet_batch, whole.gradient_checkpointing, whole.vae_batch, whole.fits) == (16, False, 8, True)
    assert "all 16 evaluations in one pass" in whole.describe()
    assert plan(budget_for(18)).unet_batch == 8  # room for 8 evaluations: 2 chunks of 8
    five = plan(budget_for(12))  # room for 5: balanced, 4 chunks of 4
    assert (five.unet_batch, five.chunks) == (4, 4) and "in 4 chunks of 4 evaluations" in five.describe()
    three = plan(budget_for(8.5))  # room for 3 (6.5 / 2): 6 chunks of up to 3
    assert (three.unet_batch, three.chunks) == (3, 6) and "6 chunks of up to 3" in three.describe()
    tight = plan(budget_for(3.5))  # not one evaluation without checkpointing (4 GiB); 3 with (0.5 each)
    assert (tight.unet_batch, tight.gradient_checkpointing, tight.fits) == (3, True, True)
    assert "with gradient checkpointing" in tight.describe()
    assert [plan(budget_for(gib)).vae_batch for gib in (3, 2, 1.7)] == [4, 2, 1]  # caching: fewer per VAE call
    hopeless = plan(1)
    assert (hopeless.unet_batch, hopeless.gradient_checkpointing, hopeless.fits) == (1, True, False)
    assert "does not fit even so" in hopeless.describe()
    given = plan(1, setting=8)  # a number is used as given, with a warning
    assert (given.unet_batch, given.gradient_checkpointing, given.fits) == (8, False, False)
    assert "does not fit: try --unet-batch auto" in given.describe()
    asked = plan(80, checkpointing=True)  # asked-for checkpointing stays on
    assert (asked.unet_batch, asked.gradient_checkpointing) == (16, True)
    unknown = plan_memory(estimate, 16, "auto", False, None, "mps")
    assert (unknown.unet_batch, unknown.fits) == (16, None) and "free on mps: unknown" in unknown.describe()
    none = plan_memory(None, 16, "auto", False, 8 * 2**30, "cpu", note="cannot read the model's configs")
    assert none.describe().startswith("memory: no estimate (cannot read the model's configs); RAM available: 8.0")
    record = five.record()
    assert record["unet_batch"] == 4 and record["unet_chunks"] == 4 and record["unet_batch_setting"] == "auto"
    assert record["memory_estimate_gib"] == pytest.approx(1 + 1 + 4 * 2, abs=1e-3)


def budget_for(estimate_gib: float) -> float:
    """The free GiB at which an estimated peak of exactly ``estimate_gib`` still fits."""
    free = needed(estimate_gib * GIB) / GIB
    assert budget(free * GIB) == pytest.approx(estimate_gib * GIB)
    return free + 1e-6  # not a byte less once rounded to whole bytes


def test_balanced_chunks():
    assert [balanced_chunk(16, m) for m in (16, 20, 9, 8, 5, 4, 3, 1)] == [16, 16, 8, 8, 4, 4, 3, 1]
    assert balanced_chunk(8, 3) == 3 and balanced_chunk(6, 4) == 3


def test_readme_states_the_sd21_estimates():
    """The README's memory table is what the estimate says for SD 2.1 at the paper's settings
    (scripts/bench_train.py --plan-table prints it)."""
    work = Workload(32, 8, 4, 4, 768, torch.bfloat16, "cuda", cached_latents=20 * 33)
    bf16 = MemoryEstimate.of(SD21_CONFIGS, work)
    text = README.read_text()
    stated = {
        what: float(gib)
        for what, gib in re.findall(r"^\| (bf16, [^|]+?) \| ([0-9.]+) GiB \|$", text, flags=re.MULTILINE)
    }
    assert stated["bf16, all 16 UNet evaluations at once"] == pytest.approx(bf16.peak(16, False, 1) / GIB, abs=0.05)
    assert stated["bf16, 4 chunks of 4 evaluations"] == pytest.approx(bf16.peak(4, False, 1) / GIB, abs=0.05)
    checkpointed = stated["bf16, gradient checkpointing, all at once"]
    if Version(version("diffusers")) < Version("0.20"):  # its blocks checkpoint differently: its own figure
        checkpointed = float(
            re.search(
                r"diffusers 0\.19\.3, whose blocks checkpoint differently, gradient "
                r"checkpointing all at\s+once is ([0-9.]+) GiB",
                text,
            ).group(1)
        )
    assert checkpointed == pytest.approx(bf16.peak(16, True, 1) / GIB, abs=0.05)
