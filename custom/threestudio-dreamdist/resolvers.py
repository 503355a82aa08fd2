"""OmegaConf resolvers the dreamdist configs use; no threestudio import, so tests can load it alone."""

from __future__ import annotations

import os
from typing import Any

TAG_RESOLVER = "dreamdist_tag"


def _stem(path: Any) -> str:
    name = os.path.basename(str(path).rstrip("/\\"))
    for suffix in (".safetensors", ".pt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def dreamdist_tag(distribution: Any = None, reference_images: Any = None) -> str:
    """A trial tag naming the distribution(s): "cats", "cats+dogs" for a mix, "ref-photos" for a
    reference-image folder. Spaces become underscores, as threestudio's rmspace does."""
    if distribution is not None and not isinstance(distribution, str):
        name = "+".join(_stem(p) for p in distribution)
    elif distribution:
        name = _stem(distribution)
    elif reference_images:
        name = "ref-" + _stem(reference_images)
    else:
        name = "no-distribution"
    return name.replace(" ", "_") or "distribution"


def register_resolvers() -> None:
    import warnings

    from omegaconf import OmegaConf

    with warnings.catch_warnings():  # omegaconf 2.4 renames it; threestudio pins 2.3
        warnings.simplefilter("ignore")
        OmegaConf.register_new_resolver(TAG_RESOLVER, dreamdist_tag, replace=True)
