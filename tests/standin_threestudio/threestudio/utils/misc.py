"""STAND-IN for threestudio.utils.misc (the functions prompt processors use)."""

import gc
import os

import torch
from packaging import version


def parse_version(ver: str):
    return version.parse(ver)


def get_rank():
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        rank = os.environ.get(key)
        if rank is not None:
            return int(rank)
    return 0


def get_device():
    # threestudio: torch.device(f"cuda:{get_rank()}") unconditionally; the stand-in falls back to CPU.
    if torch.cuda.is_available():
        return torch.device(f"cuda:{get_rank()}")
    return torch.device("cpu")


def cleanup():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def barrier():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
