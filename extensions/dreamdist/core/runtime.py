"""Device, precision and model loading shared by training, 2D sampling and the demo."""

from __future__ import annotations

import os
from typing import Literal

import torch

from dreamdist.core.encoder import SoftPromptEncoder
from dreamdist.utils.compat import cpu_autocast_supports, diffusers_dtype_kwargs, no_pipeline_loading_bar
from dreamdist.utils.errors import InputError

Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def precision_name(dtype: torch.dtype) -> str:
    """ "fp32"/"fp16"/"bf16" as the flags spell them (what files and manifests record)."""
    return {v: k for k, v in _DTYPES.items()}.get(dtype, str(dtype))


def pick_device(device: str | None = None) -> torch.device:
    """``None``/"auto" means CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return dev


def resolve_dtype(precision: str, device: torch.device, auto_cuda: str = "fp16") -> torch.dtype:
    """ "auto" is fp32 on CPU (half precision is slow or unsupported there) and ``auto_cuda`` on GPU."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        precision = auto_cuda if device.type == "cuda" else "fp32"
    dtype = _DTYPES[precision]
    if device.type == "cpu" and dtype != torch.float32 and not cpu_autocast_supports(dtype):
        raise InputError(
            f"precision {precision} on the CPU needs a newer torch than {torch.__version__}; use fp32 or bf16 there"
        )
    return dtype


def load_pipeline(model: str | os.PathLike, device: torch.device, dtype: torch.dtype = torch.float32):
    """A diffusers text-to-image pipeline (whatever class the model folder names), no safety checker
    (it needs a vision model we never load), on ``device``/``dtype``."""
    from diffusers import DiffusionPipeline

    try:
        with no_pipeline_loading_bar():
            pipe = DiffusionPipeline.from_pretrained(
                model, **diffusers_dtype_kwargs(dtype), safety_checker=None, requires_safety_checker=False
            )
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load model {model!r}: {exc}".splitlines()[0]) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def native_resolution(pipe) -> tuple[int, int]:
    """(the model's native image size in pixels, the multiple every size must be) of a pipeline:
    the UNet's sample size times the VAE's scale, and one latent pixel per UNet down-sampling."""
    vae_scale = int(pipe.vae_scale_factor)
    sample = pipe.unet.config.sample_size
    sample = sample if isinstance(sample, int) else int(sample[0])
    return int(sample) * vae_scale, vae_scale * 2 ** (len(pipe.unet.config.block_out_channels) - 1)


def encoder_of(pipe) -> SoftPromptEncoder:
    return SoftPromptEncoder(pipe.tokenizer, pipe.text_encoder)
