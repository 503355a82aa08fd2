"""2D sampling: prompt samples from a learned distribution -> a diffusers pipeline -> images.

Modules, bottom up, one job each:

- ``render``: the ``Sampler`` wraps a loaded pipeline (anything whose ``__call__`` takes
  ``prompt_embeds``, ``negative_prompt_embeds`` and ``latents``) and renders ``Shot``s: one image
  each, from a ``FeatureGaussian`` or a ``GaussianMixture`` (which first picks the seed's
  component), a seed and a gamma, batched, with seeded noise. Prompt samples come from the core's
  one sampling path (their ``sample_seeds``, which ``PromptDistribution.sample`` also uses).
  ``render_grid`` is the one-call preview used during training: a ready Gaussian in, a grid PNG out.
- ``settings``: ``SampleSettings``, the one object the sampling commands take, and every check of
  their arguments.
- ``run_folder``: the run folder: a staging folder with the user's umask, PNGs with their
  parameters in text chunks, ``grid.png``, ``manifest.json``, renamed into place when complete.
- ``commands``: ``sample`` / ``sweep_gamma`` / ``mix_row``, the runs behind ``dreamdist sample``,
  ``sweep-gamma`` and ``mix``, and ``regenerate_command``.

Reproducibility. Image ``i`` of a run uses seed ``seed + i`` for everything random about it: its
mixture component, its prompt sample w (``standard_normal(shape, seed)``, the core's draw), its
initial latent noise and any per-step scheduler noise. Latent and step noise come from dedicated CPU
generators seeded with values *derived* from the image seed (``derived_seed``): seeding them with
the seed itself would make the latent noise equal to the first entries of w (the same generator
stream), coupling prompt and noise. Every pipeline call runs exactly ``batch_size`` images (a short
last batch is padded with copies and the copies discarded), because kernels pick their blocking by
batch shape and a batch of 1 differs from a batch of 4 in the last bits. So an image depends only on
its seed, its gamma/template/files and the batch size: ``--index 7`` or ``--seed 7 --n 1`` rebuild
image 7 of a run bit for bit on the same device and precision, provided ``--batch-size`` is the
same.
"""

from __future__ import annotations

from dreamdist.core.seeds import MAX_SEED, derived_seed
from dreamdist.sampling.commands import mix_row, regenerate_command, sample, settings_of, sweep_gamma
from dreamdist.sampling.render import (
    RenderSettings,
    RenderStats,
    Sampler,
    Shot,
    latent_noise,
    render_grid,
    step_generator,
)
from dreamdist.sampling.run_folder import (
    DEFAULT_ROOT,
    GRID_NAME,
    MANIFEST_NAME,
    GridSpec,
    RunFolder,
    RunResult,
    Staging,
    resolve_out_dir,
)
from dreamdist.sampling.settings import DEFAULT_GAMMAS, SampleSettings, check_number_ranges, mix_weights

__all__ = [
    "DEFAULT_GAMMAS",
    "DEFAULT_ROOT",
    "GRID_NAME",
    "MANIFEST_NAME",
    "MAX_SEED",
    "GridSpec",
    "RenderSettings",
    "RenderStats",
    "RunFolder",
    "RunResult",
    "SampleSettings",
    "Sampler",
    "Shot",
    "Staging",
    "check_number_ranges",
    "derived_seed",
    "latent_noise",
    "mix_row",
    "mix_weights",
    "regenerate_command",
    "render_grid",
    "resolve_out_dir",
    "sample",
    "settings_of",
    "step_generator",
    "sweep_gamma",
]
