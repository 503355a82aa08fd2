"""The toy world: generator + rule-based classifier, the shipped toy model, its training script and
the fidelity benchmark (on a 2-step budget)."""

from __future__ import annotations

import numpy as np
import pytest

from dreamdist.toy import BACKGROUNDS, COLOURS, SHAPES, ToySpec, classify, draw, make_dataset


def test_dataset_is_a_pure_function_of_the_seed():
    a, specs_a = make_dataset(8, seed=3)
    b, specs_b = make_dataset(8, seed=3)
    c, _ = make_dataset(8, seed=4)
    assert specs_a == specs_b and np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1


def test_captions_use_the_tiny_vocabulary_only():
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
