"""Sampling parameters stored in PNG text chunks, so every image says how to make it again.

Each image gets one ``dreamdist`` chunk holding all parameters as JSON (what ``read_png_params``
returns) plus one readable chunk per parameter (``seed``, ``gamma``, ``template``...), which image
viewers and ``exiftool``/``identify -verbose`` show as they are. Text that is not Latin-1 goes into
iTXt chunks (UTF-8); Pillow picks the chunk type.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from dreamdist.utils.errors import InputError
from dreamdist.version import __version__

JSON_KEY = "dreamdist"
SOFTWARE_KEY = "Software"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def png_info(params: Mapping[str, Any]) -> PngInfo:
    """A ``PIL.PngImagePlugin.PngInfo`` with ``params`` as one JSON chunk + one chunk per key."""
    info = PngInfo()
    info.add_text(SOFTWARE_KEY, f"dreamdist {__version__}")
    info.add_itxt(JSON_KEY, json.dumps(dict(params), sort_keys=True, default=str))
    for key, value in params.items():
        if key in (JSON_KEY, SOFTWARE_KEY):
            continue
        info.add_text(str(key), _text(value))
    return info


def save_png(image: Image.Image, path: str | os.PathLike, params: Mapping[str, Any], compress_level: int = 4) -> Path:
    """Write ``image`` as PNG with ``params`` in its text chunks. Not atomic on its own: callers write
    into a staging folder (see ``dreamdist.sampling.run_folder``) or through ``dreamdist.atomic``."""
    path = Path(path)
    image.save(path, format="PNG", pnginfo=png_info(params), compress_level=compress_level)
    return path


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """Every text chunk of a PNG (tEXt, zTXt, iTXt) as strings."""
    try:
        with Image.open(path) as im:
            im.load()
            return {str(k): str(v) for k, v in getattr(im, "text", {}).items()}
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: not a readable PNG ({exc})") from None


def read_png_params(path: str | os.PathLike) -> dict[str, Any]:
    """The parameters dreamdist stored in ``path`` (the JSON chunk), or a clear error if there are none."""
    text = read_png_text(path)
    if JSON_KEY not in text:
        raise InputError(f"{path}: no dreamdist parameters in this PNG (was it written by `dreamdist sample`?)")
    try:
        return json.loads(text[JSON_KEY])
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: damaged dreamdist parameters chunk ({exc})") from None
