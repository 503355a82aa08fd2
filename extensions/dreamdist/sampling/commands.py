"""The runs behind ``dreamdist sample``, ``sweep-gamma`` and ``mix``, and the command that rebuilds
one image of them.

Each run: check its ``SampleSettings``, load the files, pick the run folder, load the model, fit each
Gaussian once, then render every ``Shot`` into a ``RunFolder``. Every image's PNG records the run's
parameters and a ``dreamdist sample`` command line that rebuilds it alone (``regenerate_command``).
"""

from __future__ import annotations

import math
import os
import shlex
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from dreamdist.core.distfile import DistributionFile, file_sha256, load_distribution
from dreamdist.core.gaussian import check_weights, normalised_weights
from dreamdist.core.mixture import GaussianMixture, mix_mixtures
from dreamdist.core.runtime import precision_name
from dreamdist.sampling.render import Sampler, Shot
from dreamdist.sampling.run_folder import GridSpec, RunFolder, RunResult, resolve_out_dir
from dreamdist.sampling.settings import DEFAULT_GAMMAS, SampleSettings, mix_weights
from dreamdist.utils.errors import InputError

PathLike = str | os.PathLike


def settings_of(settings: SampleSettings | None, options: Mapping[str, Any], **defaults: Any) -> SampleSettings:
    """``settings`` (or one made of the command's ``defaults``) with the keyword ``options`` on top."""
    unknown = set(options) - SampleSettings.names()
    if unknown:
        raise TypeError(f"unknown sampling setting(s): {', '.join(sorted(unknown))}")
    return replace(settings or SampleSettings(**defaults), **options)


# --------------------------------------------------------------------------- shared run steps


@dataclass
class _Run:
    """A run with everything checked and loaded, before anything is written."""

    sampler: Sampler
    files: list[DistributionFile]
    out_dir: Path
    settings: SampleSettings
    templates: list[str]  # the template each file is encoded in: --template, or the file's own
    load_s: float
    started: float = field(default_factory=time.perf_counter)

    @property
    def template(self) -> str | None:
        """The one template every file is encoded in; None when the files' own templates differ."""
        return self.templates[0] if len(set(self.templates)) == 1 else None

    @property
    def template_label(self) -> str:
        return self.template if self.template is not None else " | ".join(self.templates)

    @classmethod
    def prepare(
        cls,
        paths: Sequence[PathLike],
        out: PathLike | None,
        default_name: str,
        settings: SampleSettings,
        sampler: Sampler | None,
    ) -> _Run:
        files = [load_distribution(p) for p in paths]  # unknown/corrupt file: one clear line
        out_dir = resolve_out_dir(out, default_name)
        began = time.perf_counter()
        if sampler is None:
            sampler = Sampler.load(settings.model or files[0].base_model, settings.device, settings.precision)
        sampler.image_size(settings.height, settings.width)
        load_s = time.perf_counter() - began
        templates = [settings.template or f.template for f in files]
        return cls(sampler, files, out_dir, settings, templates, load_s)

    def params(self, weights: Sequence[float] | None, command: str) -> dict[str, Any]:
        """What every PNG and the manifest record about the run (``weights=None``: per image)."""
        s, sampler = self.settings, self.sampler
        h, w = sampler.image_size(s.height, s.width)
        params: dict[str, Any] = {
            "command": command,
            "files": [str(Path(f.path).resolve()) for f in self.files],
            "file_sha256": [file_sha256(f.path) for f in self.files],
            "weights": [float(x) for x in weights or ()],
            "mix_rule": s.mix_rule,
            "std_scale": s.std_scales(self.files),
            "template": self.template,
            "negative": s.negative,
            "steps": s.steps,
            "guidance_scale": float(s.guidance_scale),
            "batch_size": s.batch_size,
            "height": h,
            "width": w,
            "model": sampler.model,
            "pipeline": type(sampler.pipe).__name__,
            "scheduler": type(getattr(sampler.pipe, "scheduler", None)).__name__,
            "device": sampler.device.type,
            "precision": precision_name(sampler.dtype),
        }
        if weights is None:
            del params["weights"]
        if self.template is None:  # no --template and the files were trained in different ones
            params["templates"] = list(self.templates)
        return params

    def write(self, shots: Sequence[Shot], run_params: Mapping[str, Any], grid: GridSpec, fit_s: float) -> RunResult:
        """Render ``shots`` into the run folder: PNGs with ``run_params`` plus each image's own
        parameters and regenerate command, ``grid.png`` and ``manifest.json``."""
        sampler, render = self.sampler, self.settings.render
        began = time.perf_counter()
        pipeline_before = sampler.stats.pipeline_s
        with RunFolder(self.out_dir, grid, sampler.image_size(render.height, render.width)) as folder:
            for shot, image in sampler.render(shots, render, self.settings.progress):
                params = {**run_params, "seed": shot.seed, "gamma": shot.gamma, **shot.params}
                params["regenerate"] = regenerate_command(params)
                folder.add(shot, image, params)
            folder.write_grid()
            timing = {
                "render_and_save_s": round(time.perf_counter() - began, 4),
                "pipeline_s": round(sampler.stats.pipeline_s - pipeline_before, 4),
            }
            folder.write_manifest(run_params, timing)
        timing = {
            **timing,
            "load_s": round(self.load_s, 4),
            "fit_s": round(fit_s, 4),
            "total_s": round(time.perf_counter() - self.started, 4),
        }
        return folder.result(timing)


