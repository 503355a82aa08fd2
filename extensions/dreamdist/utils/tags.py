"""The trial tag that names a 3D asset's distribution: one rule for the threestudio configs (the
extension's ``dreamdist_tag`` resolver) and for ``dreamdist batch``, which must find those trial folders."""

from __future__ import annotations

import os
from typing import Any, Sequence

SUFFIXES = (".safetensors", ".pt")


def file_stem(path: Any) -> str:
    """ "cats" for ".../cats.safetensors" (also for a folder path with a trailing slash)."""
    name = os.path.basename(str(path).rstrip("/\\"))
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def distribution_tag(
    distribution: str | os.PathLike | Sequence[Any] | None = None, reference_images: Any = None
) -> str:
    """ "cats", "cats+dogs" for a mix, "ref-photos" for a reference-image folder. Spaces become
    underscores, as threestudio's rmspace does."""
    if distribution is not None and not isinstance(distribution, (str, os.PathLike)):
        name = "+".join(file_stem(p) for p in distribution)
    elif distribution:
        name = file_stem(distribution)
    elif reference_images:
        name = "ref-" + file_stem(reference_images)
    else:
        name = "no-distribution"
    return name.replace(" ", "_") or "distribution"
