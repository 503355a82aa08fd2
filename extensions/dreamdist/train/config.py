"""Training settings: the one place each setting's name, default, meaning and limits are written.

Front ends derive from ``TrainConfig`` instead of restating it: ``dreamdist train`` builds its
options from the fields' metadata (help text, metavar, choices, group), and the threestudio
processor hands its settings over as one mapping of field names. A bad value raises
``SettingError`` naming the *field*; each front end renames it in its users' words
(``--num-prompts``, ``system.prompt_processor.num_prompts``).

Each field also says what kind of setting it is, which decides where it counts:

- ``METHOD`` defines the optimisation: a checkpoint resumes only with the same values;
- ``LENGTH`` (steps) is part of what the result is, but a resumed run may go on longer;
- ``SPEED`` decides how it is computed (precision, gradient checkpointing): recorded in the file,
  not part of what the result is;
- ``OUTPUT`` decides what is written along the way (checkpoints, previews): not recorded.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dreamdist.core.runtime import PRECISIONS
from dreamdist.core.templates import Template
from dreamdist.train.losses import ORTHO_ALIASES, ORTHO_KINDS, SNR_KINDS, ortho_kind_name
from dreamdist.utils.errors import InputError

CROPS = ("random", "center")
AUTO = "auto"

METHOD, LENGTH, SPEED, OUTPUT = "method", "length", "speed", "output"


def _named(template: str, name: str) -> str:
    return template.replace("{name}", name)


class SettingError(InputError):
    """A training setting has a bad value. ``field`` is the ``TrainConfig`` field; ``named(name)``
    is the message with the front end's own name for it (the plain message uses the field name)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.template = message  # "{name}" marks where the setting's name goes
        super().__init__(_named(message, field))

    def named(self, name: str) -> str:
        return _named(self.template, name)