def regenerate_command(params: Mapping[str, Any]) -> str:
    """The `dreamdist sample` command line that rebuilds one image from its recorded parameters."""
    argv = ["dreamdist", "sample", *params["files"]]
    if len(params["files"]) > 1:
        argv += ["--weights", *(repr(float(w)) for w in params["weights"]), "--mix-rule", params["mix_rule"]]
    if any(float(x) != 1.0 for x in params.get("std_scale", ())):
        argv += ["--std-scale", *(repr(float(x)) for x in params["std_scale"])]
    if params["template"] is not None:  # None: each file in its own training template, the default
        argv += ["--template", params["template"]]
    argv += [
        "--gamma",
        repr(float(params["gamma"])),
        "--seed",
        str(params["seed"]),
        "--n",
        "1",
        "--batch-size",
        str(params["batch_size"]),
        "--steps",
        str(params["steps"]),
        "--guidance-scale",
        repr(float(params["guidance_scale"])),
        "--model",
        params["model"],
        "--height",
        str(params["height"]),
        "--width",
        str(params["width"]),
        "--precision",
        params["precision"],
    ]
    if params.get("negative"):
        argv += ["--negative", params["negative"]]
    return shlex.join(argv)


# --------------------------------------------------------------------------- the three commands


def sample(
    files: Sequence[PathLike],
    out: PathLike | None = None,
    settings: SampleSettings | None = None,
    *,
    sampler: Sampler | None = None,
    command: str = "sample",
    **options: Any,
) -> RunResult:
    """Sample ``n`` images (or the images ``indices``) from the mix of ``files`` into ``out``.

    ``settings`` and/or keyword ``options`` (``SampleSettings`` fields: ``gamma``, ``n``, ``steps``...).
    Image i uses seed ``seed + i``. With several gammas, every gamma gets the same seeds and the grid
    has one row per gamma (Figure 5). Everything is validated (template, files, weights, text
    encoder, out folder) before anything is written; a failure leaves no output folder behind.
    ``sampler``: an already loaded model to use instead of loading ``settings.model``.
    """
    settings = settings_of(settings, options)
    settings.check(files)
    weights = normalised_weights(check_weights(settings.weights, [str(f) for f in files], "--weights"))
    name = "+".join(Path(f).stem for f in files)
    run = _Run.prepare(files, out, name, settings, sampler)
    began = time.perf_counter()
    dist = run.sampler.distribution(run.files, weights, settings.mix_rule, settings.std_scale)
    gaussian = dist.mixture(settings.template)  # fitted once per run
    run.sampler.negative_embeds(settings.negative)
    fit_s = time.perf_counter() - began

    if len(settings.gammas) > 1 or command == "sweep-gamma":
        shots, grid = _gamma_rows(gaussian, settings, title=f"{name}: {run.template_label}")
    else:
        shots, grid = _contact_sheet(gaussian, settings)
    params = {**run.params(dist.weights, command), "base_seed": settings.seed, "gammas": settings.gammas}
    return run.write(shots, params, grid, fit_s)


def shot_params(gaussian: GaussianMixture, seed: int, **params: Any) -> dict[str, Any]:
    """An image's own parameters, with the mixture component its seed drew when there are several."""
    if len(gaussian) > 1:
        params["component"] = gaussian.pick(seed)
    return params


