"""Contact sheets and labelled grids (the paper's Figure 5 / Figure 6 layouts) with Pillow only."""

from __future__ import annotations

import math
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MIN_TILE = 64  # tiny test-model images (32 px) are enlarged so captions stay readable
MAX_TILE = 256  # big images are shrunk: a sheet is an overview, the PNGs are the real thing
MAX_SHEET_WIDTH = 8192


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def tile_size(image_size: tuple[int, int], cols: int, tile: int | None = None) -> tuple[int, int]:
    """(width, height) of one tile: the longer side clamped to [MIN_TILE, MAX_TILE] (and to the
    sheet's width limit), aspect ratio kept."""
    w, h = image_size
    side = tile if tile is not None else max(MIN_TILE, min(MAX_TILE, max(w, h)))
    side = max(16, min(side, MAX_SHEET_WIDTH // max(cols, 1)))
    scale = side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def fit_tile(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to ``size``: nearest-neighbour when enlarging (keeps pixels honest), Lanczos when shrinking."""
    if image.size == size:
        return image.convert("RGB")
    enlarge = size[0] > image.size[0]
    return image.convert("RGB").resize(size, Image.NEAREST if enlarge else Image.LANCZOS)


def labelled_grid(
    rows: Sequence[Sequence[Image.Image | None]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    tile: int | None = None,
    pad: int = 4,
) -> Image.Image:
    """A grid of images: ``rows[r][c]`` (None leaves a blank cell), optional labels to the left of
    each row and above each column, an optional caption under each cell and a title on top."""
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    first = next((im for r in rows for im in r if im is not None), None)
    if first is None:
        raise ValueError("labelled_grid needs at least one image")
    tw, th = tile_size(first.size, n_cols, tile)
    font_size = max(10, min(18, tw // 6))
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(probe, "Ag", font)[1] + 4

    left = 0
    if row_labels:
        left = max(_text_size(probe, str(t), font)[0] for t in row_labels) + 2 * pad
    top = line_h + pad if col_labels else 0
    head = line_h + pad if title else 0
    cap_h = line_h if captions else 0
    cell_w, cell_h = tw + pad, th + cap_h + pad
    width = left + n_cols * cell_w + pad
    height = head + top + n_rows * cell_h + pad
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)

    if title:
        draw.text((pad, pad // 2), title, fill=INK, font=font)
    for c, text in enumerate(col_labels or []):
        w, _ = _text_size(draw, str(text), font)
        x = left + pad + c * cell_w + max(0, (tw - w) // 2)
        draw.text((x, head + pad // 2), str(text), fill=INK, font=font)
    for r, row in enumerate(rows):
        y = head + top + pad + r * cell_h
        if row_labels:
            draw.text((pad, y + th // 2 - line_h // 2), str(row_labels[r]), fill=INK, font=font)
        for c, image in enumerate(row):
            x = left + pad + c * cell_w
            if image is not None:
                sheet.paste(fit_tile(image, (tw, th)), (x, y))
            if captions and r < len(captions) and c < len(captions[r]) and captions[r][c]:
                text = str(captions[r][c])
                w, _ = _text_size(draw, text, font)
                draw.text((x + max(0, (tw - w) // 2), y + th + 1), text, fill=INK, font=font)
    return sheet


def contact_sheet(
    images: Sequence[Image.Image],
    captions: Sequence[str] | None = None,
    cols: int | None = None,
    title: str | None = None,
    tile: int | None = None,
    pad: int = 4,
) -> Image.Image:
    """All ``images`` in a near-square grid (``cols`` per row, default ceil(sqrt(n))), each with
    its caption underneath (e.g. its seed)."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = [list(images[i : i + cols]) for i in range(0, len(images), cols)]
    caps = None
    if captions is not None:
        caps = [list(captions[i : i + cols]) for i in range(0, len(captions), cols)]
    return labelled_grid(rows, captions=caps, title=title, tile=tile, pad=pad)
