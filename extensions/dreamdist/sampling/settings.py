"""The one settings object of the sampling commands, and every check of their arguments.

``sample``, ``sweep-gamma`` and ``mix`` take the same settings: the command line builds one
``SampleSettings`` from its flags, Python callers build one (or pass its fields as keywords), and
``SampleSettings.check`` refuses bad values in one line naming the flag before any model loads or
any file is written.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Sequence

from dreamdist.core.gaussian import check_mix_rule, check_std_scales, check_weights
from dreamdist.core.seeds import MAX_SEED
from dreamdist.core.templates import Template
from dreamdist.sampling.render import RenderSettings
from dreamdist.utils.errors import InputError

DEFAULT_GAMMAS = (0.0, 0.5, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class SampleSettings:
    """Everything a sampling command takes besides its distribution files and output folder.

    ``gamma`` is one value or several (several: one grid row each); image ``i`` of the run (``i`` in
    ``range(n)``, or the given ``indices``) uses seed ``seed + i``. ``template``/``model``/``height``/
    ``width`` default to each file's own training template, the first file's base model and the
    model's native size. ``weights`` (eq. 7, one per file) default to equal weights. ``std_scale``
    scales each file's sigma before the mix (the authors' generate.py ``--std_scale``): one value for
    every file or one per file, default 1; ``gamma`` scales the mixed sigma after it.
    """

    gamma: float | Sequence[float] = 1.0
    n: int = 16
    seed: int = 0
    indices: Sequence[int] | None = None
    template: str | None = None
    weights: Sequence[float] | None = None
    mix_rule: str = "paper"
    std_scale: float | Sequence[float] | None = None
    steps: int = 50
    guidance_scale: float = 7.5
    negative: str = ""
    batch_size: int = 4
    height: int | None = None
    width: int | None = None
    model: str | os.PathLike | None = None
    device: str | None = None
    precision: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:  # one spelling for each field, whatever the caller passed
        gammas = [self.gamma] if isinstance(self.gamma, (int, float)) else list(self.gamma)
        object.__setattr__(self, "gamma", tuple(float(g) for g in gammas))
        object.__setattr__(self, "indices", tuple(self.indices) if self.indices else None)
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if self.std_scale is not None:
            scales = [self.std_scale] if isinstance(self.std_scale, (int, float)) else list(self.std_scale)
            object.__setattr__(self, "std_scale", tuple(float(s) for s in scales))

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @property
    def gammas(self) -> list[float]:
        return list(self.gamma)  # type: ignore[arg-type]  # a tuple after __post_init__

    def std_scales(self, files: Sequence[Any]) -> list[float]:
        """One sigma scale per file of ``files`` (checked: 1 value or one per file)."""
        return check_std_scales(self.std_scale, [str(f) for f in files], "--std-scale")

    @property
    def render(self) -> RenderSettings:
        """The part every image of the run is rendered with."""
        return RenderSettings(self.steps, self.guidance_scale, self.negative, self.batch_size, self.height, self.width)

    @property
    def image_indices(self) -> list[int]:
        """The run's image indices: ``indices`` when given, else 0 .. n-1."""
        return [int(i) for i in self.indices] if self.indices else list(range(int(self.n)))

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in self.image_indices]

    def check(self, files: Sequence[Any]) -> None:
        """Refuse anything that cannot work, in one line naming the flag and the fix; ``files`` are
        the distribution files the weights belong to."""
        if not files:
            raise InputError("give at least one distribution file")
        check_number_ranges(self.n, self.seed, self.indices, self.gammas)
        check_mix_rule(self.mix_rule, "--mix-rule")
        if self.weights is not None:
            check_weights(self.weights, [str(f) for f in files], "--weights")
        self.std_scales(files)
        self.render.validate()
        if self.template is not None:
            Template.parse(self.template)  # raises TemplateError with the fix


def check_number_ranges(n: int, seed: int, indices: Sequence[int] | None, gammas: Sequence[float]) -> list[int]:
    """Validate counts, seeds and gammas; return the image indices of the run."""
    if indices:
        if any(i < 0 for i in indices):
            raise InputError(f"--index values must be >= 0, got {list(indices)}")
        if len(set(indices)) != len(indices):
            raise InputError(f"--index values repeat: {list(indices)}")
        idx = [int(i) for i in indices]
    else:
        if n < 1:
            raise InputError(f"--n must be at least 1, not {n}")
        idx = list(range(int(n)))
    if seed < 0 or seed + max(idx) > MAX_SEED:
        raise InputError(f"seeds must lie in [0, 2**63 - 1]; --seed {seed} with index {max(idx)} does not")
    if not gammas:
        raise InputError("give at least one gamma")
    for g in gammas:
        if not math.isfinite(g) or g < 0:
            raise InputError(f"gamma must be a finite number >= 0 (0 is the mean prompt), not {g}")
    return idx


def mix_weights(steps_between: int) -> list[float]:
    """Weights of the second distribution along a mix row: 0, 1/(N+1), ..., 1."""
    if steps_between < 0:
        raise InputError(f"--steps-between must be >= 0, not {steps_between}")
    return [j / (steps_between + 1) for j in range(steps_between + 2)]
