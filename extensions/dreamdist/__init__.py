"""dreamdist: learn a prompt distribution (DreamDistribution, Zhao et al. 2023) from reference images
and sample endless 2D images and 3D assets in their style.

The core never imports threestudio; see custom/threestudio-dreamdist for the 3D glue.
"""

__version__ = "0.1.0"
