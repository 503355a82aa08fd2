"""Reference images: a folder of jpg/png/webp/bmp/gif/tiff files -> square RGB tensors at the model's resolution.

Any size and mode is accepted: transparency (RGBA, LA, palette with a transparent colour) is
composited on white, grayscale/CMYK/16-bit are converted to 8-bit RGB, the EXIF orientation tag is
honoured, an animated GIF or a multi-page TIFF gives its first frame (as image viewers show it). Each
image is resized so its short side matches the resolution and centre-cropped; for random crops
(training's default, as the authors' train.py: resize the short side, then a random square crop)
the resized image is kept too, and ``crop_offsets`` gives the crop positions along its long side.

Every problem is an ``InputError`` naming the file and the fix; a single image (the paper notes that
few images are hard) or an image much smaller than the resolution is a ``ReferenceImageWarning``.
Nothing here writes anything.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dreamdist.utils.errors import InputError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Files that file managers drop into folders; never reference images, never worth an error.
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})


class ReferenceImageWarning(UserWarning):
    """Training will run, but the reference images are likely to give a poor distribution."""


# Random crops are drawn among at most this many evenly spaced positions per image (see crop_offsets).
MAX_CROP_POSITIONS = 33


@dataclass
class ReferenceImages:
    """``pixels`` (N, 3, R, R) float32 in [-1, 1], in the sorted order of ``paths``; with
    ``keep_resized``, ``resized`` holds each image (3, H, W) resized so its short side is R."""

    paths: list[Path]
    pixels: torch.Tensor
    resized: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def resolution(self) -> int:
        return int(self.pixels.shape[-1])

    def with_flips(self) -> torch.Tensor:
        """(2N, 3, R, R): the N images, then their horizontal mirror images in the same order."""
        return torch.cat([self.pixels, self.pixels.flip(-1)])

    def crops(self, index: int, step: int, max_positions: int = MAX_CROP_POSITIONS) -> torch.Tensor:
        """(n, 3, R, R): the square crops of resized image ``index`` at ``crop_offsets`` of its long side."""
        if self.resized is None:
            raise ValueError("load_reference_images(..., keep_resized=True) keeps the resized images")
        image, r = self.resized[index], self.resolution
        height, width = image.shape[-2:]
        if width >= height:
            return torch.stack([image[:, :r, x : x + r] for x in crop_offsets(width - r, step, max_positions)])
        return torch.stack([image[:, y : y + r, :r] for y in crop_offsets(height - r, step, max_positions)])


def crop_offsets(span: int, step: int, max_positions: int = MAX_CROP_POSITIONS) -> list[int]:
    """Evenly spaced crop offsets from 0 to ``span`` (both included), at most ``step`` pixels apart
    and at most ``max_positions`` of them; ``[0]`` for a square image. torchvision's RandomCrop (the
    authors') draws any of the span + 1 offsets; a uniform draw over these positions covers the same
    range, on a grid of ``step`` pixels (the VAE's latent pixel) instead of one."""
    if span <= 0:
        return [0]
    count = min(max_positions, -(-span // max(step, 1)) + 1)
    return [round(i * span / (count - 1)) for i in range(count)]


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of ``folder`` (not recursive), sorted by name. Hidden files (``.DS_Store``)
    and sub-folders are skipped; any other non-image file is refused, since a stray file in a
    reference folder is usually a mistake the user wants to hear about."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: no such folder; give the folder that holds your reference images")
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file, not a folder; give the folder that holds your reference images")
    images, others = [], []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.lower() in IGNORED_NAMES or entry.is_dir():
            continue
        (images if entry.suffix.lower() in IMAGE_EXTENSIONS else others).append(entry)
    if others:
        shown = ", ".join(p.name for p in others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise InputError(
            f"{others[0] if len(others) == 1 else folder}: not an image file ({shown}); reference folders may "
            f"only hold {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images: move other files out"
        )
    if not images:
        raise InputError(
            f"{folder}: no reference images found (looked for {', '.join(IMAGE_EXTENSIONS)}); "
            "put 5-20 images of your concept in it"
        )
    return images


def open_image(path: str | os.PathLike):
    """Decode ``path`` fully into an 8-bit RGB PIL image, upright per its EXIF orientation, with any
    transparency composited on white."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as opened:
            opened.seek(0)  # animated GIF / multi-page TIFF: the first frame
            opened.load()  # decode now: truncated or corrupt data fails here, not mid-training
            image = ImageOps.exif_transpose(opened) or opened
            image = _to_rgb(image)
    except UnidentifiedImageError:
        raise InputError(
            f"{path}: not a readable image (corrupt, or not really a {path.suffix} file); "
            "re-export it or remove it from the folder"
        ) from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: image too large to decode safely ({exc}); downscale it first") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"{path}: corrupt or truncated image ({exc}); re-export it or remove it from the folder"
        ) from None
    return image


def _to_rgb(image):
    from PIL import Image

    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):  # 16-bit / float grayscale
        array = np.asarray(image, dtype=np.float64)
        if mode == "F":
            top = max(float(array.max()), 1.0)
        else:  # 16-bit data; an "I" image whose values all fit in 8 bits is treated as 8-bit
            top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8)
        image = Image.fromarray(array, mode="L")
        mode = "L"
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode in ("L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB") if mode != "RGB" else image.copy()


def fit_square(image, resolution: int):
    """Resize so the short side is ``resolution``, then centre-crop to ``resolution`` x ``resolution``."""
    from PIL import Image, ImageOps

    return ImageOps.fit(image, (resolution, resolution), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))


def short_side_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) after resizing so the short side is ``resolution`` (torchvision's Resize rule:
    the long side is truncated, never below ``resolution``)."""
    if width <= height:
        return resolution, max(resolution, int(resolution * height / width))
    return max(resolution, int(resolution * width / height)), resolution


def fit_short_side(image, resolution: int):
    """Resize (bicubic, like ``fit_square``) so the short side is ``resolution``; no crop."""
    from PIL import Image

    return image.resize(short_side_size(*image.size, resolution), Image.Resampling.BICUBIC)


def to_tensor(image) -> torch.Tensor:
    """8-bit RGB PIL image -> (3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def check_reference_folder(folder: str | os.PathLike) -> list[Path]:
    """List and fully decode every image once (cheap errors before a model is loaded); warn about
    a single image. Returns the image paths."""
    paths = list_image_files(folder)
    for path in paths:
        open_image(path).close()
    if len(paths) == 1:
        warnings.warn(
            f"{Path(folder)}: only one reference image; a distribution learned from a single image "
            "has little to spread over (the paper notes few images are hard), 5-20 work best",
            ReferenceImageWarning,
            stacklevel=2,
        )
    return paths


def load_reference_images(
    folder: str | os.PathLike, resolution: int, paths: list[Path] | None = None, keep_resized: bool = False
) -> ReferenceImages:
    """Load every image of ``folder`` as a ``resolution``-pixel square (see module doc); with
    ``keep_resized``, also as resized to ``resolution`` on its short side (for random crops)."""
    if resolution < 8:
        raise InputError(f"--resolution must be at least 8 pixels, not {resolution}")
    if paths is None:
        paths = check_reference_folder(folder)
    small, tensors, resized = [], [], []
    for path in paths:
        image = open_image(path)
        if min(image.size) * 2 <= resolution:
            small.append(f"{path.name} ({image.size[0]}x{image.size[1]})")
        tensors.append(to_tensor(fit_square(image, resolution)))
        if keep_resized:
            resized.append(to_tensor(fit_short_side(image, resolution)))
        image.close()
    if small:
        warnings.warn(
            f"{len(small)} reference image(s) are at most half the training resolution {resolution} and "
            f"will be upscaled (blurry): {', '.join(small[:5])}{' ...' if len(small) > 5 else ''}",
            ReferenceImageWarning,
            stacklevel=2,
        )
    return ReferenceImages(list(paths), torch.stack(tensors), resized if keep_resized else None)
