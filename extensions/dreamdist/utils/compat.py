"""Every difference between the library versions dreamdist supports, in one place.

Two stacks are tested: threestudio's pins (torch 2.0.1, transformers 4.28.1, diffusers 0.19.3,
huggingface_hub < 0.26, numpy 1.x) and the newest releases (torch 2.13+, transformers 5.x,
diffusers 0.4x). The rest of the package calls these helpers instead of testing versions itself.
Each shim names the version that needs it, so it can go when that version stops being supported.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import warnings
from importlib.metadata import version
from typing import Any, Iterator

import torch
from packaging.version import Version

# read from the installed metadata: importing diffusers/transformers here would cost seconds
_TRANSFORMERS = Version(version("transformers"))
_DIFFUSERS = Version(version("diffusers"))


def transformers_dtype_kwargs(dtype: torch.dtype | None) -> dict[str, Any]:
    """The ``from_pretrained`` keyword for a weight dtype: transformers >= 4.56 calls it ``dtype``
    (``torch_dtype`` is deprecated there); 4.28.1 (threestudio's pin) only knows ``torch_dtype``
    and passes an unknown ``dtype`` on to the model's constructor, which fails."""
    if dtype is None:
        return {}
    return {"dtype": dtype} if _TRANSFORMERS >= Version("4.56") else {"torch_dtype": dtype}


def diffusers_dtype_kwargs(dtype: torch.dtype | None) -> dict[str, Any]:
    """The ``DiffusionPipeline.from_pretrained`` keyword for a weight dtype: diffusers >= 0.40 calls it
    ``dtype`` and warns (FutureWarning) on ``torch_dtype``; 0.39 and older (threestudio's pin 0.19.3)
    only know ``torch_dtype``."""
    if dtype is None:
        return {}
    return {"dtype": dtype} if _DIFFUSERS >= Version("0.40") else {"torch_dtype": dtype}


def grad_scaler(device_type: str) -> Any:
    """fp16 loss scaling: ``torch.amp.GradScaler(device)`` exists from torch 2.3; torch 2.0/2.1/2.2
    (threestudio's pin is 2.0.x) have ``torch.cuda.amp.GradScaler``, CUDA only."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device_type)
    return torch.cuda.amp.GradScaler(enabled=device_type == "cuda")


def autocast(device_type: str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for ``dtype``, nothing for fp32: torch 2.0 fails on entering even a *disabled*
    CPU autocast whose dtype is not bfloat16, so fp32 must not build one at all."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


@functools.lru_cache(maxsize=None)
def cpu_autocast_supports(dtype: torch.dtype) -> bool:
    """torch 2.0 autocasts CPU ops to bfloat16 only (float16 warns "Disabling autocast", then fails
    on entering); later releases add float16. Asked of torch itself rather than of its version."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            torch.autocast(device_type="cpu", dtype=dtype)
        except (UserWarning, RuntimeError):
            return False
    return True


@contextlib.contextmanager
def no_pipeline_loading_bar() -> Iterator[None]:
    """diffusers < 0.20 (threestudio's pin 0.19.3) draws "Loading pipeline components..." with a bare
    tqdm that its logging switches do not reach; later releases honour ``disable_progress_bar``."""
    if _DIFFUSERS >= Version("0.20"):
        yield
        return
    module = importlib.import_module("diffusers.pipelines.pipeline_utils")
    original = module.tqdm
    module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        module.tqdm = original


def loads_vae_without_mid_attention() -> bool:
    """The shipped toy model's VAE has no mid-block attention (``mid_block_add_attention=False``),
    a config key diffusers reads from 0.30 on; 0.19.3 (threestudio's pin) refuses it."""
    return _DIFFUSERS >= Version("0.30")
