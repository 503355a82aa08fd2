"""A small deterministic classifier for toy images: no learned weights.

- Foreground: toy backgrounds are achromatic and shapes saturated, so a pixel is foreground when its
  chroma (max - min of RGB) exceeds ``CHROMA_THRESHOLD``; only the largest 4-connected component counts.
- Colour: hue of the foreground's mean RGB, nearest of the toy colours' hues (within ``MAX_HUE_GAP``
  degrees, else "other").
- Shape: intersection-over-union of the foreground mask with an ideal square, circle and upright
  triangle fitted to the mask's bounding box; the best one wins if its IoU reaches ``MIN_IOU``, else
  "unknown" (a blob is not a recognisable shape).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from dreamdist.toy.shapes import COLOURS, SHAPES, shape_mask

CHROMA_THRESHOLD = 0.25
MIN_AREA = 12  # pixels at 32x32
MAX_HUE_GAP = 40.0  # degrees
MIN_IOU = 0.75
COLOUR_HUES = {name: colorsys.rgb_to_hsv(*rgb)[0] * 360 for name, rgb in COLOURS.items()}


@dataclass(frozen=True)
class ToyLabel:
    colour: str  # one of COLOURS, "other" or "none" (no foreground)
    shape: str  # one of SHAPES, "unknown" or "none"
    iou: float = 0.0  # IoU of the winning shape template
    area: int = 0

    @property
    def recognised(self) -> bool:
        return self.colour in COLOURS and self.shape in SHAPES

    def __str__(self) -> str:
        return f"{self.colour} {self.shape}"


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 4-connected component of a small boolean mask (plain flood fill, no scipy)."""
    h, w = mask.shape
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, current = 0, 0, 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        current += 1
        labels[y0, x0] = current
        stack, size = [(y0, x0)], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    return labels == best if best else np.zeros_like(mask)


def _hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def to_array(image) -> np.ndarray:
    """PIL image, uint8 or float array (H, W, 3) -> float32 array in [0, 1]."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    return array.astype(np.float32)


def foreground(rgb: np.ndarray) -> np.ndarray:
    """The shape's pixels: the largest connected region of coloured (non-grey) pixels."""
    return _largest_component(rgb.max(axis=-1) - rgb.min(axis=-1) > CHROMA_THRESHOLD)


def shape_ious(mask: np.ndarray) -> dict[str, float]:
    """IoU of the foreground ``mask`` with each ideal shape fitted to its bounding box."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    h, w = mask.shape
    gx, gy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5, indexing="xy")
    # Stretch pixel coordinates so the bounding box becomes a square of side `size`.
    size = float(max(x1 - x0, y1 - y0))
    sx = (gx - (x0 + x1) / 2) * size / (x1 - x0)
    sy = (gy - (y0 + y1) / 2) * size / (y1 - y0)
    ious = {}
    for shape in SHAPES:
        ideal = shape_mask(shape, size, 0.0, 0.0, sx, sy)
        ious[shape] = float((ideal & mask).sum() / max(1, (ideal | mask).sum()))
    return ious


def classify(image) -> ToyLabel:
    """Label one toy image (PIL image or (H, W, 3) array) with its colour and shape."""
    rgb = to_array(image)[..., :3]
    mask = foreground(rgb)
    area = int(mask.sum())
    if area < MIN_AREA:
        return ToyLabel("none", "none", 0.0, area)

    r, g, b = rgb[mask].mean(axis=0)
    hue = colorsys.rgb_to_hsv(float(r), float(g), float(b))[0] * 360
    gaps = {name: _hue_distance(hue, h) for name, h in COLOUR_HUES.items()}
    colour = min(gaps, key=gaps.get)
    if gaps[colour] > MAX_HUE_GAP:
        colour = "other"

    ious = shape_ious(mask)
    shape = max(ious, key=ious.get)
    iou = ious[shape]
    if iou < MIN_IOU:
        shape = "unknown"
    return ToyLabel(colour, shape, iou, area)
