"""What a training run hands back: per-step info, the result, and the two ways it ends early."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dreamdist.utils.errors import DreamdistError


class TrainingDiverged(DreamdistError):
    """The loss (or the gradient) became NaN or inf; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM (or a callback's KeyboardInterrupt) stopped training after a complete step;
    a checkpoint was written when checkpoints are on. ``--resume`` continues from it."""

    def __init__(self, step: int, checkpoint: Path | None, signal_name: str = "SIGINT") -> None:
        self.step = step
        self.checkpoint = checkpoint
        self.signal_name = signal_name
        where = (
            f"checkpoint saved to {checkpoint}; continue with --resume"
            if checkpoint
            else "no checkpoint (checkpoints are off)"
        )
        super().__init__(f"interrupted ({signal_name}) after step {step}: {where}")


class PreviewWarning(UserWarning):
    """A preview grid could not be rendered; training goes on."""


@dataclass(frozen=True)
class StepInfo:
    """What a step did, handed to ``callback`` after the step is complete."""

    step: int
    total_steps: int
    loss: float
    diffusion_loss: float
    ortho_loss: float
    grad_norm: float
    elapsed_s: float


@dataclass
class TrainResult:
    out: Path | None  # the distribution file; None when this run stopped before the last step
    checkpoint: Path | None
    log_csv: Path | None
    step: int  # steps done in total (resumed ones included)
    total_steps: int
    finished: bool
    image_count: int
    resumed_from: int  # 0 for a fresh run
    diffusion_losses: list[float] = field(default_factory=list)  # this run's steps only
    ortho_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # caching the latents plus this run's steps
    vae_images_encoded: int = 0
    previews: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    latent_cache_s: float = 0.0  # encoding every image (and its flip) with the VAE, before the first step
