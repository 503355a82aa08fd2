"""2D sampling: prompt samples from a learned distribution -> a diffusers pipeline -> images.

Layers, bottom up:

- ``Sampler`` wraps a loaded pipeline (anything whose ``__call__`` takes ``prompt_embeds``,
  ``negative_prompt_embeds`` and ``latents``) and renders ``Shot``s: one image each, from a
  ``FeatureGaussian``, a seed and a gamma. Prompt samples come from the core's one sampling path
  (``FeatureGaussian.sample_seeds``, which ``PromptDistribution.sample`` also uses).
- ``render_grid`` is the one-call preview used during training: a ready Gaussian in, a grid PNG out.
- ``sample`` / ``sweep_gamma`` / ``mix_row`` are the runs behind ``dreamdist sample``,
  ``sweep-gamma`` and ``mix``: validate everything, then write PNGs (parameters in text chunks),
  a grid and ``manifest.json`` into a staging folder that is renamed into place at the end.

Reproducibility. Image ``i`` of a run uses seed ``seed + i`` for everything random about it: its
prompt sample w (``standard_normal(shape, seed)``, the core's draw), its initial latent noise and any
per-step scheduler noise. Latent and step noise come from dedicated CPU generators seeded with
values *derived* from the image seed (``derived_seed``): seeding them with the seed itself would
make the latent noise equal to the first entries of w (the same generator stream), coupling prompt
and noise. Every pipeline call runs exactly ``batch_size`` images (a short last batch is padded
with copies and the copies discarded), because kernels pick their blocking by batch shape and a
batch of 1 differs from a batch of 4 in the last bits. So an image depends only on its seed, its
gamma/template/files and the batch size: ``--index 7`` or ``--seed 7 --n 1`` rebuild image 7 of a
run bit for bit on the same device and precision, provided ``--batch-size`` is the same.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shlex
import shutil
import time
import uuid
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from dreamdist.atomic import atomic_path
from dreamdist.distfile import DistributionFile, load_distribution
from dreamdist.distribution import PromptDistribution
from dreamdist.encoder import SoftPromptEncoder
from dreamdist.errors import InputError, MixError
from dreamdist.gaussian import MIX_RULES, FeatureGaussian, mix, standard_normal
from dreamdist.runtime import precision_name
from dreamdist.seeds import MAX_SEED, derived_seed
from dreamdist.templates import Template

DEFAULT_GAMMAS = (0.0, 0.5, 1.0, 1.5, 2.0)
DEFAULT_ROOT = Path("samples")
GRID_NAME = "grid.png"
MANIFEST_NAME = "manifest.json"


# --------------------------------------------------------------------------- seeds and noise


def latent_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """Initial latent noise (C, h, w) for image ``seed``: float32, CPU, device-independent."""
    return standard_normal(shape, derived_seed(seed, "latents"))


def step_generator(seed: int) -> torch.Generator:
    """CPU generator for the scheduler's per-step noise (ancestral/SDE schedulers) of image ``seed``."""
    return torch.Generator(device="cpu").manual_seed(derived_seed(seed, "scheduler"))


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, eq=False)
class Shot:
    """One image to make: prompt sample ``gaussian`` at ``seed`` scaled by ``gamma``. ``name`` is its
    file name in a run folder, ``row``/``col``/``caption`` its place in the grid, ``params`` extra
    per-image metadata."""

    gaussian: FeatureGaussian
    seed: int
    gamma: float = 1.0
    name: str = ""
    row: int = 0
    col: int = 0
    caption: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderSettings:
    steps: int = 50
    guidance_scale: float = 7.5
    negative: str = ""
    batch_size: int = 4
    height: int | None = None
    width: int | None = None

    def validate(self) -> None:
        if self.steps < 1:
            raise InputError(f"--steps must be at least 1, not {self.steps}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, not {self.batch_size}")
        if not math.isfinite(self.guidance_scale):
            raise InputError(f"--guidance-scale must be a finite number, not {self.guidance_scale}")
        for name, value in (("height", self.height), ("width", self.width)):
            if value is not None and (value < 8 or value % 8):
                raise InputError(f"--{name} must be a positive multiple of 8, not {value}")


