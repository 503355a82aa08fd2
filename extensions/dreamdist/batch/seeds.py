"""Seed and GPU lists from the command line, refused early with a message naming the bad part."""

from __future__ import annotations

import re

from dreamdist.utils.errors import InputError

MAX_SEED = 2**32 - 1  # pytorch-lightning's seed_everything range, which threestudio calls
_PART = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_seeds(spec: str) -> list[int]:
    """ "0-199,300,305-310" -> [0..199, 300, 305..310]; ranges are inclusive, order kept, repeats dropped."""
    seeds: list[int] = []
    seen: set[int] = set()
    parts = [p.strip() for p in str(spec).split(",")]
    if not any(parts):
        raise InputError("--seeds is empty; give seeds like 0-199,300,305-310")
    for part in parts:
        m = _PART.match(part)
        if not m:
            raise InputError(f"--seeds: {part!r} is not a seed or range (use e.g. 0-199,300,305-310; seeds are >= 0)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InputError(f"--seeds: range {part!r} runs backwards; write {hi}-{lo}")
        if hi > MAX_SEED:
            raise InputError(f"--seeds: {hi} is above the largest seed {MAX_SEED}")
        for s in range(lo, hi + 1):
            if s not in seen:
                seen.add(s)
                seeds.append(s)
    return seeds


def format_seeds(seeds: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (for messages and the manifest header)."""
    out: list[str] = []
    ordered = sorted(set(seeds))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def parse_gpus(spec: str) -> list[str]:
    """ "0,1,2,3" -> ["0", "1", "2", "3"]: one job slot each. Entries are passed to CUDA_VISIBLE_DEVICES
    as written, so GPU UUIDs and MIG ids work; listing a GPU twice runs two jobs on it."""
    gpus = [g.strip() for g in str(spec).split(",") if g.strip()]
    if not gpus:
        raise InputError("--gpus is empty; list at least one GPU, e.g. --gpus 0 or --gpus 0,1,2,3")
    for g in gpus:
        if not re.match(r"^[A-Za-z0-9_:/.-]+$", g):
            raise InputError(f"--gpus: {g!r} is not a GPU index or id")
    return gpus
