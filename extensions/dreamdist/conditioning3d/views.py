"""One sample of a learned distribution seen from several views: the 3D conditioning.

A 3D run (threestudio's prompt processors) needs, for a view-independent prompt and for each view
direction ("{}, side view", "{}, front view", ...), a text embedding and a negative embedding. Here a
single standard-normal draw ``w`` (from the sample seed) is shared by every direction: direction d gets
mu_d + gamma * w * sigma_d, where mu_d, sigma_d are fitted on that direction's template. So front and
back views describe the same instance and the seed names the asset.

Also here, because it is not threestudio-specific: saving/reloading the sampled conditioning (so a
resumed run reproduces it bit for bit), the text-feature width check, and the content-addressed,
lock-protected cache of distributions trained from a reference-image folder.

No threestudio import anywhere in this module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from filelock import FileLock
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dreamdist.core.distfile import file_sha256
from dreamdist.core.distribution import PromptDistribution
from dreamdist.core.templates import Template
from dreamdist.utils.atomic import atomic_path, atomic_write_text
from dreamdist.utils.errors import DistributionFileError, InputError, TemplateError
from dreamdist.utils.images import list_image_files

CONDITIONING_FILE = "dreamdist_conditioning.safetensors"
CONDITIONING_FORMAT = "dreamdist.conditioning"
CONDITIONING_VERSION = 1


@dataclass(frozen=True)
class SampleSpec:
    """Everything that names one sampled conditioning. Two runs with equal specs get equal tensors."""

    seed: int
    gamma: float
    template: str
    view_templates: tuple[str, ...]
    negative_prompt: str
    negative_prompts_vd: tuple[str, ...]
    file_hashes: tuple[str, ...]
    weights: tuple[float, ...]
    mix_rule: str
    base_model: str
    view_names: tuple[str, ...] = ()
    files: tuple[str, ...] = field(default=(), compare=False)  # informational: where they were read
    # per-file sigma scales applied before the mix, one per file; () when every one is 1 (the spelling
    # of conditionings saved before per-file scales existed, whose JSON has no such key)
    std_scales: tuple[float, ...] = ()

    # Fields that must agree for a saved conditioning to stand for this run (``files`` may move).
    IDENTITY = (
        "seed",
        "gamma",
        "template",
        "view_templates",
        "negative_prompt",
        "negative_prompts_vd",
        "file_hashes",
        "weights",
        "mix_rule",
        "base_model",
        "std_scales",
    )

    def to_json(self) -> str:
        raw = asdict(self)
        if not raw["std_scales"]:  # no per-file scaling: the same JSON as before they existed
            del raw["std_scales"]
        return json.dumps(raw, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SampleSpec":
        raw = json.loads(text)
        for key in (
            "view_templates",
            "negative_prompts_vd",
            "file_hashes",
            "weights",
            "view_names",
            "files",
            "std_scales",
        ):
            raw[key] = tuple(raw.get(key, ()))
        return cls(**raw)

    @property
    def file_std_scales(self) -> tuple[float, ...]:
        """One sigma scale per file (1 where none was given)."""
        return self.std_scales or (1.0,) * len(self.file_hashes)

    def differences(self, other: "SampleSpec") -> list[str]:
        """Human-readable ``name: mine != theirs`` for each identity field that differs."""
        out = []
        for name in self.IDENTITY:
            a, b = getattr(self, name), getattr(other, name)
            if name == "std_scales":
                a, b = self.file_std_scales, other.file_std_scales
            if name in ("gamma", "weights", "std_scales"):
                same = _close(a, b)
            else:
                same = a == b
            if not same:
                out.append(f"{name} {_short(a)} != {_short(b)}")
        return out


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def sample_spec(
    *,
    seed: int,
    gamma: float,
    template: str,
    view_templates: Sequence[str],
    file_hashes: Sequence[str],
    negative_prompt: str = "",
    negative_prompts_vd: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    mix_rule: str = "paper",
    base_model: str = "",
    view_names: Sequence[str] = (),
    files: Sequence[str] = (),
    std_scales: Sequence[float] | None = None,
) -> SampleSpec:
    """The one place a ``SampleSpec`` is built: the spec a run expects (from the files alone, before
    any model loads) and the spec it samples must come out equal, so both are made here.

    ``negative_prompts_vd`` defaults to ``negative_prompt`` for every view, ``weights`` to equal ones.
    ``std_scales``: one per file (the per-file sigma scales before the mix); None, or all 1, is
    recorded as ``()``.
    """
    if negative_prompts_vd is None:
        negative_prompts_vd = [negative_prompt] * len(view_templates)
    if len(negative_prompts_vd) != len(view_templates):
        raise InputError(f"{len(view_templates)} view templates but {len(negative_prompts_vd)} negative prompts")
    if weights is None:
        weights = [1.0 / len(file_hashes)] * len(file_hashes)
    return SampleSpec(
        seed=int(seed),
        gamma=float(gamma),
        template=template,
        view_templates=tuple(view_templates),
        negative_prompt=negative_prompt,
        negative_prompts_vd=tuple(negative_prompts_vd),
        file_hashes=tuple(file_hashes),
        weights=tuple(float(w) for w in weights),
        mix_rule=str(mix_rule),
        base_model=str(base_model),
        view_names=tuple(view_names),
        files=tuple(str(f) for f in files),
        std_scales=_std_scales(std_scales, len(file_hashes)),
    )


def _std_scales(scales: Sequence[float] | None, n_files: int) -> tuple[float, ...]:
    if scales is None or all(float(s) == 1.0 for s in scales):
        return ()
    if len(scales) != n_files:
        raise InputError(f"{n_files} distribution file(s) but {len(scales)} std scales")
    return tuple(float(s) for s in scales)


@dataclass
class ViewConditioning:
    """The tensors a 3D run consumes, (L, d) / (n_views, L, d), plus the spec that names them."""

    spec: SampleSpec
    text: torch.Tensor
    text_vd: torch.Tensor
    uncond: torch.Tensor
    uncond_vd: torch.Tensor

    def to(self, *args, **kwargs) -> "ViewConditioning":
        return ViewConditioning(
            self.spec, *(t.to(*args, **kwargs) for t in (self.text, self.text_vd, self.uncond, self.uncond_vd))
        )

    @property
    def width(self) -> int:
        return int(self.text.shape[-1])

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: seed, gamma, template, file hashes... in the header, tensors in float32."""
        path = Path(path)
        tensors = {
            name: getattr(self, name).detach().to("cpu", torch.float32).contiguous()
            for name in ("text", "text_vd", "uncond", "uncond_vd")
        }
        meta = {
            "format": CONDITIONING_FORMAT,
            "format_version": str(CONDITIONING_VERSION),
            "spec": self.spec.to_json(),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ViewConditioning":
        path = Path(path)
        if not path.is_file():
            raise DistributionFileError(f"{path}: no saved conditioning here")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            if meta.get("format") != CONDITIONING_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            if int(meta.get("format_version", "0")) > CONDITIONING_VERSION:
                raise ValueError(f"format version {meta.get('format_version')} is newer than this dreamdist reads")
            spec = SampleSpec.from_json(meta["spec"])
            return cls(spec, tensors["text"], tensors["text_vd"], tensors["uncond"], tensors["uncond_vd"])
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
            raise DistributionFileError(
                f"{path}: not a readable dreamdist conditioning file ({exc}); delete it to sample again"
            ) from None


def parse_view_templates(template: str, view_templates: Sequence[str]) -> None:
    """Refuse, in one line, any template (the main one or a view's) without exactly one '{}'."""
    Template.parse(template)
    for text in view_templates:
        try:
            Template.parse(text)
        except TemplateError:
            raise TemplateError(
                f"view prompt {text!r} (from template {template!r}) must keep exactly one '{{}}' "
                "placeholder for the learned vectors"
            ) from None


def sample_view_conditioning(
    distribution: PromptDistribution,
    template: str,
    view_templates: Sequence[str],
    seed: int,
    gamma: float = 1.0,
    negative_prompt: str = "",
    negative_prompts_vd: Sequence[str] | None = None,
    view_names: Sequence[str] = (),
    base_model: str = "",
) -> ViewConditioning:
    """Sample one instance: a single draw ``w`` shared by ``template`` and every view template.

    Negative prompts are plain text through the distribution's own text encoder.
    """
    parse_view_templates(template, view_templates)
    spec = sample_spec(
        seed=seed,
        gamma=gamma,
        template=template,
        view_templates=view_templates,
        negative_prompt=negative_prompt,
        negative_prompts_vd=negative_prompts_vd,
        file_hashes=distribution.file_hashes,
        weights=distribution.weights,
        mix_rule=distribution.mix_rule,
        base_model=base_model,
        view_names=view_names,
        files=[str(p) for p in distribution.paths],
        std_scales=distribution.std_scales,
    )
    feats = distribution.sample_views([spec.template, *spec.view_templates], spec.seed, spec.gamma).float()
    negs = distribution.encoder.encode_text([spec.negative_prompt, *spec.negative_prompts_vd]).float()
    return ViewConditioning(spec, feats[0], feats[1:], negs[0], negs[1:])


def check_feature_width(encoder_width: int, guidance_width: int | None, encoder_name: str, guidance_name: str) -> None:
    """Refuse a text encoder whose features the guidance model cannot cross-attend to."""
    if guidance_width is not None and int(guidance_width) != int(encoder_width):
        raise InputError(
            f"text features of {encoder_name!r} are {encoder_width} wide but the guidance {guidance_name!r} "
            f"expects {guidance_width}; use the text encoder of the guidance's base model "
            "(e.g. stabilityai/stable-diffusion-2-1-base for SD 2.1-base / MVDream sd-v2.1-base-4view)"
        )


# ----------------------------------------------------------------------------------------------
# Distributions trained from a reference-image folder: content-addressed cache + lock file
# ----------------------------------------------------------------------------------------------


def distribution_cache_key(
    folder: str | os.PathLike, settings: Mapping[str, Any], base_model: str, encoder_fingerprint: str = ""
) -> str:
    """sha256 over the images' content hashes (sorted: names and order do not matter), the training
    settings and the base model. Same images + settings + model = same key = train once."""
    image_hashes = sorted(file_sha256(p) for p in list_image_files(folder))
    payload = json.dumps(
        {
            "images": image_hashes,
            "settings": dict(sorted(settings.items())),
            "base_model": str(base_model),
            "encoder_fingerprint": encoder_fingerprint,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cache_entry_path(cache_root: str | os.PathLike, key: str) -> Path:
    return Path(cache_root) / f"{key[:32]}.safetensors"


def cached_distribution(
    folder: str | os.PathLike,
    settings: Mapping[str, Any],
    base_model: str,
    train: Callable[[Path], Any],
    cache_root: str | os.PathLike,
    encoder_fingerprint: str = "",
    lock_timeout: float = -1,
) -> Path:
    """Return the cached distribution for (images, settings, model), training it first if needed.

    ``train(path)`` must write the distribution file at ``path`` (atomically, as ``save_distribution``
    does). A lock file next to the cache entry makes concurrent runs (several GPUs, a batch of 200
    runs) train each key once; the others wait and then load. Readers never see a half-written file
    because entries only ever appear by atomic rename.
    """
    key = distribution_cache_key(folder, settings, base_model, encoder_fingerprint)
    entry = cache_entry_path(cache_root, key)
    if entry.is_file():
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock", timeout=lock_timeout):
        if entry.is_file():  # another run trained it while we waited
            return entry
        train(entry)
        if not entry.is_file():
            raise DistributionFileError(f"{entry}: training finished but wrote no distribution file")
        atomic_write_text(
            entry.with_suffix(".json"),
            json.dumps(
                {
                    "key": key,
                    "images": str(Path(folder).resolve()),
                    "settings": dict(settings),
                    "base_model": base_model,
                },
                indent=2,
                sort_keys=True,
                default=str,
            ),
        )
    return entry