@dataclass
class RenderStats:
    """Where the time of the renders so far went (seconds)."""

    pipeline_s: float = 0.0
    calls: int = 0
    images: int = 0
    padded: int = 0


# --------------------------------------------------------------------------- the sampler


class Sampler:
    """A loaded diffusers pipeline that renders images from prompt samples.

    ``pipe`` is any pipeline whose call takes ``prompt_embeds``, ``negative_prompt_embeds`` and
    ``latents`` and that has ``tokenizer``/``text_encoder`` (SD 2.1 and 2.1-base out of the box).
    """

    def __init__(self, pipe, model: str | os.PathLike | None = None) -> None:
        try:
            accepted = set(inspect.signature(pipe.__call__).parameters)
        except (TypeError, ValueError):  # some wrappers hide their signature: trust them
            accepted = {"prompt_embeds", "negative_prompt_embeds", "latents"}
        missing = {"prompt_embeds", "negative_prompt_embeds", "latents"} - accepted
        if missing and "kwargs" not in accepted:
            raise InputError(
                f"{type(pipe).__name__} does not take {', '.join(sorted(missing))}; dreamdist needs a "
                "text-to-image pipeline that accepts prompt embeddings (e.g. StableDiffusionPipeline)"
            )
        self.pipe = pipe
        self._accepts_generator = "generator" in accepted or "kwargs" in accepted
        self.model = str(model if model is not None else getattr(pipe, "name_or_path", "") or type(pipe).__name__)
        self._encoder: SoftPromptEncoder | None = None
        self._negatives: dict[str, torch.Tensor] = {}
        self.stats = RenderStats()

    @classmethod
    def load(
        cls, model: str | os.PathLike, device: str | torch.device | None = None, precision: str = "auto"
    ) -> "Sampler":
        """Load ``model`` (a diffusers folder or hub id) on ``device`` ("auto": CUDA if present) at
        ``precision`` ("auto": fp16 on CUDA, fp32 on CPU)."""
        from dreamdist.runtime import load_pipeline, pick_device, resolve_dtype

        dev = device if isinstance(device, torch.device) else pick_device(device)
        dtype = resolve_dtype(precision, dev)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = load_pipeline(model, dev, dtype)
        return cls(pipe, model)

    # ---- properties of the pipeline

    @property
    def encoder(self) -> SoftPromptEncoder:
        if self._encoder is None:
            from dreamdist.runtime import encoder_of

            self._encoder = encoder_of(self.pipe)
        return self._encoder

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.pipe, "_execution_device", None) or self.pipe.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.unet.dtype

    @property
    def vae_scale(self) -> int:
        return int(getattr(self.pipe, "vae_scale_factor", 8))

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.unet.config.in_channels)

    @property
    def feature_dim(self) -> int:
        return int(self.pipe.unet.config.cross_attention_dim)

    def image_size(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        """(height, width) in pixels; the model's native size where not given."""
        sample = self.pipe.unet.config.sample_size
        sh, sw = (sample, sample) if isinstance(sample, int) else tuple(sample)
        h = int(height) if height else int(sh) * self.vae_scale
        w = int(width) if width else int(sw) * self.vae_scale
        if h % 8 or w % 8 or h < 8 or w < 8:
            raise InputError(f"image size {h}x{w} must be positive multiples of 8")
        return h, w

    def distribution(
        self,
        files: Sequence[str | os.PathLike | DistributionFile],
        weights: Sequence[float] | None = None,
        mix_rule: str = "paper",
    ) -> PromptDistribution:
        """Bind distribution files to this pipeline's text encoder (refusing another encoder's files)."""
        loaded = [f if isinstance(f, DistributionFile) else load_distribution(f) for f in files]
        return PromptDistribution(loaded, self.encoder, weights, mix_rule, encoder_name=self.model)

    def negative_embeds(self, text: str = "") -> torch.Tensor:
        """(1, L, d) features of the negative prompt, encoded once per text."""
        if text not in self._negatives:
            with torch.no_grad():
                self._negatives[text] = self.encoder.encode_text([text]).to(self.device, self.dtype)
        return self._negatives[text]

    # ---- rendering

    def _prompt_batch(self, shots: Sequence[Shot]) -> torch.Tensor:
        rows = []
        for shot in shots:
            g = shot.gaussian
            if g.shape[-1] != self.feature_dim:
                raise InputError(
                    f"prompt features have {g.shape[-1]} channels but the UNet cross-attends to "
                    f"{self.feature_dim}; the distribution belongs to another text encoder"
                )
            rows.append(g.sample_seeds([shot.seed], shot.gamma))  # the core's one sampling path
        return torch.cat(rows).to(self.device, self.dtype)

    def render(
        self, shots: Sequence[Shot], settings: RenderSettings = RenderSettings(), progress: bool = False
    ) -> Iterator[tuple[Shot, Any]]:
        """Yield ``(shot, PIL image)`` in order, ``settings.batch_size`` images per pipeline call."""
        from tqdm.auto import tqdm

        settings.validate()
        height, width = self.image_size(settings.height, settings.width)
        latent_shape = (self.latent_channels, height // self.vae_scale, width // self.vae_scale)
        size = settings.batch_size
        negative = self.negative_embeds(settings.negative)
        bar = tqdm(total=len(shots), unit="img", desc="sampling", disable=None if progress else True, leave=False)
        try:
            for start in range(0, len(shots), size):
                chunk = list(shots[start : start + size])
                pad = size - len(chunk)
                prompts = self._prompt_batch(chunk)
                latents = torch.stack([latent_noise(latent_shape, s.seed) for s in chunk])
                if pad:
                    prompts = torch.cat([prompts, prompts[-1:].expand(pad, -1, -1)])
                    latents = torch.cat([latents, latents[-1:].expand(pad, -1, -1, -1)])
                kwargs: dict[str, Any] = dict(
                    prompt_embeds=prompts,
                    negative_prompt_embeds=negative.expand(size, -1, -1),
                    latents=latents.to(self.device, self.dtype),
                    num_inference_steps=settings.steps,
                    guidance_scale=settings.guidance_scale,
                    height=height,
                    width=width,
                    output_type="pil",
                )
                if self._accepts_generator:
                    kwargs["generator"] = [step_generator(s.seed) for s in chunk + [chunk[-1]] * pad]
                began = time.perf_counter()
                images = self.pipe(**kwargs).images
                self.stats.pipeline_s += time.perf_counter() - began
                self.stats.calls += 1
                self.stats.images += len(chunk)
                self.stats.padded += pad
                for shot, image in zip(chunk, images):
                    yield shot, image
                bar.update(len(chunk))
        finally:
            bar.close()

    def images(
        self,
        gaussian: FeatureGaussian,
        seeds: Sequence[int],
        gamma: float = 1.0,
        settings: RenderSettings = RenderSettings(),
        progress: bool = False,
    ) -> list:
        """One PIL image per seed from ``gaussian`` (mu + gamma * w(seed) * sigma)."""
        gaussian = gaussian.detach()
        return [im for _, im in self.render([Shot(gaussian, int(s), float(gamma)) for s in seeds], settings, progress)]


def render_grid(
    pipe_or_model,
    gaussian: FeatureGaussian,
    seeds: Sequence[int],
    gamma: float | Sequence[float] = 1.0,
    steps: int = 25,
    guidance_scale: float = 7.5,
    out_png: str | os.PathLike | None = None,
    *,
    negative: str = "",
    batch_size: int = 4,
    height: int | None = None,
    width: int | None = None,
    cols: int | None = None,
    title: str | None = None,
    device: str | None = None,
    precision: str = "auto",
):
    """Preview a Gaussian (e.g. mid-training): one image per seed, as a captioned grid.

    ``pipe_or_model``: a diffusers pipeline, a ``Sampler``, or a model folder/hub id (loaded here on
    ``device``/``precision``). ``gamma`` may be a list: then rows are gammas, columns seeds (the same
    seeds in every row). Writes ``out_png`` atomically when given; returns the grid as a PIL image.
    Runs under ``torch.no_grad``; ``gaussian`` is detached, so training graphs are untouched.
    """
    from dreamdist.grid import contact_sheet, labelled_grid

    if isinstance(pipe_or_model, Sampler):
        sampler = pipe_or_model
    elif isinstance(pipe_or_model, (str, os.PathLike)):
        sampler = Sampler.load(pipe_or_model, device, precision)
    else:
        sampler = Sampler(pipe_or_model)
    settings = RenderSettings(steps, guidance_scale, negative, batch_size, height, width)
    gaussian = gaussian.detach()
    seeds = [int(s) for s in seeds]
    gammas = [float(gamma)] if isinstance(gamma, (int, float)) else [float(g) for g in gamma]
    shots = [Shot(gaussian, s, g, row=r, col=c) for r, g in enumerate(gammas) for c, s in enumerate(seeds)]
    with torch.no_grad():
        images = [im for _, im in sampler.render(shots, settings)]
    if len(gammas) == 1:
        sheet = contact_sheet(images, [f"seed {s}" for s in seeds], cols=cols, title=title)
    else:
        rows = [images[r * len(seeds) : (r + 1) * len(seeds)] for r in range(len(gammas))]
        sheet = labelled_grid(rows, [f"gamma {g:g}" for g in gammas], [f"seed {s}" for s in seeds], title=title)
    if out_png is not None:
        with atomic_path(out_png) as tmp:
            sheet.save(tmp, format="PNG")
    return sheet


# --------------------------------------------------------------------------- runs into a folder


@dataclass
class GridSpec:
    """How a run's grid is laid out: ``rows`` x ``cols`` cells addressed by each shot's row/col."""

    rows: int
    cols: int
    row_labels: list[str] | None = None
    col_labels: list[str] | None = None
    title: str | None = None


@dataclass
class RunResult:
    out_dir: Path
    images: list[Path]
    grid: Path
    manifest: Path
    timing: dict[str, float]


def check_number_ranges(n: int, seed: int, indices: Sequence[int] | None, gammas: Sequence[float]) -> list[int]:
    """Validate counts, seeds and gammas; return the image indices of the run."""
    if indices:
        if any(i < 0 for i in indices):
            raise InputError(f"--index values must be >= 0, got {list(indices)}")
        if len(set(indices)) != len(indices):
            raise InputError(f"--index values repeat: {list(indices)}")
        idx = [int(i) for i in indices]
    else:
        if n < 1:
            raise InputError(f"--n must be at least 1, not {n}")
        idx = list(range(int(n)))
    if seed < 0 or seed + max(idx) > MAX_SEED:
        raise InputError(f"seeds must lie in [0, 2**63 - 1]; --seed {seed} with index {max(idx)} does not")
    if not gammas:
        raise InputError("give at least one gamma")
    for g in gammas:
        if not math.isfinite(g) or g < 0:
            raise InputError(f"gamma must be a finite number >= 0 (0 is the mean prompt), not {g}")
    return idx


def check_weights(weights: Sequence[float] | None, files: Sequence[Any]) -> list[float] | None:
    """The weights of eq. 7: one per file, >= 0, not all 0 (normalised to sum 1 by the mixer)."""
    if weights is None:
        return None
    if len(weights) != len(files):
        raise MixError(f"{len(files)} distribution file(s) but {len(weights)} --weights; give one weight per file")
    for w, f in zip(weights, files):
        if not math.isfinite(w) or w < 0:
            raise MixError(f"--weights: weight {w:g} for {f} is negative or not finite; weights must be >= 0")
    total = float(sum(weights))
    if total <= 0:
        raise MixError(f"--weights {list(weights)} sum to 0; at least one must be positive")
    if not math.isclose(total, 1.0, rel_tol=1e-6):  # as the mixer would, minus its warning
        return [float(w) / total for w in weights]
    return [float(w) for w in weights]


def check_template(template: str | None) -> str | None:
    if template is None:
        return None
    Template.parse(template)  # raises TemplateError with the fix
    return template


def check_mix_rule(rule: str) -> str:
    if rule not in MIX_RULES:
        raise MixError(f"unknown --mix-rule {rule!r}; choose from {', '.join(MIX_RULES)}")
    return rule


def _is_free(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def resolve_out_dir(out: str | os.PathLike | None, default_name: str, root: Path = DEFAULT_ROOT) -> Path:
    """An explicit ``out`` must not exist or be an empty folder: a non-empty one is refused, never
    overwritten. Without ``out``, a fresh ``root/default_name`` is picked, adding -2, -3... if taken."""
    if out is not None:
        path = Path(out)
        if not _is_free(path):
            raise InputError(
                f"{path} already exists and is not empty; nothing was written or overwritten. "
                "Choose a new --out, or leave --out out to get a fresh samples/NAME-N folder"
            )
        return path
    stem = default_name or "run"
    path = root / stem
    k = 2
    while not _is_free(path):
        path = root / f"{stem}-{k}"
        k += 1
    return path


class _Staging:
    """Write a run into a hidden sibling folder, renamed onto ``out`` only when complete; on any
    failure the staging folder (and parent folders this run created) are removed."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.created: list[Path] = []
        parent = out.absolute().parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for p in reversed(missing):
            p.mkdir()
            self.created.append(p)
        while True:  # not mkdtemp: that folder would be private (0700) and so would the run folder
            self.path = out.absolute().parent / f".{out.name}.{uuid.uuid4().hex[:12]}.partial"
            try:
                self.path.mkdir()  # mode 0777 minus the umask, as any folder the user makes
                break
            except FileExistsError:
                continue

    def commit(self) -> None:
        try:
            if self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()
            os.rename(self.path, self.out)
        except OSError:
            raise InputError(
                f"{self.out} appeared while sampling, so nothing was overwritten; this run's images are in {self.path}"
            ) from None

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        for p in reversed(self.created):
            try:
                p.rmdir()
            except OSError:
                pass


def write_run(
    sampler: Sampler,
    shots: Sequence[Shot],
    settings: RenderSettings,
    out_dir: Path,
    run_params: Mapping[str, Any],
    grid: GridSpec,
    progress: bool = True,
    workers: int = 2,
) -> RunResult:
    """Render ``shots`` into ``out_dir``: PNGs with ``run_params`` + per-image parameters in text chunks
    (saved on background threads while the next batch renders), ``grid.png``, ``manifest.json``."""
    from dreamdist import __version__
    from dreamdist.grid import fit_tile, labelled_grid, tile_size
    from dreamdist.pngmeta import save_png

    settings.validate()
    height, width = sampler.image_size(settings.height, settings.width)
    tile_wh = tile_size((width, height), grid.cols)
    began = time.perf_counter()
    pipeline_before = sampler.stats.pipeline_s
    staging = _Staging(out_dir)
    entries: list[dict[str, Any]] = []
    thumbs: dict[tuple[int, int], Any] = {}
    captions: list[list[str]] = [[""] * grid.cols for _ in range(grid.rows)]

    def save(image, name: str, params: dict[str, Any]):
        save_png(image, staging.path / name, params)
        return fit_tile(image, tile_wh)

    try:
        futures: list[tuple[Shot, Future]] = []
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for shot, image in sampler.render(shots, settings, progress):
                params = {**run_params, "seed": shot.seed, "gamma": shot.gamma, **shot.params}
                params["regenerate"] = regenerate_command(params)
                entries.append({"file": shot.name, **{k: params[k] for k in ("seed", "gamma", *shot.params)}})
                futures.append((shot, pool.submit(save, image, shot.name, params)))
            for shot, fut in futures:
                thumbs[(shot.row, shot.col)] = fut.result()
                captions[shot.row][shot.col] = shot.caption
        cells = [[thumbs.get((r, c)) for c in range(grid.cols)] for r in range(grid.rows)]
        sheet = labelled_grid(
            cells, grid.row_labels, grid.col_labels,
            captions if any(any(row) for row in captions) else None, grid.title, tile=max(tile_wh),
        )
        sheet.save(staging.path / GRID_NAME, format="PNG")
        pipeline_s = sampler.stats.pipeline_s - pipeline_before
        total = time.perf_counter() - began
        timing = {"render_and_save_s": round(total, 4), "pipeline_s": round(pipeline_s, 4)}
        manifest = {
            "dreamdist_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **run_params,
            "grid": GRID_NAME,
            "grid_rows": grid.row_labels,
            "grid_cols": grid.col_labels,
            "images": entries,
            "timing": timing,
        }
        # plain write: the staging folder as a whole is what becomes visible atomically
        (staging.path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    except BaseException:  # errors and Ctrl-C alike: no half-written run folder
        staging.abort()
        raise
    staging.commit()
    return RunResult(
        out_dir, [out_dir / e["file"] for e in entries], out_dir / GRID_NAME, out_dir / MANIFEST_NAME, timing
    )


def regenerate_command(params: Mapping[str, Any]) -> str:
    """The `dreamdist sample` command line that rebuilds one image from its parameters."""
    argv = ["dreamdist", "sample", *params["files"]]
    if len(params["files"]) > 1:
        argv += ["--weights", *(repr(float(w)) for w in params["weights"]), "--mix-rule", params["mix_rule"]]
    argv += [
        "--template", params["template"], "--gamma", repr(float(params["gamma"])), "--seed", str(params["seed"]),
        "--n", "1", "--batch-size", str(params["batch_size"]), "--steps", str(params["steps"]),
        "--guidance-scale", repr(float(params["guidance_scale"])), "--model", params["model"],
        "--height", str(params["height"]), "--width", str(params["width"]), "--precision", params["precision"],
    ]
    if params.get("negative"):
        argv += ["--negative", params["negative"]]
    return shlex.join(argv)


# --------------------------------------------------------------------------- the three commands


@dataclass
class _Setup:
    """Everything validated and loaded before anything is written."""

    sampler: Sampler
    files: list[DistributionFile]
    out_dir: Path
    settings: RenderSettings
    template: str
    load_s: float
    started: float = field(default_factory=time.perf_counter)


def _setup(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike | None,
    default_name: str,
    template: str | None,
    settings: RenderSettings,
    model: str | os.PathLike | None,
    device: str | None,
    precision: str,
    sampler: Sampler | None,
) -> _Setup:
    settings.validate()
    check_template(template)
    files = [load_distribution(p) for p in paths]  # unknown/corrupt file: one clear line
    out_dir = resolve_out_dir(out, default_name)
    began = time.perf_counter()
    if sampler is None:
        sampler = Sampler.load(model or files[0].base_model, device, precision)
    sampler.image_size(settings.height, settings.width)
    load_s = time.perf_counter() - began
    return _Setup(sampler, files, out_dir, settings, template or files[0].template, load_s)


def _run_params(setup: _Setup, files: Sequence[DistributionFile], weights, mix_rule: str, command: str) -> dict:
    from dreamdist.distfile import file_sha256

    h, w = setup.sampler.image_size(setup.settings.height, setup.settings.width)
    return {
        "command": command,
        "files": [str(Path(f.path).resolve()) for f in files],
        "file_sha256": [file_sha256(f.path) for f in files],
        "weights": [float(x) for x in weights],
        "mix_rule": mix_rule,
        "template": setup.template,
        "negative": setup.settings.negative,
        "steps": setup.settings.steps,
        "guidance_scale": float(setup.settings.guidance_scale),
        "batch_size": setup.settings.batch_size,
        "height": h,
        "width": w,
        "model": setup.sampler.model,
        "pipeline": type(setup.sampler.pipe).__name__,
        "scheduler": type(getattr(setup.sampler.pipe, "scheduler", None)).__name__,
        "device": setup.sampler.device.type,
        "precision": precision_name(setup.sampler.dtype),
    }


def _finish(result: RunResult, setup: _Setup, fit_s: float) -> RunResult:
    result.timing.update(
        {
            "load_s": round(setup.load_s, 4),
            "fit_s": round(fit_s, 4),
            "total_s": round(time.perf_counter() - setup.started, 4),
        }
    )
    return result


def sample(
    files: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    weights: Sequence[float] | None = None,
    mix_rule: str = "paper",
    gamma: float | Sequence[float] = 1.0,
    template: str | None = None,
    n: int = 16,
    seed: int = 0,
    indices: Sequence[int] | None = None,
    steps: int = 50,
    guidance_scale: float = 7.5,
    negative: str = "",
    batch_size: int = 4,
    height: int | None = None,
    width: int | None = None,
    model: str | os.PathLike | None = None,
    device: str | None = None,
    precision: str = "auto",
    progress: bool = True,
    sampler: Sampler | None = None,
    command: str = "sample",
) -> RunResult:
    """Sample ``n`` images (or the images ``indices``) from the mix of ``files`` into ``out``.

    Image i uses seed ``seed + i``. With several gammas, every gamma gets the same seeds and the grid
    has one row per gamma (Figure 5). Everything is validated (template, files, weights, text
    encoder, out folder) before anything is written; a failure leaves no output folder behind.
    """
    if not files:
        raise InputError("give at least one distribution file")
    gammas = [float(gamma)] if isinstance(gamma, (int, float)) else [float(g) for g in gamma]
    idx = check_number_ranges(n, seed, indices, gammas)
    check_mix_rule(mix_rule)
    weights = check_weights(weights, files)
    settings = RenderSettings(steps, guidance_scale, negative, batch_size, height, width)
    name = "+".join(Path(f).stem for f in files)
    setup = _setup(files, out, name, template, settings, model, device, precision, sampler)
    began = time.perf_counter()
    dist = setup.sampler.distribution(setup.files, weights, mix_rule)
    gaussian = dist.gaussian(setup.template)  # fitted once per run
    setup.sampler.negative_embeds(negative)
    fit_s = time.perf_counter() - began

    seeds = [seed + i for i in idx]
    sweep = len(gammas) > 1 or command == "sweep-gamma"
    shots = []
    if sweep:
        for r, g in enumerate(gammas):
            for c, (i, s) in enumerate(zip(idx, seeds)):
                shots.append(Shot(gaussian, s, g, f"gamma{g:g}-seed{s:06d}.png", r, c, params={"index": i}))
        spec = GridSpec(len(gammas), len(seeds), [f"gamma {g:g}" for g in gammas], [f"seed {s}" for s in seeds],
                        title=f"{name}: {setup.template}")
    else:
        cols = math.ceil(math.sqrt(len(seeds)))
        for k, (i, s) in enumerate(zip(idx, seeds)):
            shots.append(Shot(gaussian, s, gammas[0], f"seed{s:06d}.png", k // cols, k % cols, f"seed {s}", {"index": i}))
        spec = GridSpec(math.ceil(len(seeds) / cols), cols)
    params = _run_params(setup, setup.files, dist.weights, mix_rule, command)
    params.update({"base_seed": seed, "gammas": gammas})
    result = write_run(setup.sampler, shots, settings, setup.out_dir, params, spec, progress)
    return _finish(result, setup, fit_s)


def sweep_gamma(
    files: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, *,
    gammas: Sequence[float] = DEFAULT_GAMMAS, n: int = 4, **kwargs,
) -> RunResult:
    """Figure-5-style grid: rows are ``gammas``, columns the same ``n`` seeds in every row."""
    return sample(files, out, gamma=list(gammas), n=n, command="sweep-gamma", **kwargs)


def mix_weights(steps_between: int) -> list[float]:
    """Weights of the second distribution along the row: 0, 1/(N+1), ..., 1."""
    if steps_between < 0:
        raise InputError(f"--steps-between must be >= 0, not {steps_between}")
    return [j / (steps_between + 1) for j in range(steps_between + 2)]


def mix_row(
    file_a: str | os.PathLike,
    file_b: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    steps_between: int = 5,
    n: int = 1,
    seed: int = 0,
    gamma: float = 1.0,
    mix_rule: str = "paper",
    template: str | None = None,
    steps: int = 50,
    guidance_scale: float = 7.5,
    negative: str = "",
    batch_size: int = 4,
    height: int | None = None,
    width: int | None = None,
    model: str | os.PathLike | None = None,
    device: str | None = None,
    precision: str = "auto",
    progress: bool = True,
    sampler: Sampler | None = None,
) -> RunResult:
    """Figure-6-style interpolation: columns mix A and B with weights (1 - t, t), t from 0 to 1 in
    ``steps_between + 1`` steps (eq. 7); rows are ``n`` seeds, the same in every column. Each file
    is fitted once; the columns mix the two fitted Gaussians."""
    ts = mix_weights(steps_between)
    idx = check_number_ranges(n, seed, None, [gamma])
    check_mix_rule(mix_rule)
    settings = RenderSettings(steps, guidance_scale, negative, batch_size, height, width)
    name_a, name_b = Path(file_a).stem, Path(file_b).stem
    setup = _setup([file_a, file_b], out, f"{name_a}--{name_b}", template, settings, model, device, precision, sampler)
    began = time.perf_counter()
    fa, fb = setup.files
    ga = setup.sampler.distribution([fa]).gaussian(setup.template)
    gb = setup.sampler.distribution([fb]).gaussian(setup.template)
    columns = [mix([(ga, 1.0 - t), (gb, t)], mix_rule) for t in ts]
    setup.sampler.negative_embeds(negative)
    fit_s = time.perf_counter() - began

    seeds = [seed + i for i in idx]
    shots = []
    for r, (i, s) in enumerate(zip(idx, seeds)):
        for c, (t, g) in enumerate(zip(ts, columns)):
            shots.append(
                Shot(g, s, gamma, f"mix{c:02d}-seed{s:06d}.png", r, c,
                     params={"index": i, "weights": [1.0 - t, t], "column": c})
            )
    col_labels = [f"{1 - t:.2f} / {t:.2f}" for t in ts]
    spec = GridSpec(len(seeds), len(ts), [f"seed {s}" for s in seeds], col_labels, title=f"{name_a}  ->  {name_b}")
    params = _run_params(setup, setup.files, [0.5, 0.5], mix_rule, "mix")
    del params["weights"]  # each column has its own, in its image parameters
    params.update({"base_seed": seed, "gammas": [gamma], "steps_between": steps_between, "column_weights": [[1 - t, t] for t in ts]})
    result = write_run(setup.sampler, shots, settings, setup.out_dir, params, spec, progress)
    return _finish(result, setup, fit_s)
