"""`dreamdist-prompt-processor`: feeds one fresh sample of a learned prompt distribution into
threestudio's guidance (MVDream or SDS) for each NeRF run.

Thin glue: the sampling, the shared view draw, saving the sampled conditioning and the training cache
live in `dreamdist.views`; this module maps them onto threestudio's `PromptProcessor` API.

- The base class still builds the view directions (side/front/back/overhead, thresholds,
  `view_dependent_prompt_front`, `prompt_side`... overrides), perp-neg settings and the negative
  prompt. `prompt` is a template with one `{}` where the learned vectors go ("{}" by default,
  "a DSLR photo of {} made of gold" for text-guided editing); the direction prompts keep it
  ("{}, side view").
- Embeddings are computed in this process (no spawned process, no on-disk cache keyed by prompt
  text, which would give every seed the same sample), on the run's device and dtype; the text
  encoder is released afterwards.
- One standard-normal draw from `sample_seed` is shared by every direction.
- The sampled conditioning is saved into the trial's save directory; a resumed run (`--train`,
  `--test`, `--export` with `resume=...`) that finds it there uses it, bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

import threestudio
from dreamdist.conditioning3d.views import (
    CONDITIONING_FILE,
    SampleSpec,
    ViewConditioning,
    cache_entry_path,
    cached_distribution,
    check_feature_width,
    distribution_cache_key,
    parse_view_templates,
    sample_spec,
    sample_view_conditioning,
)
from dreamdist.tiny_model import cache_dir
from dreamdist.train import SettingError, TrainConfig, messages_to, train_distribution
from dreamdist.utils.errors import DreamdistError, InputError
from threestudio.models.prompt_processors.base import PromptProcessor
from threestudio.utils.misc import get_rank
from threestudio.utils.typing import *

# Text-feature width (cross-attention context) of the MVDream checkpoints threestudio-mvdream names
# (mvdream/configs/sd-v1.yaml and sd-v2-base.yaml: context_dim).
MVDREAM_TEXT_WIDTHS = {"sd-v1.5-4view": 768, "sd-v2.1-base-4view": 1024}

# This processor's training settings (the names its users write) -> dreamdist.train.TrainConfig fields.
# The values are handed over as one mapping; TrainConfig holds the defaults, meanings and limits.
TRAIN_SETTINGS = {
    "train_steps": "steps",
    "num_prompts": "num_prompts",
    "num_tokens": "num_tokens",
    "train_template": "template",
    "train_samples": "samples",
    "ortho_weight": "ortho_weight",
    "ortho_kind": "ortho_kind",
    "snr_gamma": "snr_gamma",
    "snr_kind": "snr_kind",
    "learning_rate": "lr",
    "train_batch_size": "batch_size",
    "train_resolution": "resolution",
    "train_crop": "crop",
    "train_flip": "flip",
    "train_seed": "seed",
    "precision": "precision",
    "train_unet_batch": "unet_batch",
    "train_components": "components",
    "train_assign_every": "assign_every",
}
_TRAIN_DEFAULTS = TrainConfig()

# The trial's save directory, noted when threestudio's launch.py calls `system.set_save_dir`.
_SAVE_DIR: Optional[str] = None


class DreamdistRefusal(DreamdistError, SystemExit):
    """A refused configuration: one line, no traceback. It is a `DreamdistError` for callers and a
    `SystemExit` for launch.py, which prints just the line and exits with status 1."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = f"[dreamdist-prompt-processor] {message}"


