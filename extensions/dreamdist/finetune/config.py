"""Stage-2 settings: the one place each fine-tuning setting's name, default, meaning and limits are written.

The same pattern as ``dreamdist.train.config``: each field's metadata (kind, group, help, metavar,
choices, flag) is what ``dreamdist finetune`` builds its options from, and a bad value raises
``SettingError`` naming the field. The defaults are the stage-2 recipe of Zeng, Suganuma & Okatani
("An Improved Method for Personalizing Diffusion Models"): the whole UNet, lr 5e-6, 800 steps, a
checkpoint every 200 steps, no prior-preservation loss. LoRA and DreamBooth's prior preservation
(class images generated once by the base model) are options.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dreamdist.core.runtime import PRECISIONS
from dreamdist.train.config import LENGTH, METHOD, OUTPUT, SPEED, SettingError

METHODS = ("full", "lora")
# the UNet's attention projections: what diffusers' own DreamBooth-LoRA script adapts
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def _setting(default: Any, kind: str, group: str, help: str, **cli: Any) -> Any:
    """A field with what front ends need: ``group``/``help`` plus optional ``metavar``, ``choices``,
    ``flag`` and ``show_default=False`` (as ``dreamdist.train.config``'s fields)."""
    return field(default=default, metadata={"kind": kind, "group": group, "help": help, **cli})


@dataclass
class FinetuneConfig:
    """Fine-tuning settings; defaults: Zeng et al.'s stage 2, with S prompt samples per image as stage 1."""

    method: str = _setting(
        "full",
        METHOD,
        "method",
        "full: every UNet weight (the paper's stage 2); lora: "
        "low-rank adapters on the UNet's attention projections (needs peft; less memory), "
        "fused into the saved UNet",
        choices=METHODS,
    )
    steps: int = _setting(800, LENGTH, "method", "optimisation steps (Zeng et al.: 800)")
    lr: float = _setting(
        5e-6,
        METHOD,
        "method",
        "learning rate, constant (Zeng et al.: 5e-6 for the full UNet; LoRA usually wants ~1e-4)",
    )
    batch_size: int = _setting(
        1,
        METHOD,
        "method",
        "reference images per step; the UNet sees BATCH_SIZE x S "
        "(+ BATCH_SIZE class images with prior preservation) per step",
    )
    samples: int = _setting(
        4,
        METHOD,
        "method",
        "S prompt samples from the frozen distribution per image and "
        "step, as in stage 1: the model learns the look across the distribution, not one "
        "prompt",
        metavar="S",
    )
    gamma: float = _setting(1.0, METHOD, "method", "diversity of those samples: mu + GAMMA * w * sigma")
    template: str | None = _setting(
        None,
        METHOD,
        "method",
        "template the distribution is encoded in (default: its own training template)",
        show_default=False,
    )
    weight_decay: float = _setting(1e-2, METHOD, "method", "AdamW weight decay")
    max_grad_norm: float = _setting(1.0, METHOD, "method", "clip the gradient norm (0 = off)")
    lora_rank: int = _setting(4, METHOD, "lora", "LoRA rank r", metavar="R")
    lora_alpha: float | None = _setting(
        None, METHOD, "lora", "LoRA alpha (default: the rank, scale 1)", show_default=False
    )
    class_prompt: str | None = _setting(
        None,
        METHOD,
        "prior preservation (DreamBooth)",
        "turn on prior preservation with this class prompt, e.g. 'a photo of "
        "a dog': the base model's own images for it are generated once, "
        "cached, and trained on beside the references (default: off)",
        show_default=False,
    )
    class_images: int = _setting(
        100, METHOD, "prior preservation (DreamBooth)", "how many class images (DreamBooth: 100)", metavar="N"
    )
    prior_weight: float = _setting(
        1.0, METHOD, "prior preservation (DreamBooth)", "weight of the class images' diffusion loss (DreamBooth: 1)"
    )
    class_steps: int = _setting(50, METHOD, "prior preservation (DreamBooth)", "denoising steps per class image")
    class_guidance: float = _setting(
        7.5, METHOD, "prior preservation (DreamBooth)", "guidance scale of the class images"
    )
    resolution: int | None = _setting(
        None, METHOD, "images", "training resolution in pixels (default: the model's)", show_default=False
    )
    flip: bool = _setting(True, METHOD, "images", "no horizontal-flip augmentation", flag="--no-flip")
    seed: int = _setting(0, METHOD, "run", "seed of every random draw (and of the LoRA initialisation)")
    precision: str = _setting(
        "auto",
        SPEED,
        "run",
        "auto: fp32 on CPU; on CUDA bf16 autocast (fp16 where bf16 "
        "is missing). Weights and optimizer stay fp32: lr 5e-6 updates vanish in bf16",
        choices=PRECISIONS,
    )
    gradient_checkpointing: bool = _setting(
        False, SPEED, "run", "recompute the UNet's activations in the backward pass: less GPU memory, slower"
    )
    checkpoint_every: int = _setting(
        200,
        OUTPUT,
        "run",
        "write the resumable checkpoint every N steps (also "
        "on Ctrl-C / SIGTERM; 0 = only then) (Zeng et al.: every 200)",
    )
    snapshot_every: int = _setting(
        0,
        OUTPUT,
        "run",
        "also write a loadable model folder OUT.step-NNNNNN every "
        "N steps, to pick the best by eye (0 = off; each holds a whole UNet)",
    )

    def validate(self) -> None:
        """Raise ``SettingError`` for the first bad value."""
        self._need(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}")
        self._need(self.steps >= 1, "steps", "must be at least 1")
        self._need(math.isfinite(self.lr) and self.lr > 0, "lr", "must be a positive number")
        self._need(self.batch_size >= 1, "batch_size", "must be at least 1")
        self._need(self.samples >= 1, "samples", "must be at least 1")
        self._need(math.isfinite(self.gamma) and self.gamma >= 0, "gamma", "must be >= 0")
        self._need(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "must be >= 0")
        self._need(math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        self._need(self.lora_rank >= 1, "lora_rank", "must be at least 1")
        self._need(
            self.lora_alpha is None or (math.isfinite(self.lora_alpha) and self.lora_alpha > 0),
            "lora_alpha",
            "must be a positive number",
        )
        self._need(
            self.class_prompt is None or bool(self.class_prompt.strip()),
            "class_prompt",
            "must not be empty (leave it out to turn prior preservation off)",
        )
        self._need(self.class_images >= 1, "class_images", "must be at least 1")
        self._need(math.isfinite(self.prior_weight) and self.prior_weight >= 0, "prior_weight", "must be >= 0")
        self._need(self.class_steps >= 1, "class_steps", "must be at least 1")
        self._need(math.isfinite(self.class_guidance), "class_guidance", "must be a number")
        self._need(self.resolution is None or self.resolution >= 8, "resolution", "must be at least 8 pixels")
        self._need(0 <= self.seed < 2**63, "seed", "must be in [0, 2^63)")
        self._need(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
        self._need(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        self._need(self.snapshot_every >= 0, "snapshot_every", "must be >= 0")
        if self.template is not None:
            from dreamdist.core.templates import Template

            Template.parse(self.template)  # TemplateError names the problem

    def _need(self, ok: bool, name: str, problem: str) -> None:
        if not ok:
            raise SettingError(name, "{name} " + problem + f", not {getattr(self, name)!r}")

    @property
    def prior_preservation(self) -> bool:
        return self.class_prompt is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FinetuneConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def values(self, *kinds: str) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["kind"] in kinds}

    def result_settings(self) -> dict[str, Any]:
        return self.values(METHOD, LENGTH)


__all__ = ["FinetuneConfig", "LORA_TARGETS", "METHODS", "LENGTH", "METHOD", "OUTPUT", "SPEED"]
