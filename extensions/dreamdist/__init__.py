"""dreamdist: learn a prompt distribution (DreamDistribution, Zhao et al. 2023) from reference images
and sample endless 2D images and 3D assets in their style.

The Python API (``load``, ``mix``, ``train_distribution``, ``Distribution``) lives in ``dreamdist.api``
and is imported on first use, so ``import dreamdist`` and the CLI start without loading torch.
The core never imports threestudio; see custom/threestudio-dreamdist for the 3D glue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dreamdist.version import __version__

__all__ = ["Distribution", "load", "mix", "train_distribution", "__version__"]

if TYPE_CHECKING:
    from dreamdist.api import Distribution, load, mix, train_distribution


def __getattr__(name: str) -> Any:
    if name in ("Distribution", "load", "mix", "train_distribution"):
        from dreamdist import api

        return getattr(api, name)
    raise AttributeError(f"module 'dreamdist' has no attribute {name!r}")
