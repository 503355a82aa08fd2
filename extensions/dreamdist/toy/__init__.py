"""A toy world: procedurally drawn captioned shapes, a rule-based classifier for them, and the small
text-to-image model trained on them that ships with dreamdist (``toy_model_path()``)."""

from __future__ import annotations

from pathlib import Path

from dreamdist.toy.classify import ToyLabel, classify
from dreamdist.toy.shapes import BACKGROUNDS, COLOURS, SHAPES, ToySpec, caption_for, draw, make_dataset


def toy_model_path() -> Path:
    """The shipped toy model folder (diffusers format), ``dreamdist/toy/model``."""
    return Path(__file__).resolve().parent / "model"


__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "SHAPES",
    "ToyLabel",
    "ToySpec",
    "caption_for",
    "classify",
    "draw",
    "make_dataset",
    "toy_model_path",
]