def _gamma_rows(gaussian: GaussianMixture, settings: SampleSettings, title: str) -> tuple[list[Shot], GridSpec]:
    """Figure 5: one row per gamma, the same seeds in every row."""
    idx, seeds, gammas = settings.image_indices, settings.seeds, settings.gammas
    shots = [
        Shot(gaussian, s, g, f"gamma{g:g}-seed{s:06d}.png", r, c, params=shot_params(gaussian, s, index=i))
        for r, g in enumerate(gammas)
        for c, (i, s) in enumerate(zip(idx, seeds))
    ]
    rows, cols = [f"gamma {g:g}" for g in gammas], [f"seed {s}" for s in seeds]
    return shots, GridSpec(len(gammas), len(seeds), rows, cols, title=title)


def _contact_sheet(gaussian: GaussianMixture, settings: SampleSettings) -> tuple[list[Shot], GridSpec]:
    """One gamma: a near-square sheet, each image captioned with its seed."""
    seeds, gamma = settings.seeds, settings.gammas[0]
    cols = math.ceil(math.sqrt(len(seeds)))
    shots = [
        Shot(
            gaussian, s, gamma, f"seed{s:06d}.png", k // cols, k % cols, f"seed {s}", shot_params(gaussian, s, index=i)
        )
        for k, (i, s) in enumerate(zip(settings.image_indices, seeds))
    ]
    return shots, GridSpec(math.ceil(len(seeds) / cols), cols)


def sweep_gamma(
    files: Sequence[PathLike],
    out: PathLike | None = None,
    settings: SampleSettings | None = None,
    *,
    sampler: Sampler | None = None,
    **options: Any,
) -> RunResult:
    """Figure-5-style grid: rows are the gammas (default ``DEFAULT_GAMMAS``), columns the same ``n``
    seeds (default 4) in every row. ``gammas=`` is accepted for ``gamma=``."""
    if "gammas" in options:
        options["gamma"] = options.pop("gammas")
    settings = settings_of(settings, options, gamma=DEFAULT_GAMMAS, n=4)
    return sample(files, out, settings, sampler=sampler, command="sweep-gamma")


def mix_row(
    file_a: PathLike,
    file_b: PathLike,
    out: PathLike | None = None,
    settings: SampleSettings | None = None,
    *,
    steps_between: int = 5,
    sampler: Sampler | None = None,
    **options: Any,
) -> RunResult:
    """Figure-6-style interpolation: columns mix A and B with weights (1 - t, t), t from 0 to 1 in
    ``steps_between + 1`` steps (eq. 7); rows are ``n`` seeds (default 1), the same in every column.
    Each file is fitted once (in ``template``, or its own training template), its sigma scaled by its
    ``std_scale``; the columns mix the two fitted Gaussians."""
    ts = mix_weights(steps_between)
    settings = settings_of(settings, options, n=1)
    if settings.indices or settings.weights is not None or len(settings.gammas) != 1:
        raise InputError("mix takes one gamma, --n rows and its weights from --steps-between")
    settings.check([file_a, file_b])
    gamma = settings.gammas[0]
    name_a, name_b = Path(file_a).stem, Path(file_b).stem
    run = _Run.prepare([file_a, file_b], out, f"{name_a}--{name_b}", settings, sampler)
    began = time.perf_counter()
    pair = run.sampler.distribution(run.files, std_scale=settings.std_scale).file_mixtures(settings.template)
    columns = [mix_mixtures(pair, [1.0 - t, t], settings.mix_rule) for t in ts]
    run.sampler.negative_embeds(settings.negative)
    fit_s = time.perf_counter() - began

    shots = []
    for r, (i, s) in enumerate(zip(settings.image_indices, settings.seeds)):
        for c, (t, g) in enumerate(zip(ts, columns)):
            shots.append(
                Shot(
                    g,
                    s,
                    gamma,
                    f"mix{c:02d}-seed{s:06d}.png",
                    r,
                    c,
                    params=shot_params(g, s, index=i, weights=[1.0 - t, t], column=c),
                )
            )
    seeds = settings.seeds
    grid = GridSpec(
        len(seeds),
        len(ts),
        [f"seed {s}" for s in seeds],
        [f"{1 - t:.2f} / {t:.2f}" for t in ts],
        title=f"{name_a}  ->  {name_b}",
    )
    params = {
        **run.params(None, "mix"),  # each column has its own weights, in its image parameters
        "base_seed": settings.seed,
        "gammas": [gamma],
        "steps_between": steps_between,
        "column_weights": [[1 - t, t] for t in ts],
    }
    return run.write(shots, params, grid, fit_s)