def refuse(exc: DreamdistError) -> DreamdistRefusal:
    return DreamdistRefusal(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def guidance_text_width(name_or_path: Optional[str]) -> Optional[int]:
    """The text-feature width a guidance model cross-attends to, when it can be told without loading
    it: MVDream model names, or a diffusers model's `unet/config.json` (cross_attention_dim)."""
    if not name_or_path:
        return None
    if name_or_path in MVDREAM_TEXT_WIDTHS:
        return MVDREAM_TEXT_WIDTHS[name_or_path]
    try:
        from diffusers import UNet2DConditionModel

        config = UNet2DConditionModel.load_config(name_or_path, subfolder="unet")
        width = config.get("cross_attention_dim")
        return int(width[0] if isinstance(width, (list, tuple)) else width)
    except Exception:  # noqa: BLE001 - not a diffusers model we can read offline: no check
        threestudio.debug(f"dreamdist: cannot read the text width of guidance model {name_or_path!r}")
        return None


@contextlib.contextmanager
def _in_our_words() -> Iterator[None]:
    """A bad training setting, named as users of this processor write it."""
    try:
        yield
    except SettingError as exc:
        keys = {field: key for key, field in TRAIN_SETTINGS.items()}
        raise InputError(exc.named(f"system.prompt_processor.{keys.get(exc.field, exc.field)}")) from None


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@threestudio.register("dreamdist-prompt-processor")
class DreamdistPromptProcessor(PromptProcessor):
    @dataclass
    class Config(PromptProcessor.Config):
        # a template with one "{}" where the learned vectors go
        prompt: str = "{}"
        # the text encoder the distribution was trained in (SD 2.1-base for MVDream and SDS)
        pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"

        # a distribution file, or a list of them to mix
        distribution: Optional[Any] = None
        distribution_weights: Optional[List[float]] = None
        mix_rule: str = "paper"  # "paper" (eq. 7) or "reference" (the authors' generate.py)
        sample_seed: int = 0  # the configs set ${seed}: the seed names the asset
        # a number: gamma after the mix (0 is the mean prompt, > 1 more diverse); a list: one scale per
        # distribution file, applied to its sigma before the mix (the authors' generate.py --std_scale)
        std_scale: Any = 1.0

        # ...or a folder of reference images to train a distribution from first (cached)
        # (TRAIN_SETTINGS: dreamdist.train.TrainConfig settings and its defaults, the paper's)
        reference_images: Optional[str] = None
        train_steps: int = _TRAIN_DEFAULTS.steps
        num_prompts: int = _TRAIN_DEFAULTS.num_prompts
        num_tokens: int = _TRAIN_DEFAULTS.num_tokens
        train_template: str = _TRAIN_DEFAULTS.template
        train_samples: int = _TRAIN_DEFAULTS.samples
        ortho_weight: float = _TRAIN_DEFAULTS.ortho_weight
        ortho_kind: str = _TRAIN_DEFAULTS.ortho_kind
        snr_gamma: float = _TRAIN_DEFAULTS.snr_gamma
        snr_kind: str = _TRAIN_DEFAULTS.snr_kind
        learning_rate: float = _TRAIN_DEFAULTS.lr
        train_batch_size: int = _TRAIN_DEFAULTS.batch_size
        train_resolution: Optional[int] = _TRAIN_DEFAULTS.resolution
        train_crop: str = _TRAIN_DEFAULTS.crop
        train_flip: bool = _TRAIN_DEFAULTS.flip
        train_seed: int = _TRAIN_DEFAULTS.seed
        # C > 1: a mixture of C Gaussians for reference sets with several modes; each seed (asset)
        # then comes from one component, picked by weight
        train_components: int = _TRAIN_DEFAULTS.components
        train_assign_every: int = _TRAIN_DEFAULTS.assign_every
        # UNet evaluations per pass: "auto" fits them to the GPU memory free when training starts
        # (the guidance model already loaded counts), or a number
        train_unet_batch: Any = _TRAIN_DEFAULTS.unet_batch
        cache_dir: Optional[str] = None  # default: $DREAMDIST_CACHE/distributions

        # "auto": fp16 on CUDA, fp32 on CPU (the text encoder only; embeddings are kept in fp32)
        precision: str = "auto"
        # the guidance's model, to check its text-feature width (configs interpolate it)
        guidance_model_name_or_path: Optional[str] = None
        # where to save the sampled conditioning; default: the trial's save dir
        save_dir: Optional[str] = None

        # the stock processor's text-keyed cache and spawned encoder process are never used
        use_cache: bool = False
        spawn: bool = False

    cfg: Config

    # ------------------------------------------------------------------ threestudio flow

    def configure(self) -> None:
        self.conditioning: Optional[ViewConditioning] = None
        self.conditioning_path: Optional[Path] = None
        try:
            self._check_config()
            super().configure()  # directions, prompts, then prepare_/load_text_embeddings
        except DreamdistError as exc:
            raise refuse(exc) from None

    def prepare_text_embeddings(self) -> None:
        """Sample in this process; every rank computes the same tensors from the same seed."""
        parse_view_templates(self.prompt, self.prompts_vd)
        for text in [self.negative_prompt, *self.negative_prompts_vd]:
            if "{}" in text:
                raise InputError(f"negative prompt {text!r} is plain text: remove the '{{}}' placeholder")
        save_dir = self.cfg.save_dir or _SAVE_DIR
        paths = self._distribution_paths(train=False)
        if save_dir is not None and paths is not None:
            saved = self._load_saved(Path(save_dir) / CONDITIONING_FILE, self._expected_spec(paths))
            if saved is not None:
                self.conditioning = saved.to(self.device)
                self.conditioning_path = Path(save_dir) / CONDITIONING_FILE
                return
        self.conditioning = self._sample(self._distribution_paths(train=True)).to(self.device)
        if save_dir is not None:
            self.bind_save_dir(save_dir)

    def load_text_embeddings(self) -> None:
        cond = self.conditioning
        self.text_embeddings = cond.text[None].clone()
        self.uncond_text_embeddings = cond.uncond[None].clone()
        self.text_embeddings_vd = cond.text_vd.clone()
        self.uncond_text_embeddings_vd = cond.uncond_vd.clone()
        threestudio.debug("dreamdist: text embeddings ready")

    # ------------------------------------------------------------------ save dir binding

    def bind_save_dir(self, save_dir: str) -> None:
        """Attach the trial's save dir: reuse the conditioning saved there by an earlier run of this
        trial (a resume) or save ours. Embeddings already handed out are updated in place."""
        path = Path(save_dir) / CONDITIONING_FILE
        try:
            saved = self._load_saved(path, self.conditioning.spec)
        except DreamdistError as exc:
            raise refuse(exc) from None
        if saved is not None:
            self.conditioning = saved = saved.to(self.device)
            if hasattr(self, "text_embeddings"):  # already handed out (mvdream-system keeps them)
                self.text_embeddings.copy_(saved.text[None])
                self.uncond_text_embeddings.copy_(saved.uncond[None])
                self.text_embeddings_vd.copy_(saved.text_vd)
                self.uncond_text_embeddings_vd.copy_(saved.uncond_vd)
        elif get_rank() == 0:
            self.conditioning.save(path)
            threestudio.info(f"dreamdist: sampled conditioning saved to {path}")
        self.conditioning_path = path

    def _load_saved(self, path: Path, spec: SampleSpec) -> Optional[ViewConditioning]:
        if not path.is_file():
            return None
        saved = ViewConditioning.load(path)
        diffs = saved.spec.differences(spec)
        if diffs:
            raise InputError(
                f"{path} holds the conditioning of another sample ({'; '.join(diffs)}); "
                "resume with the trial's own settings, or start a new trial (another tag)"
            )
        threestudio.info(f"dreamdist: reusing the sampled conditioning saved in {path}")
        return saved

    # ------------------------------------------------------------------ sampling

    def _check_config(self) -> None:
        from dreamdist.core.gaussian import check_mix_rule
        from dreamdist.core.templates import Template

        cfg = self.cfg
        if not cfg.prompt.startswith("lib:"):  # a prompt-library entry is checked once looked up
            Template.parse(cfg.prompt)
        check_mix_rule(cfg.mix_rule, "mix_rule")
        if cfg.distribution in (None, "", []) and not cfg.reference_images:
            raise InputError(
                "no distribution: set system.prompt_processor.distribution=path/to/dist.safetensors "
                "(or reference_images=path/to/folder to train one first)"
            )
        if cfg.distribution not in (None, "", []) and cfg.reference_images:
            raise InputError("set either distribution or reference_images, not both")
        self._std_scales()  # a bad std_scale, in one line

    def _gamma(self) -> float:
        """``std_scale`` as a number is gamma, applied after the mix; a list leaves gamma 1."""
        value = self.cfg.std_scale
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 1.0

    def _std_scales(self) -> Optional[List[float]]:
        """``std_scale`` as a list: one sigma scale per distribution file, applied before the mix (one
        value stands for every file); None when it is a number (gamma)."""
        from dreamdist.core.gaussian import check_std_scales

        value = self.cfg.std_scale
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0:
                raise InputError(f"std_scale (gamma) must be a finite number >= 0, got {value}")
            return None
        if isinstance(value, (str, bytes, bool)) or hasattr(value, "keys") or not hasattr(value, "__iter__"):
            raise InputError(
                f"std_scale must be a number (gamma, after the mix) or a list of numbers (one per distribution "
                f"file, applied to its sigma before the mix), not {value!r}"
            )
        labels = [self.cfg.reference_images] if self.cfg.reference_images else self._distribution_files()
        return check_std_scales(list(value), labels, "std_scale")

    def _distribution_files(self) -> list[str]:
        dist = self.cfg.distribution
        if isinstance(dist, str):
            return [dist]
        return [str(p) for p in dist]

    def _train_config(self) -> TrainConfig:
        """This config's training settings, handed to TrainConfig as one mapping of its fields."""
        return TrainConfig(**{field: getattr(self.cfg, key) for key, field in TRAIN_SETTINGS.items()})

    def _training_settings(self) -> dict:
        """What decides the trained distribution: the cache key's settings."""
        return self._train_config().result_settings()

    def _cache_root(self) -> Path:
        if self.cfg.cache_dir:
            return Path(self.cfg.cache_dir)
        return cache_dir() / "distributions"

    def _distribution_paths(self, train: bool) -> Optional[list[str]]:
        """The distribution file(s). With reference_images: the cached trained file; when ``train``
        is False and it is not trained yet, None."""
        if not self.cfg.reference_images:
            return self._distribution_files()
        key = distribution_cache_key(
            self.cfg.reference_images, self._training_settings(), self.cfg.pretrained_model_name_or_path
        )
        entry = cache_entry_path(self._cache_root(), key)
        if entry.is_file():
            return [str(entry)]
        if not train:
            return None
        return [str(self._train_cached())]

    def _train_cached(self) -> Path:
        """Train on the run's device, once per (images, settings, base model): a lock file next to
        the cache entry keeps concurrent runs from training the same key twice; a crashed training
        resumes from its checkpoint beside the entry."""
        config = self._train_config()
        cfg = self.cfg
        with _in_our_words():
            config.validate()  # one line, before any model is loaded

        def train(entry: Path) -> None:
            checkpoint = entry.with_suffix(".ckpt")
            threestudio.info(
                f"dreamdist: training a distribution from {cfg.reference_images} ({config.steps} steps, "
                f"K={config.num_prompts}, M={config.num_tokens}) on {self.device} into {entry}"
            )
            with _in_our_words(), messages_to(threestudio.info):
                train_distribution(
                    cfg.reference_images,
                    cfg.pretrained_model_name_or_path,
                    entry,
                    config,
                    device=self.device,
                    resume=checkpoint.is_file(),
                    overwrite=True,
                    checkpoint=checkpoint,
                    log_csv=entry.with_suffix(".log.csv"),
                    progress=False,
                )
            _release_memory()

        return cached_distribution(
            cfg.reference_images,
            self._training_settings(),
            cfg.pretrained_model_name_or_path,
            train,
            self._cache_root(),
        )

    def _expected_spec(self, paths: list[str]) -> SampleSpec:
        """The spec this run would sample, computed from the files alone (no text encoder)."""
        from dreamdist.core.distfile import file_sha256

        hashes = []
        for p in paths:
            if not os.path.isfile(p):
                from dreamdist.utils.errors import DistributionFileError

                raise DistributionFileError(f"{p}: no such distribution file")
            hashes.append(file_sha256(p))
        return sample_spec(
            seed=self.cfg.sample_seed,
            gamma=self._gamma(),
            template=self.prompt,
            view_templates=self.prompts_vd,
            negative_prompt=self.negative_prompt,
            negative_prompts_vd=self.negative_prompts_vd,
            file_hashes=hashes,
            weights=self.cfg.distribution_weights,
            mix_rule=self.cfg.mix_rule,
            base_model=self.cfg.pretrained_model_name_or_path,
            view_names=[d.name for d in self.directions],
            files=paths,
            std_scales=self._std_scales(),
        )

    def _sample(self, paths: list[str]) -> ViewConditioning:
        from dreamdist.core.distribution import PromptDistribution
        from dreamdist.core.encoder import SoftPromptEncoder
        from dreamdist.core.runtime import resolve_dtype

        cfg = self.cfg
        model = cfg.pretrained_model_name_or_path
        for p in paths:  # refuse a missing file before loading any model
            if not os.path.isfile(p):
                from dreamdist.utils.errors import DistributionFileError

                raise DistributionFileError(f"{p}: no such distribution file")
        dtype = resolve_dtype(cfg.precision, torch.device(self.device))
        threestudio.info(f"dreamdist: loading text encoder {model} ({dtype}, {self.device})")
        try:
            encoder = SoftPromptEncoder.from_pretrained(model, device=self.device, dtype=dtype)
        except OSError as exc:
            raise InputError(f"cannot load text encoder {model!r}: {str(exc).splitlines()[0]}") from None
        try:
            check_feature_width(
                encoder.hidden_size,
                guidance_text_width(cfg.guidance_model_name_or_path),
                model,
                str(cfg.guidance_model_name_or_path),
            )
            dist = PromptDistribution.from_files(
                paths,
                encoder,
                weights=cfg.distribution_weights,
                mix_rule=cfg.mix_rule,
                encoder_name=model,
                std_scale=self._std_scales(),
            )
            cond = sample_view_conditioning(
                dist,
                self.prompt,
                self.prompts_vd,
                seed=cfg.sample_seed,
                gamma=self._gamma(),
                negative_prompt=self.negative_prompt,
                negative_prompts_vd=self.negative_prompts_vd,
                view_names=[d.name for d in self.directions],
                base_model=model,
            )
            mixture = dist.mixture(self.prompt)
            component = f"component {mixture.pick(cfg.sample_seed)} of {len(mixture)}, " if len(mixture) > 1 else ""
            tensors = (cond.text, cond.text_vd, cond.uncond, cond.uncond_vd)
            cond = ViewConditioning(cond.spec, *(t.detach().clone() for t in tensors))
        finally:
            del encoder
            dist = None  # noqa: F841 - drop the distribution's reference to the encoder too
            _release_memory()
        threestudio.info(
            f"dreamdist: sample seed {cfg.sample_seed}, {component}gamma {self._gamma():g}, per-file std scales "
            f"{self._std_scales() or 1}, template {self.prompt!r}, "
            f"{len(self.prompts_vd)} views, from {', '.join(paths)}"
        )
        return cond

    # ------------------------------------------------------------------ base-class API kept

    def configure_text_encoder(self) -> None:
        from dreamdist.core.encoder import SoftPromptEncoder

        self._encoder = SoftPromptEncoder.from_pretrained(self.cfg.pretrained_model_name_or_path, device=self.device)

    def destroy_text_encoder(self) -> None:
        self.__dict__.pop("_encoder", None)
        _release_memory()

    def get_text_embeddings(
        self, prompt: Union[str, List[str]], negative_prompt: Union[str, List[str]]
    ) -> Tuple[Float[Tensor, "B 77 D"], Float[Tensor, "B 77 D"]]:
        """Plain-text embeddings (the base class's debugging API); needs configure_text_encoder()."""
        prompt = [prompt] if isinstance(prompt, str) else list(prompt)
        negative_prompt = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
        return self._encoder.encode_text(prompt), self._encoder.encode_text(negative_prompt)


def _note_save_dir(system: Any, path: str) -> None:
    global _SAVE_DIR
    _SAVE_DIR = path
    for value in list(vars(system).values()):
        if isinstance(value, DreamdistPromptProcessor) and value.conditioning is not None:
            value.bind_save_dir(path)


def install_save_dir_hook() -> bool:
    """Wrap `BaseSystem.set_save_dir` so processors learn the trial's save dir. Systems build their
    prompt processor either before launch.py calls it (mvdream-system, in configure) or after
    (dreamfusion-system, in on_fit_start); both are covered. Idempotent."""
    try:
        from threestudio.systems.base import BaseSystem
    except Exception:  # noqa: BLE001 - no systems module: processors use cfg.save_dir
        return False
    original = BaseSystem.set_save_dir
    if getattr(original, "_dreamdist_hook", False):
        return True

    @functools.wraps(original)
    def set_save_dir(self, path):
        original(self, path)
        _note_save_dir(self, path)

    set_save_dir._dreamdist_hook = True
    BaseSystem.set_save_dir = set_save_dir
    return True
