"""Shared fixtures: tiny random-weight SD-2-architecture models, built once per test session and
loaded through the same from_pretrained path real users use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DREAMDIST_CACHE", str(Path(__file__).parent / ".." / ".cache" / "test-cache"))
torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared 2-core machine

from dreamdist.utils.quiet import quiet_libraries  # noqa: E402

quiet_libraries()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread again for every test module, whatever an earlier test (a CLI run, a
    benchmark helper) set: on a shared two-core machine two threads per process oversubscribe the
    cores and tiny ops run ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def stop_at(step: int):
    """A training callback that stops the run like Ctrl-C once ``step`` is done."""

    def callback(info) -> None:
        if info.step == step:
            raise KeyboardInterrupt

    return callback


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """SD 2.1-base-like tiny model (epsilon prediction)."""
    from dreamdist.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-eps", prediction_type="epsilon")


@pytest.fixture(scope="session")
def tiny_model_dir_v(tmp_path_factory) -> Path:
    """SD 2.1-like tiny model (v-prediction)."""
    from dreamdist.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-v", prediction_type="v_prediction")


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> Path:
    """A different text encoder (other random weights): distributions must refuse it."""
    from dreamdist.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-other", seed=123)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    from dreamdist.core.encoder import SoftPromptEncoder

    return SoftPromptEncoder.from_pretrained(tiny_model_dir)


def write_random_distribution(
    path: Path,
    encoder,
    model_dir,
    k: int = 4,
    m: int = 2,
    seed: int = 0,
    template: str = "{}",
    scale: float = 1.0,
    weights: tuple[float, ...] = (1.0,),
) -> Path:
    """A distribution file with random learned vectors (scale >> init so the K prompts differ); with
    several ``weights``, a mixture of that many components, component c explaining ``c-0.png``, ``c-1.png``."""
    from dreamdist.core.distfile import Component, DistributionFile, Fingerprint, save_distribution

    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(len(weights) * k, m, encoder.token_dim, generator=g) * scale
    components = tuple(Component(w, (f"{c}-0.png", f"{c}-1.png")) for c, w in enumerate(weights))
    dist = DistributionFile(
        ctx=ctx,
        base_model=str(model_dir),
        fingerprint=Fingerprint.of(encoder.text_encoder),
        template=template,
        training={"steps": 0},
        image_count=0,
        components=components,
    )
    return save_distribution(path, dist)


@pytest.fixture(scope="session")
def tiny_distribution(tmp_path_factory, tiny_encoder, tiny_model_dir) -> Path:
    """A random K=4, M=2 distribution file for the tiny epsilon model."""
    return write_random_distribution(
        tmp_path_factory.mktemp("dists") / "random.safetensors", tiny_encoder, tiny_model_dir
    )


@pytest.fixture(scope="session")
def tiny_distribution_b(tmp_path_factory, tiny_encoder, tiny_model_dir) -> Path:
    """A second, different random distribution for mixing tests."""
    return write_random_distribution(
        tmp_path_factory.mktemp("dists") / "random_b.safetensors", tiny_encoder, tiny_model_dir, seed=1
    )


@pytest.fixture(scope="session")
def tiny_mixture(tmp_path_factory, tiny_encoder, tiny_model_dir) -> Path:
    """A random two-component mixture (weights 0.25 / 0.75), components far apart."""
    return write_random_distribution(
        tmp_path_factory.mktemp("dists") / "mixture.safetensors",
        tiny_encoder,
        tiny_model_dir,
        seed=5,
        scale=3.0,
        weights=(0.25, 0.75),
    )


@pytest.fixture(scope="session")
def two_templates(tmp_path_factory, tiny_encoder, tiny_model_dir) -> tuple[Path, Path]:
    """Two files trained in different templates (the vectors are random; the template is what differs)."""
    folder = tmp_path_factory.mktemp("templates")
    a = write_random_distribution(
        folder / "photo.safetensors", tiny_encoder, tiny_model_dir, seed=3, template="a photo of {}"
    )
    b = write_random_distribution(
        folder / "snow.safetensors", tiny_encoder, tiny_model_dir, seed=4, template="{} in the snow"
    )
    return a, b
