"""Stage 2: fine-tune the diffusion model's UNet after the prompt distribution (Zeng, Suganuma & Okatani's
two-stage recipe, with the distribution's samples as the condition).

One job per module: ``config`` (the settings), ``trainer`` (the method and the loop), ``checkpoint``
(resumable state), ``prior`` (DreamBooth's class images, drawn once and cached), ``output`` (the
diffusers pipeline folder: the new UNet, every other part linked to the base model).
"""

from dreamdist.finetune.config import METHODS, FinetuneConfig
from dreamdist.finetune.output import INFO_NAME, read_info, write_pipeline_folder
from dreamdist.finetune.trainer import (
    CSV_COLUMNS,
    FinetuneResult,
    FinetuneStep,
    FinetuneTrainer,
    finetune,
    finetune_paths,
)

__all__ = [
    "CSV_COLUMNS",
    "INFO_NAME",
    "METHODS",
    "FinetuneConfig",
    "FinetuneResult",
    "FinetuneStep",
    "FinetuneTrainer",
    "finetune",
    "finetune_paths",
    "read_info",
    "write_pipeline_folder",
]