class SettingWarning(UserWarning):
    """A training setting is allowed but probably not what the user wants; named like ``SettingError``."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.template = message
        super().__init__(_named(message, field))

    def named(self, name: str) -> str:
        return _named(self.template, name)


def _setting(default: Any, kind: str, group: str, help: str, **cli: Any) -> Any:
    """A field with what front ends need to present it: ``group`` and ``help`` (the CLI's), plus
    optional ``metavar``, ``choices``, ``flag`` (the CLI spelling when not ``--field-name``),
    ``negatable`` (a switch spelled ``--x`` and ``--no-x``), ``parse`` (turns the CLI's text into
    the value) and ``show_default=False`` (the help text says what the default means)."""
    return field(default=default, metadata={"kind": kind, "group": group, "help": help, **cli})


def parse_unet_batch(text: str) -> int | str:
    """``auto`` or a whole number, as ``--unet-batch`` takes it."""
    text = str(text).strip().lower()
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        return text  # validate() names it


@dataclass
class TrainConfig:
    """Training settings; the defaults are the paper's (K, M, S, lambda, steps, lr) and the authors'
    train.py / train.sh's (batch size 4, AdamW with weight decay 1e-2, gradient clipping at norm 1,
    Min-SNR-gamma 5, random crops, no flips)."""

    num_prompts: int = _setting(
        32, METHOD, "method", "K learnable prompts whose features define the Gaussian (paper: 32)", metavar="K"
    )
    num_tokens: int = _setting(
        8, METHOD, "method", "M learned token vectors per prompt (paper: 8; 4 in its quantitative study)", metavar="M"
    )
    samples: int = _setting(
        4, METHOD, "method", "S reparameterised prompt samples per image and step, averaged (paper: 4)", metavar="S"
    )
    ortho_weight: float = _setting(
        5e-3,
        METHOD,
        "method",
        "weight of the orthogonality loss between the K prompts (paper: 5e-3; 0 = off)",
        metavar="LAMBDA",
    )
    ortho_kind: str = _setting(
        "abs",
        METHOD,
        "method",
        "abs: |cos| summed over prompt pairs i < j / K(K-1) (paper "
        "eq. 5); authors-code: cos^2 summed over both triangles / K(K-1), as the authors' "
        "code (squared: the same)",
        choices=ORTHO_KINDS + tuple(ORTHO_ALIASES),
    )
    snr_gamma: float = _setting(
        5.0,
        METHOD,
        "method",
        "Min-SNR-gamma weighting of the diffusion loss (Hang et al. 2023; the authors' train.py: 5; 0 = off)",
        metavar="GAMMA",
    )
    snr_kind: str = _setting(
        "min-snr",
        METHOD,
        "method",
        "min-snr: min(SNR, gamma)/SNR for epsilon, /(SNR+1) for "
        "v-prediction models (Hang et al.); authors-code: /SNR for both, as the authors' "
        "train.py",
        choices=SNR_KINDS,
    )
    components: int = _setting(
        1,
        METHOD,
        "mixture",
        "C Gaussians, each its own K prompts, each trained on the "
        "reference images it explains best (for sets with several modes; beyond the paper, "
        "which is C = 1)",
        metavar="C",
    )
    assign_every: int = _setting(
        100,
        METHOD,
        "mixture",
        "with --components > 1: every N steps, move each image to "
        "the component that denoises it best (EM on the training loss)",
        metavar="N",
    )
    steps: int = _setting(1500, LENGTH, "method", "optimisation steps (paper: 1500)")
    lr: float = _setting(1e-3, METHOD, "method", "learning rate, constant (paper: 1e-3)")
    batch_size: int = _setting(
        4, METHOD, "method", "images per step (reference script: 4); the UNet sees BATCH_SIZE x S per step"
    )
    weight_decay: float = _setting(1e-2, METHOD, "method", "AdamW weight decay (reference script: 1e-2)")
    max_grad_norm: float = _setting(1.0, METHOD, "method", "clip the gradient norm (reference script: 1.0; 0 = off)")
    template: str = _setting(
        "{}",
        METHOD,
        "template",
        "training template with one {} where the learned vectors "
        "go, e.g. 'a photo of {}' (default: the learned vectors alone)",
        show_default=False,
    )
    resolution: int | None = _setting(
        None,
        METHOD,
        "images",
        "training resolution in pixels (default: the model's, 768 for SD 2.1, 512 for 2.1-base)",
        show_default=False,
    )
    crop: str = _setting(
        "random",
        METHOD,
        "images",
        "random: each step a random square crop of the image resized "
        "to the resolution on its short side (the authors' default); center: always the centre",
        choices=CROPS,
    )
    flip: bool = _setting(
        False,
        METHOD,
        "images",
        "random horizontal flips (off, as in the authors' train.sh: flips mirror text, logos and asymmetric subjects)",
        negatable=True,
    )
    seed: int = _setting(0, METHOD, "run", "seed of the initial vectors and every random draw")
    precision: str = _setting(
        "auto",
        SPEED,
        "run",
        "auto: fp32 on CPU; on CUDA bf16 autocast (fp16 with loss scaling where bf16 is missing)",
        choices=PRECISIONS,
    )
    gradient_checkpointing: bool = _setting(
        False,
        SPEED,
        "run",
        "recompute the frozen UNet's activations in the "
        "backward pass: less GPU memory, slower (--unet-batch auto turns it "
        "on by itself when chunks alone do not fit)",
    )
    unet_batch: int | str = _setting(
        AUTO,
        SPEED,
        "run",
        "UNet evaluations per forward/backward: auto (all BATCH_SIZE "
        "x S at once when the estimated peak fits the free memory, else the largest "
        "chunks that fit, then gradient checkpointing) or a number; chunks give the same "
        "update",
        metavar="N|auto",
        parse=parse_unet_batch,
    )
    checkpoint_every: int = _setting(
        100,
        OUTPUT,
        "run",
        "write the checkpoint every N steps (also on Ctrl-C / SIGTERM and at the end; 0 = only then)",
    )
    preview_every: int = _setting(
        0, OUTPUT, "run", "every N steps, render a grid of images from the current distribution (0 = off)"
    )
    preview_count: int = _setting(4, OUTPUT, "run", "images per preview grid")
    preview_steps: int = _setting(25, OUTPUT, "run", "denoising steps of preview images")

    def __post_init__(self) -> None:
        self.ortho_kind = ortho_kind_name(self.ortho_kind)  # "squared" is the authors-code kind
        if isinstance(self.unet_batch, str):
            self.unet_batch = parse_unet_batch(self.unet_batch)

    def validate(self) -> None:
        """Raise ``SettingError`` for the first bad value; warn about a one-prompt run."""
        self._need(self.num_prompts >= 1, "num_prompts", "must be at least 1 (the paper uses 32)")
        if self.num_prompts == 1:
            warnings.warn(
                SettingWarning(
                    "num_prompts",
                    "{name} 1 learns a single prompt (sigma = 0, no orthogonality "
                    "loss): a textual-inversion-like baseline, not a distribution; the paper "
                    "uses 32",
                ),
                stacklevel=3,
            )
        self._need(self.num_tokens >= 1, "num_tokens", "must be at least 1")
        self._need(self.samples >= 1, "samples", "must be at least 1")
        self._need(self.components >= 1, "components", "must be at least 1 (1: one Gaussian, the paper's method)")
        self._need(self.assign_every >= 1, "assign_every", "must be at least 1")
        self._need(self.steps >= 1, "steps", "must be at least 1")
        self._need(self.batch_size >= 1, "batch_size", "must be at least 1")
        self._need(math.isfinite(self.lr) and self.lr > 0, "lr", "must be a positive number")
        self._need(math.isfinite(self.ortho_weight) and self.ortho_weight >= 0, "ortho_weight", "must be >= 0")
        self._need(self.ortho_kind in ORTHO_KINDS, "ortho_kind", f"must be one of {', '.join(ORTHO_KINDS)}")
        self._need(math.isfinite(self.snr_gamma) and self.snr_gamma >= 0, "snr_gamma", "must be >= 0 (0 = off)")
        self._need(self.snr_kind in SNR_KINDS, "snr_kind", f"must be one of {', '.join(SNR_KINDS)}")
        self._need(self.crop in CROPS, "crop", f"must be one of {', '.join(CROPS)}")
        whole = isinstance(self.unet_batch, int) and not isinstance(self.unet_batch, bool)
        self._need(
            self.unet_batch == AUTO or (whole and self.unet_batch >= 1), "unet_batch", "must be auto or at least 1"
        )
        self._need(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "must be >= 0")
        self._need(
            math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0 = off)"
        )
        self._need(self.resolution is None or self.resolution >= 8, "resolution", "must be at least 8 pixels")
        self._need(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        self._need(self.preview_every >= 0, "preview_every", "must be >= 0")
        self._need(self.preview_count >= 1, "preview_count", "must be at least 1")
        self._need(self.preview_steps >= 1, "preview_steps", "must be at least 1")
        self._need(0 <= self.seed < 2**63, "seed", "must be in [0, 2^63)")
        self._need(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
        Template.parse(self.template)  # TemplateError names the problem

    def _need(self, ok: bool, name: str, problem: str) -> None:
        if not ok:
            raise SettingError(name, "{name} " + problem + f", not {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """From a record that may hold more than settings (a distribution file's ``training``)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def values(self, *kinds: str) -> dict[str, Any]:
        """The settings of the given kinds (``METHOD``, ``LENGTH``, ``SPEED``, ``OUTPUT``), by name.
        With one component the mixture's settings (and ``components`` itself) are left out: they
        change nothing, so one-component records, checkpoints and cache keys stay those of a
        dreamdist without mixtures."""
        skip = {f.name for f in fields(self) if f.metadata["group"] == "mixture"} if self.components == 1 else set()
        return {
            f.name: getattr(self, f.name) for f in fields(self) if f.metadata["kind"] in kinds and f.name not in skip
        }

    def result_settings(self) -> dict[str, Any]:
        """What decides the trained distribution (same images, model and these: same result); the
        threestudio processor's cache key."""
        return self.values(METHOD, LENGTH)
