"""Derived seeds: one user-facing seed names several independent random streams (the prompt sample,
the initial latents, the scheduler's noise, a training run's draws), each stable across machines,
devices and Python versions."""

from __future__ import annotations

import hashlib

MAX_SEED = 2**63 - 1


def derived_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named random ``stream`` of ``seed`` ("latents", "scheduler", "train")."""
    digest = hashlib.blake2b(f"dreamdist:{stream}:{int(seed)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & MAX_SEED
