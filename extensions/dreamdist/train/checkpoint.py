"""Training checkpoints: what resuming needs to end bit-identical to a run never interrupted.

A checkpoint holds the learned vectors, the optimizer (and fp16 loss scaler) state, the CPU
generator's state and the epoch's remaining image order, plus what it may only be resumed with:
the settings that define the optimisation, the reference images' hashes and the text encoder's
fingerprint. Written atomically (a crash keeps the previous one); read with ``weights_only``.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dreamdist.core.distfile import Fingerprint, file_sha256
from dreamdist.core.runtime import precision_name
from dreamdist.core.templates import Template
from dreamdist.train.config import METHOD, TrainConfig
from dreamdist.utils.atomic import atomic_path
from dreamdist.utils.errors import InputError

CHECKPOINT_FORMAT = "dreamdist.train-checkpoint"
CHECKPOINT_VERSION = 2
# Version 1 (before Min-SNR weighting, random crops and the authors-code orthogonality loss) trained
# with no SNR weighting and centre crops; its draws are those of version 2 with these settings, so it
# resumes bit-identically when given them. Its "squared" orthogonality loss was half the authors'
# value (pairs i < j only), which no setting reproduces now: such a checkpoint is refused.
LEGACY_SETTINGS = {1: {"snr_gamma": 0.0, "snr_kind": "min-snr", "crop": "center"}}
LEGACY_HINT = {
    1: "a checkpoint of an older dreamdist, from before Min-SNR weighting and random crops: resume it "
    "with --snr-gamma 0 --crop center (--flip if it flipped: it did by default)"
}


def resume_settings(config: TrainConfig, resolution: int, template: Template, dtype: torch.dtype) -> dict[str, Any]:
    """The settings a checkpoint resumes only with: the optimisation's (resolution and template as
    resolved for the model) and the precision it ran at."""
    settings = config.values(METHOD)
    settings.update(resolution=resolution, template=str(template), precision=precision_name(dtype))
    return settings


def image_ids(paths: list[Path]) -> list[list[str]]:
    """[name, sha256] per reference image: a resume with changed images is refused."""
    return [[p.name, file_sha256(p)] for p in paths]


def damaged(path: Path, what: str = "not a readable training checkpoint") -> InputError:
    """A checkpoint that cannot be resumed, in one line with the way out."""
    return InputError(f"{path}: {what}; run with --force to start over")


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """``torch.save`` a checkpoint's state atomically: a crash keeps the previous checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def load_state(path: Path, fmt: str, version: int, what: str) -> dict[str, Any]:
    """The state ``save_state`` wrote, checked to be a ``fmt`` checkpoint no newer than ``version``;
    anything unreadable, foreign or newer is one ``InputError`` line (``what``: "training", ...)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise damaged(path, f"not a readable {what} checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise damaged(path, f"not a dreamdist {what} checkpoint")
    if int(state.get("version", 0)) > version:
        raise InputError(f"{path}: checkpoint version {state['version']} is newer than this dreamdist; upgrade it")
    return state


@dataclass
class Checkpoint:
    step: int
    ctx: torch.Tensor  # (K, M, d_tok) float32, CPU
    optimizer: dict[str, Any]
    scaler: dict[str, Any]  # {} unless fp16 loss scaling
    generator: torch.Tensor  # the CPU generator's state
    queue: torch.Tensor  # image indices left in the current epoch
    settings: dict[str, Any]  # resume_settings()
    images: list[list[str]]  # image_ids()
    fingerprint: Fingerprint
    elapsed_s: float
    last_loss: float = math.nan
    assignment: torch.Tensor | None = None  # (N,) mixture component per image; None with one component
    version: int = CHECKPOINT_VERSION  # of the file it was read from

    def save(self, path: Path) -> Path:
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "step": self.step,
            "ctx": self.ctx,
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "generator": self.generator,
            "queue": self.queue,
            "settings": json.dumps(self.settings, sort_keys=True),
            "images": json.dumps(self.images),
            "fingerprint": self.fingerprint.to_json(),
            "fingerprint_probe": self.fingerprint.probe,
            "elapsed_s": float(self.elapsed_s),
            "last_loss": float(self.last_loss),
        }
        if self.assignment is not None:
            state["assignment"] = self.assignment
        return save_state(path, state)

    @classmethod
    def load(cls, path: Path) -> "Checkpoint":
        """Read ``path``; any unreadable, foreign, newer or damaged file is one ``InputError`` line."""
        state = load_state(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "training")
        version = int(state.get("version", 0))
        try:
            fp = json.loads(state["fingerprint"])
            settings = {**LEGACY_SETTINGS.get(version, {}), **json.loads(state["settings"])}
            if version == 1 and settings.get("ortho_kind") == "squared":
                raise InputError(
                    f"{path}: this checkpoint's 'squared' orthogonality loss was half the authors' "
                    "value, which no setting reproduces now; run with --force to start over"
                )
            return cls(
                step=int(state["step"]),
                ctx=state["ctx"],
                optimizer=state["optimizer"],
                scaler=state.get("scaler") or {},
                generator=state["generator"],
                queue=state["queue"].clone(),
                settings=settings,
                images=json.loads(state["images"]),
                version=version,
                fingerprint=Fingerprint(fp["hidden_size"], fp["vocab_size"], fp["sha256"], state["fingerprint_probe"]),
                elapsed_s=float(state["elapsed_s"]),
                last_loss=float(state.get("last_loss", math.nan)),
                assignment=state.get("assignment"),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise damaged(path, "damaged training checkpoint") from None

    def check_resumes(
        self, path: Path, settings: dict[str, Any], fingerprint: Fingerprint, model_name: str, steps: int
    ) -> None:
        """Refuse to resume with other settings, another text encoder, or fewer steps than done."""
        differ = [
            f"{k}: checkpoint {self.settings.get(k)!r}, now {v!r}"
            for k, v in settings.items()
            if self.settings.get(k) != v
        ]
        if differ:
            hint = f" ({LEGACY_HINT[self.version]})" if self.version in LEGACY_HINT else ""
            raise InputError(
                f"{path}: cannot resume with different settings ({'; '.join(differ)}){hint}; use the "
                "checkpoint's settings, or --force to start over"
            )
        if not self.fingerprint.matches(fingerprint):
            raise InputError(
                f"{path}: the checkpoint was trained with another text encoder than {model_name!r}; "
                "resume with the same --model"
            )
        if self.step > steps:
            raise InputError(f"{path}: the checkpoint is at step {self.step}, past --steps {steps}")

    def check_images(self, path: Path, images: list[list[str]]) -> None:
        if self.images != images:
            raise InputError(
                f"{path}: the reference images changed since the checkpoint was written; resume with "
                "the same images, or --force to start over"
            )
