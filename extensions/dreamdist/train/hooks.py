"""Phase hooks: how a profiler looks inside a training step without the trainer knowing about it.

``scripts/bench_train.py`` plugs in a hook that synchronises the device and reads its clock at
each phase boundary; a normal run uses ``NO_HOOK``, which costs nothing (no device syncs).
"""

from __future__ import annotations

from typing import Protocol

# The phases of one step, in order: K-prompt text encoder forward (with the Gaussian and the
# B x S samples), UNet forward on the B x S batch, UNet backward, text encoder backward. When the
# memory plan splits the UNet evaluations into chunks, "unet_fwd" and "unet_bwd" end once per chunk.
PHASES = ("text_fwd", "unet_fwd", "unet_bwd", "text_bwd")


class StepHook(Protocol):
    def begin_step(self, step: int) -> None:
        """Step ``step`` (0-based) starts: its random draws are made, its first phase begins."""

    def end_phase(self, phase: str) -> None:
        """``phase`` (one of ``PHASES``) has been issued to the device (the UNet's phases: once per chunk)."""


class _NoHook:
    def begin_step(self, step: int) -> None:
        pass

    def end_phase(self, phase: str) -> None:
        pass


NO_HOOK: StepHook = _NoHook()
