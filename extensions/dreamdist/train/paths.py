"""Where a run writes (beside ``--out`` by default) and the refusals that keep it from clobbering.

Every refusal happens before any model is loaded or any file is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dreamdist.utils.errors import InputError

PathArg = str | os.PathLike | None


def default_paths(out: str | os.PathLike) -> dict[str, Path]:
    """Where checkpoint, log and previews of ``out`` go by default (beside it)."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return {
        "checkpoint": out.with_name(f"{stem}.ckpt"),
        "log_csv": out.with_name(f"{stem}.log.csv"),
        "preview_dir": out.with_name(f"{stem}.previews"),
    }


@dataclass(frozen=True)
class TrainPaths:
    out: Path
    checkpoint: Path | None  # None: checkpoints are off
    log_csv: Path | None  # None: no CSV log
    preview_dir: Path

    @classmethod
    def of(
        cls,
        out: str | os.PathLike,
        checkpoint: PathArg | bool = None,
        log_csv: PathArg | bool = None,
        preview_dir: PathArg = None,
    ) -> "TrainPaths":
        """``checkpoint``/``log_csv``: None or True = the default beside ``out``, False = off."""
        defaults = default_paths(out)

        def pick(given: PathArg | bool, default: Path) -> Path | None:
            if given is False:
                return None
            return Path(default if given in (None, True) else given)

        return cls(
            Path(out),
            pick(checkpoint, defaults["checkpoint"]),
            pick(log_csv, defaults["log_csv"]),
            Path(preview_dir or defaults["preview_dir"]),
        )

    def check(self, resume: bool, overwrite: bool) -> None:
        """Refuse to overwrite the output or an earlier run's checkpoint unless asked to."""
        out, ckpt = self.out, self.checkpoint
        if out.is_dir():
            raise InputError(f"--out {out} is a folder; give a file name such as {out / 'dist.safetensors'}")
        if out.exists() and not overwrite:
            raise InputError(f"{out} exists; pass --force to overwrite it, or choose another --out")
        if ckpt is not None and ckpt.resolve() == out.resolve():
            raise InputError(f"--checkpoint {ckpt} is the --out file; give the checkpoint another name")
        if resume and (ckpt is None or not ckpt.is_file()):
            raise InputError(f"--resume: no checkpoint at {ckpt}; run without --resume to start a new training run")
        if not resume and ckpt is not None and ckpt.exists() and not overwrite:
            raise InputError(
                f"{ckpt}: a checkpoint of an earlier run exists; pass --resume to continue it, or --force to start over"
            )
