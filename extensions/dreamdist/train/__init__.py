"""Training a prompt distribution from reference images (DreamDistribution, Zhao et al. 2023, sec. 3).

One job per module: ``config`` (the settings, the one place they are written), ``trainer`` (the
method: draw, step, update, loop), ``model`` (the frozen diffusion model), ``checkpoint``
(resumable state), ``paths`` (where a run writes, refusals to clobber), ``runlog`` (CSV log,
progress bar, previews, messages), ``hooks`` (profiling), ``outcome`` (results and early ends).
"""

from dreamdist.train.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, Checkpoint
from dreamdist.train.config import (
    LENGTH,
    METHOD,
    ORTHO_KINDS,
    OUTPUT,
    SPEED,
    SettingError,
    SettingWarning,
    TrainConfig,
)
from dreamdist.train.hooks import PHASES, StepHook
from dreamdist.train.model import FrozenModel, resolve_precision
from dreamdist.train.outcome import PreviewWarning, StepInfo, TrainingDiverged, TrainingInterrupted, TrainResult
from dreamdist.train.paths import TrainPaths, default_paths
from dreamdist.train.runlog import CSV_COLUMNS, messages_to
from dreamdist.train.trainer import Trainer, train_distribution

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CSV_COLUMNS",
    "LENGTH",
    "METHOD",
    "ORTHO_KINDS",
    "OUTPUT",
    "PHASES",
    "SPEED",
    "Checkpoint",
    "FrozenModel",
    "PreviewWarning",
    "SettingError",
    "SettingWarning",
    "StepHook",
    "StepInfo",
    "TrainConfig",
    "TrainPaths",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "default_paths",
    "messages_to",
    "resolve_precision",
    "train_distribution",
]
