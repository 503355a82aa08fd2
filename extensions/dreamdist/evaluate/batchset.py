"""A ``dreamdist batch`` output folder as one group of images: the front still of every finished asset.

The folder is recognised by its ``manifest.jsonl`` (``dreamdist.batch.manifest``; the last record of a
seed gives its status). For every seed whose last record is ``done``, the still is the one the batch's
gallery shows (``dreamdist.batch.gallery.find_test_renders``): frame 0 (azimuth 0, threestudio's front
view) of the newest ``TRIAL/save/it{step}-test`` folder. That frame is threestudio's image grid
comp_rgb | comp_normal | opacity side by side; like the gallery, the still is its left square, the
colour panel (eval_height x eval_width, square in the shipped configs). The crops are written as PNGs
into ``crop_dir`` so that every encoder reads them like any other image.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dreamdist.evaluate.imagesets import ImageGroup
from dreamdist.utils.errors import InputError

BATCH_MANIFEST_NAME = "manifest.jsonl"  # dreamdist.batch.jobs.BatchSpec.manifest_path


def is_batch_folder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / BATCH_MANIFEST_NAME).is_file()


def colour_panel(image):
    """The left square of a test-render frame (its comp_rgb panel), as the gallery's tile crops it."""
    w, h = image.size
    side = min(w, h)
    return image.crop((0, 0, side, side)) if w > h else image


def _trial(folder: Path, rec: dict) -> Path:
    trial = Path(str(rec.get("trial_dir") or ""))
    return trial if trial.is_absolute() else folder / trial


def batch_group(folder: str | os.PathLike, crop_dir: str | os.PathLike | None = None) -> ImageGroup:
    """One group: the colour panel of the front still of each done seed, in seed order."""
    from dreamdist.batch.gallery import find_test_renders
    from dreamdist.batch.manifest import Manifest
    from dreamdist.utils.images import open_image

    folder = Path(folder)
    manifest = Manifest(folder / BATCH_MANIFEST_NAME)
    records = manifest.records()
    latest = manifest.latest(records)
    statuses: dict[str, int] = {}
    for rec in latest.values():
        statuses[str(rec.get("status"))] = statuses.get(str(rec.get("status")), 0) + 1
    done = sorted(seed for seed, rec in latest.items() if rec.get("status") == "done")
    if not done:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "no seed records"
        raise InputError(
            f"{folder}: a dreamdist batch folder with no finished seed yet ({counts}); "
            "evaluate it once at least one seed is done"
        )
    stills: dict[int, Path] = {}
    for seed in done:
        still = find_test_renders(_trial(folder, latest[seed]))[0]
        if still is not None:
            stills[seed] = still
    if not stills:
        raise InputError(
            f"{folder}: {len(done)} seed(s) done but no test renders (TRIAL/save/it*-test/0.png) "
            "in their trial folders; re-render them with threestudio's launch.py --test"
        )
    crop_dir = Path(crop_dir) if crop_dir is not None else Path(tempfile.mkdtemp(prefix="dreamdist-evaluate-"))
    crop_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, still in stills.items():
        path = crop_dir / f"seed{seed}-front.png"
        colour_panel(open_image(still)).save(path)
        paths.append(path)
    settings = next((r.get("settings") for r in reversed(records) if r.get("event") == "batch"), None) or {}
    names = [Path(str(d)).stem for d in settings.get("distributions") or []]
    info = {
        "folder": str(folder),
        "command": "batch",
        "distributions": names,
        "seeds": list(stills),
        "stills": [str(p) for p in stills.values()],
        "view": "test view 0 (front), colour panel",
        "seeds_not_done": sorted(set(latest) - set(done)),
        "done_without_renders": [s for s in done if s not in stills],
    }
    return ImageGroup(f"{'+'.join(names) or folder.name} batch", paths, info)
