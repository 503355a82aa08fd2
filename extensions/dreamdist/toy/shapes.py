"""Procedurally drawn, captioned toy images: one coloured shape on a plain background.

Every image is one of ``SHAPES`` in one of ``COLOURS`` on one of ``BACKGROUNDS``, with a random size
and position and a little colour jitter, drawn anti-aliased (4x supersampling) at 32x32. All words
are in the tiny tokenizer's word list (``dreamdist.tiny_model.TINY_WORDS``). (That tokenizer's merge
ranks currently split some listed words, e.g. "green", "grey", "triangle", "background", into a few
pieces; the toy model was trained with exactly the tokenizer it ships, so this only costs tokens.)

Everything is a pure function of a seed (``numpy.random.Generator``), so data sets are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

RESOLUTION = 32
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
# Shape colours are saturated; backgrounds are achromatic, so the classifier can separate them.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.10),
    "green": (0.12, 0.68, 0.16),
    "blue": (0.12, 0.24, 0.90),
    "yellow": (0.95, 0.84, 0.10),
}
BACKGROUNDS: dict[str, float] = {"grey": 0.50, "white": 0.93, "black": 0.07}
MIN_SIZE, MAX_SIZE = 10.0, 22.0  # side of the shape's bounding box, pixels at 32x32
SUPERSAMPLE = 4


@dataclass(frozen=True)
class ToySpec:
    """What one toy image shows; ``size`` is the bounding-box side and (cx, cy) its centre, pixels."""

    shape: str
    colour: str
    background: str
    size: float = 16.0
    cx: float = 16.0
    cy: float = 16.0

    def caption(self, background: bool = True) -> str:
        text = f"a {self.colour} {self.shape}"
        return f"{text} on a {self.background} background" if background else text


def caption_for(shape: str | None, colour: str | None, background: str | None = None) -> str:
    """Toy-caption phrasing with any attribute left out: "a red square on a grey background",
    "a red square", "a square", "a red on a black background"..."""
    words = ["a"] + [w for w in (colour, shape) if w]
    if background:
        words += ["on", "a", background, "background"]
    return " ".join(words)


def random_spec(
    rng: np.random.Generator,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    backgrounds: Sequence[str] = tuple(BACKGROUNDS),
) -> ToySpec:
    shape = shapes[rng.integers(len(shapes))]
    colour = colours[rng.integers(len(colours))]
    background = backgrounds[rng.integers(len(backgrounds))]
    size = float(rng.uniform(MIN_SIZE, MAX_SIZE))
    half = size / 2
    cx = float(rng.uniform(half + 1, RESOLUTION - half - 1))
    cy = float(rng.uniform(half + 1, RESOLUTION - half - 1))
    return ToySpec(shape, colour, background, size, cx, cy)


def shape_mask(shape: str, size: float, cx: float, cy: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` at pixel coordinates ``xs``/``ys`` (pixel centres at i + 0.5).

    square: axis-aligned; circle: diameter ``size``; triangle: upright isosceles, base and height ``size``.
    """
    half = size / 2
    dx, dy = xs - cx, ys - cy
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "triangle":
        top = -half
        return (dy >= top) & (dy <= half) & (np.abs(dx) <= (dy - top) / 2)
    raise ValueError(f"unknown toy shape {shape!r}; choose from {', '.join(SHAPES)}")


def _grid(resolution: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(resolution * factor) + 0.5) / factor
    return np.meshgrid(coords, coords, indexing="xy")


def draw(spec: ToySpec, rng: np.random.Generator | None = None, jitter: float = 0.04) -> np.ndarray:
    """The image (32, 32, 3) float32 in [0, 1]; ``rng`` adds colour and background-lightness jitter."""
    colour = np.array(COLOURS[spec.colour], dtype=np.float32)
    bg = np.full(3, BACKGROUNDS[spec.background], dtype=np.float32)
    if rng is not None and jitter > 0:
        colour = colour + rng.uniform(-jitter, jitter, 3).astype(np.float32)
        bg = bg + np.float32(rng.uniform(-jitter, jitter))
    xs, ys = _grid(RESOLUTION, SUPERSAMPLE)
    mask = shape_mask(spec.shape, spec.size, spec.cx, spec.cy, xs, ys).astype(np.float32)
    alpha = mask.reshape(RESOLUTION, SUPERSAMPLE, RESOLUTION, SUPERSAMPLE).mean(axis=(1, 3))[..., None]
    image = bg * (1 - alpha) + np.clip(colour, 0, 1) * alpha
    return np.clip(image, 0, 1).astype(np.float32)


def make_dataset(
    n: int,
    seed: int = 0,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    backgrounds: Sequence[str] = tuple(BACKGROUNDS),
) -> tuple[np.ndarray, list[ToySpec]]:
    """``n`` random images (n, 32, 32, 3) float32 in [0, 1] and their specs; a pure function of ``seed``."""
    rng = np.random.default_rng(seed)
    specs = [random_spec(rng, shapes, colours, backgrounds) for _ in range(n)]
    images = np.stack([draw(s, rng) for s in specs]) if specs else np.zeros((0, RESOLUTION, RESOLUTION, 3), np.float32)
    return images, specs


def to_pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))


def save_reference_set(
    folder,
    specs: Sequence[ToySpec],
    seed: int = 0,
) -> list:
    """Draw ``specs`` into ``folder`` as PNGs (reference images for ``dreamdist train``)."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, spec in enumerate(specs):
        path = folder / f"{i:03d}_{spec.colour}_{spec.shape}.png"
        to_pil(draw(spec, rng)).save(path)
        paths.append(path)
    return paths


def random_specs(
    n: int,
    seed: int,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    backgrounds: Sequence[str] = tuple(BACKGROUNDS),
) -> list[ToySpec]:
    rng = np.random.default_rng(seed)
    return [random_spec(rng, shapes, colours, backgrounds) for _ in range(n)]
