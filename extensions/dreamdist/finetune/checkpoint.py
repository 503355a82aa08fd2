"""Stage-2 checkpoints: what resuming needs to end bit-identical to a run never interrupted.

The trained UNet weights (every weight for ``full``, the adapters for ``lora``), the optimizer, the
CPU generator and the epoch's remaining image order, plus what it may only be resumed with: the
settings, the reference images' hashes, the distribution file's hash and the text encoder's
fingerprint. Written atomically; read with ``weights_only``. (Stage 1's ``dreamdist.train.checkpoint``
holds soft prompts instead of UNet weights; the refusals are the same.)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dreamdist.train.checkpoint import damaged, load_state, save_state
from dreamdist.utils.errors import InputError

FORMAT = "dreamdist.finetune-checkpoint"
VERSION = 1


@dataclass
class FinetuneCheckpoint:
    step: int
    weights: dict[str, torch.Tensor]  # trainable parameters by name, CPU float32
    optimizer: dict[str, Any]
    generator: torch.Tensor
    queue: torch.Tensor
    settings: dict[str, Any]
    images: list[list[str]]
    distribution_sha256: str
    fingerprint_sha256: str
    elapsed_s: float
    last_loss: float = math.nan

    def save(self, path: Path) -> Path:
        state = {
            "format": FORMAT,
            "version": VERSION,
            "step": self.step,
            "weights": self.weights,
            "optimizer": self.optimizer,
            "generator": self.generator,
            "queue": self.queue,
            "settings": json.dumps(self.settings, sort_keys=True),
            "images": json.dumps(self.images),
            "distribution_sha256": self.distribution_sha256,
            "fingerprint_sha256": self.fingerprint_sha256,
            "elapsed_s": float(self.elapsed_s),
            "last_loss": float(self.last_loss),
        }
        return save_state(path, state)

    @classmethod
    def load(cls, path: Path) -> "FinetuneCheckpoint":
        state = load_state(path, FORMAT, VERSION, "fine-tuning")
        try:
            return cls(
                step=int(state["step"]),
                weights=dict(state["weights"]),
                optimizer=state["optimizer"],
                generator=state["generator"],
                queue=state["queue"].clone(),
                settings=json.loads(state["settings"]),
                images=json.loads(state["images"]),
                distribution_sha256=str(state["distribution_sha256"]),
                fingerprint_sha256=str(state["fingerprint_sha256"]),
                elapsed_s=float(state["elapsed_s"]),
                last_loss=float(state.get("last_loss", math.nan)),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise damaged(path, "damaged fine-tuning checkpoint") from None

    def check_resumes(
        self,
        path: Path,
        settings: dict[str, Any],
        images: list[list[str]],
        distribution_sha256: str,
        fingerprint_sha256: str,
        steps: int,
    ) -> None:
        differ = [
            f"{k}: checkpoint {self.settings.get(k)!r}, now {v!r}"
            for k, v in settings.items()
            if self.settings.get(k) != v
        ]
        if differ:
            raise InputError(
                f"{path}: cannot resume with different settings ({'; '.join(differ)}); use the "
                "checkpoint's settings, or --force to start over"
            )
        if self.images != images:
            raise InputError(
                f"{path}: the reference images changed since the checkpoint was written; resume with "
                "the same images, or --force to start over"
            )
        if self.distribution_sha256 != distribution_sha256:
            raise InputError(
                f"{path}: the checkpoint was made with another distribution file; resume with the same "
                "one, or --force to start over"
            )
        if self.fingerprint_sha256 != fingerprint_sha256:
            raise InputError(f"{path}: the checkpoint was made with another base model; resume with the same --model")
        if self.step > steps:
            raise InputError(f"{path}: the checkpoint is at step {self.step}, past --steps {steps}")
