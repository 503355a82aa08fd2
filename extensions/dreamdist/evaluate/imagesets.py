"""Which images ``dreamdist evaluate`` compares: folders -> named groups of image paths.

- A ``dreamdist sample`` / ``sweep-gamma`` / ``mix`` output folder is recognised by its
  ``manifest.json``: its images are the ones the manifest lists (``grid.png`` is not one of them),
  the manifest says which distribution(s), template and gamma made them, and a folder with several
  gammas (a sweep) or mixing weights (a mix row) gives one group per gamma / weight, so one command
  compares them.
- A ``dreamdist batch`` output folder is recognised by its ``manifest.jsonl``: one group of the front
  stills of its finished assets (``dreamdist.evaluate.batchset``).
- Any other folder is one group of every image in it, listed by the project's one rule
  (``dreamdist.images.list_image_files``).

The evaluation itself (``dreamdist.evaluate.core``) takes plain lists of paths, so other producers of
images only need to build ``ImageGroup``s.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamdist.utils.errors import InputError
from dreamdist.utils.images import IMAGE_EXTENSIONS, list_image_files

# what `dreamdist sample` / `sweep-gamma` / `mix` write next to their images (dreamdist.sampling's
# MANIFEST_NAME; not imported from there so that reading image folders does not load the sampler)
MANIFEST_NAME = "manifest.json"


@dataclass
class ImageGroup:
    """One row of the report: ``label`` names it, ``info`` says where the images come from."""

    label: str
    paths: list[Path]
    info: dict[str, Any] = field(default_factory=dict)


def _check_folder(folder: Path, role: str) -> None:
    if not folder.exists():
        raise InputError(f"{folder}: no such folder; give the folder that holds the {role} images")
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file, not a folder; give the folder that holds the {role} images")
    if (
        not (folder / MANIFEST_NAME).is_file()
        and not (folder / "manifest.jsonl").is_file()
        and not any(
            p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") for p in folder.iterdir() if p.is_file()
        )
    ):
        raise InputError(
            f"{folder}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}); "
            f"give the folder that holds the {role} images"
        )


def reference_paths(folder: str | os.PathLike) -> list[Path]:
    """The reference images of ``folder`` (the listing rule training uses)."""
    folder = Path(folder)
    _check_folder(folder, "reference")
    return list_image_files(folder)


def _gamma_text(g: float) -> str:
    return f"gamma {g:g}"


def _distribution_names(manifest: dict) -> list[str]:
    return [Path(f).stem for f in manifest.get("files") or []]


def read_sample_manifest(folder: Path) -> dict:
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path}: not a readable manifest ({exc}); remove it to evaluate the folder's images as plain images"
        ) from None
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("images"), list)
        or not all(isinstance(e, dict) and isinstance(e.get("file"), str) for e in manifest["images"])
    ):
        raise InputError(
            f"{path}: not a dreamdist sample manifest (no list of images); remove it to evaluate "
            "the folder's images as plain images"
        )
    return manifest


def generated_groups(folder: str | os.PathLike, crop_dir: str | os.PathLike | None = None) -> list[ImageGroup]:
    """The groups of one GENERATED folder (see the module doc). ``crop_dir``: where a batch folder's
    cropped stills are written (default: a new temporary folder)."""
    folder = Path(folder)
    _check_folder(folder, "generated")
    if not (folder / MANIFEST_NAME).is_file():
        from dreamdist.evaluate.batchset import batch_group, is_batch_folder

        if is_batch_folder(folder):
            return [batch_group(folder, crop_dir)]
        return [ImageGroup(folder.name, list_image_files(folder), {"folder": str(folder)})]

    manifest = read_sample_manifest(folder)
    entries = manifest["images"]
    if not entries:
        raise InputError(f"{folder / MANIFEST_NAME}: lists no images")
    missing = [e["file"] for e in entries if not (folder / e["file"]).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise InputError(
            f"{folder}: {len(missing)} image(s) that {MANIFEST_NAME} lists are missing ({shown}); "
            "re-run the sample command, or remove the manifest to evaluate the images that are there"
        )
    names = _distribution_names(manifest)
    base = {
        "folder": str(folder),
        "command": manifest.get("command"),
        "distributions": names,
        "template": manifest.get("template"),
        "model": manifest.get("model"),
        "mix_rule": manifest.get("mix_rule"),
    }
    if manifest.get("weights") is not None:
        base["weights"] = manifest["weights"]
    title = "+".join(names) or folder.name

    # key -> (label, info, paths), in first-seen order
    groups: dict[Any, tuple[str, dict, list[Path]]] = {}
    multi_gamma = len({float(e.get("gamma", 0.0)) for e in entries}) > 1
    for e in entries:
        gamma = float(e["gamma"]) if e.get("gamma") is not None else None
        info = {**base, "gamma": gamma}
        if manifest.get("command") == "mix" and e.get("weights") is not None:
            weights = [float(w) for w in e["weights"]]
            key = ("mix", tuple(weights))
            label = f"{title} {' / '.join(f'{w:.2f}' for w in weights)}"
            info["weights"] = weights
        elif multi_gamma:
            key = ("gamma", gamma)
            label = f"{title} {_gamma_text(gamma)}"
        else:
            key = "all"
            label = f"{title} {_gamma_text(gamma)}" if gamma is not None else title
        if key not in groups:
            groups[key] = (label, info, [])
        groups[key][2].append(folder / e["file"])
    return [ImageGroup(label, paths, info) for label, info, paths in groups.values()]
