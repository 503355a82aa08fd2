"""How much memory a training step needs, known before any weight is loaded, and the UNet chunking
that makes it fit the device (issue 17).

**The estimate** is a dry run of the model's own classes, built from its configs on the ``meta``
device (shapes, no data, no compute): the UNet's forward and backward at batch 1 and 2 (memory is
linear in the batch, so that gives a fixed part and a part per UNet evaluation, with and without
gradient checkpointing), the K-prompt text encoder's forward and backward with the Gaussian and the
B x S samples, and one VAE encoding call of the latent cache. ``LiveBytes`` follows every tensor
storage the dry run allocates and frees, as the allocator would see it, and reports the peak.
Two things the meta device does not do by itself are reproduced around the model's calls:

- *attention*: on CUDA, ``scaled_dot_product_attention`` runs a flash / memory-efficient kernel
  that keeps q, k, v, the output and the log-sum-exp for backward, not the T x T attention matrix;
  the dry run stands in such a kernel. On the CPU the kind is asked of torch itself (torch >= 2.1
  has a flash CPU kernel, 2.0 materialises the matrix) by looking at what one small call saves;
- *autocast* (bf16 / fp16 runs on CUDA): ``linear`` and ``conv2d`` run in the half dtype and
  ``group_norm`` / ``layer_norm`` in float32, as CUDA's autocast lists say, so the float32 copies
  those norms keep for backward are counted.

Peak = weights (unless already loaded) + latent cache + learned vectors with AdamW state +
max(VAE caching call, text encoder activations held + UNet pass at the chunk size, text side alone).
Accuracy: ``tests/test_memory.py`` holds it to 10 % of the tensor memory ``LiveBytes`` measures in
real CPU steps (fp32, the tiny model at 32 and 64 px, with and without gradient checkpointing); it
comes within 1 % there, on torch 2.13 (flash CPU attention) and 2.0.1 (math attention) alike, and
within 2-5 % of the bench's medium model (``scripts/bench_train.py``, where the process's RSS growth
over a step agrees too). A GPU adds what the CPU cannot show (allocator rounding and fragmentation,
cuDNN / cuBLAS workspaces), which is why a plan must fit ``estimate * FIT_FACTOR + FIT_RESERVE``
into the free memory; it was not measured on a GPU here.

**The plan** (``--unet-batch auto``): all B x S UNet evaluations of a step at once when that fits
the free memory (``torch.cuda.mem_get_info`` on CUDA, available RAM on the CPU), else the largest
balanced chunks that fit, else gradient checkpointing with chunks; and as many images per VAE call
(up to 8) as fit while caching latents. A chunked step sums the chunks' gradients on the sampled
conditionings and sends them through the Gaussian and the text encoder once, so it computes the
same update (``Trainer.step``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GIB = float(1 << 30)
FIT_FACTOR = 1.10  # allocator rounding and fragmentation
FIT_RESERVE = 3 << 28  # 0.75 GiB: cuDNN / cuBLAS workspaces, kernels' scratch buffers
TEXT_LENGTH = 77
CHUNK_ATTEMPTS = (False, True)  # gradient checkpointing: first without, then with


# --------------------------------------------------------------------------- measuring


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages allocated inside the block that are still alive, and their peak.

    Storages that existed before the block (weights) are not counted, nor are views of them. Works
    for real tensors and for ``meta`` ones alike (a dry run's "allocations" are then exact).
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._bound = 0  # live bytes, dead storages not yet swept: an upper bound
        self.peak = 0

    @property
    def now(self) -> int:
        self._sweep()
        return self._bound

    def _sweep(self) -> None:
        dead = [key for key, (ref, _) in self._live.items() if ref.expired()]
        for key in dead:
            self._bound -= self._live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage()._cdata for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                known = self._live.get(key)
                if known is not None and known[0].expired():  # a freed storage's address, reused
                    self._bound -= self._live.pop(key)[1]
                    known = None
                if known is None and key not in inputs:  # a new allocation, not a view or in-place
                    self._live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self._bound += storage.nbytes()
        if self._bound > self.peak:  # the peak can only move when the upper bound passes it
            self._sweep()
            self.peak = max(self.peak, self._bound)
        return out


def attention_kind(device_type: str) -> str:
    """``flash`` (q, k, v, output and log-sum-exp kept for backward) or ``math`` (the T x T matrix)."""
    if device_type == "cuda":
        return "flash"  # torch >= 2.0: flash / memory-efficient kernels for every dtype we run
    return _probe_attention(device_type)


@functools.lru_cache(maxsize=None)
def _probe_attention(device_type: str) -> str:
    q = torch.zeros(1, 1, 8, 4, device=device_type, requires_grad=True)
    shapes: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.scaled_dot_product_attention(q, q, q)
    return "math" if any(s[-2:] == (8, 8) for s in shapes) else "flash"


def free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` now: CUDA's free memory, or the machine's available RAM on the CPU;
    None where it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            import psutil

            return int(psutil.virtual_memory().available)
        except ImportError:
            pass
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    return None


# --------------------------------------------------------------------------- what the model is


@dataclass(frozen=True)
class ModelConfigs:
    """The configs of a Stable-Diffusion-style model's UNet, text encoder and VAE: everything the
    estimate needs, read without loading weights. ``loaded``: the weights are already in memory."""

    unet: dict[str, Any]
    text_encoder: dict[str, Any]
    vae: dict[str, Any]
    loaded: bool = False

    @classmethod
    def read(cls, model: Any) -> "ModelConfigs":
        """From a diffusers folder or hub id (three small JSON files), or a loaded pipeline."""
        if isinstance(model, (str, os.PathLike)):
            from diffusers import AutoencoderKL, UNet2DConditionModel
            from transformers import CLIPTextConfig

            unet = UNet2DConditionModel.load_config(model, subfolder="unet")
            vae = AutoencoderKL.load_config(model, subfolder="vae")
            text = CLIPTextConfig.from_pretrained(model, subfolder="text_encoder").to_dict()
            return cls(dict(unet), text, dict(vae))
        return cls(dict(model.unet.config), model.text_encoder.config.to_dict(), dict(model.vae.config), loaded=True)

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    @property
    def native_resolution(self) -> int:
        sample = self.unet["sample_size"]
        return int(sample if isinstance(sample, int) else sample[0]) * self.vae_scale

    @property
    def resolution_multiple(self) -> int:
        """Image sizes must be multiples of this: one latent pixel per UNet down-sampling."""
        return self.vae_scale * 2 ** (len(self.unet["block_out_channels"]) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet["in_channels"])

    @property
    def text_width(self) -> int:
        return int(self.text_encoder["hidden_size"])

    def meta_text_encoder(self) -> torch.nn.Module:
        """The text encoder on the ``meta`` device: its structure and config, no weights."""
        from transformers import CLIPTextConfig, CLIPTextModel

        return _meta_module(lambda: CLIPTextModel(CLIPTextConfig(**self.text_encoder)), torch.float32).eval()

    def key(self, part: str) -> str:
        return json.dumps(getattr(self, part), sort_keys=True, default=str)


# stabilityai/stable-diffusion-2-1 (the paper's model), the entries of its unet/, text_encoder/ and
# vae/config.json that differ from the classes' defaults: plan for it without downloading anything.
SD21_CONFIGS = ModelConfigs(
    unet={
        "attention_head_dim": [5, 10, 20, 20],
        "block_out_channels": [320, 640, 1280, 1280],
        "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "layers_per_block": 2,
        "sample_size": 96,
        "in_channels": 4,
        "out_channels": 4,
        "use_linear_projection": True,
        "upcast_attention": True,
    },
    text_encoder={
        "vocab_size": 49408,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 23,
        "num_attention_heads": 16,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "projection_dim": 512,
    },
    vae={
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "layers_per_block": 2,
        "latent_channels": 4,
        "sample_size": 768,
    },
)


@dataclass(frozen=True)
class Workload:
    """One step's shapes and precision."""

    num_prompts: int  # K
    num_tokens: int  # M
    batch_size: int  # B
    samples: int  # S
    resolution: int
    dtype: torch.dtype
    device_type: str
    cached_latents: int  # entries of the latent cache (images x crops x flips)
    vae_batch: int = 8  # the most images per VAE call while caching

    @property
    def evaluations(self) -> int:
        return self.batch_size * self.samples


# --------------------------------------------------------------------------- dry runs


class _FlashAttention(torch.autograd.Function):
    """Memory stand-in of a flash / memory-efficient attention kernel: keeps q, k, v, the output
    and the float32 log-sum-exp for backward, never the attention matrix."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@contextlib.contextmanager
def _device_semantics(attention: str, autocast_dtype: torch.dtype | None) -> Iterator[None]:
    """Around a meta dry run: the target device's attention kernel and CUDA autocast's op policy.
    The functions are swapped in ``torch.nn.functional`` itself (the models look them up there at
    each call), for the second or two of a dry run, before training starts."""
    names = ("scaled_dot_product_attention", "linear", "conv2d", "group_norm", "layer_norm")
    real = {name: getattr(F, name) for name in names}
    half = autocast_dtype

    def cast(dtype, *tensors):
        return [t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors]

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        if half is not None:
            q, k, v = cast(half, q, k, v)
        if attention == "flash":
            return _FlashAttention.apply(q, k, v)
        return real["scaled_dot_product_attention"](
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kwargs
        )

    def linear(x, weight, bias=None):
        return real["linear"](*cast(half, x, weight, bias))

    def conv2d(x, weight, bias=None, *args, **kwargs):
        return real["conv2d"](*cast(half, x, weight, bias), *args, **kwargs)

    def group_norm(x, groups, weight=None, bias=None, eps=1e-5):
        return real["group_norm"](*cast(torch.float32, x), groups, *cast(torch.float32, weight, bias), eps)

    def layer_norm(x, shape, weight=None, bias=None, eps=1e-5):
        return real["layer_norm"](*cast(torch.float32, x), shape, *cast(torch.float32, weight, bias), eps)

    patched = {"scaled_dot_product_attention": sdpa}
    if half is not None:
        patched.update(linear=linear, conv2d=conv2d, group_norm=group_norm, layer_norm=layer_norm)
    for name, fn in patched.items():
        setattr(F, name, fn)
    try:
        yield
    finally:
        for name, fn in real.items():
            setattr(F, name, fn)


def _meta_module(build: Callable[[], torch.nn.Module], dtype: torch.dtype) -> torch.nn.Module:
    import warnings

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        module = build()
    # _apply, not .to(): diffusers' .to() warns about dtype casts meant for real weights
    module._apply(lambda t: t.to(dtype) if t.is_floating_point() else t)
    return module.requires_grad_(False)


def _weight_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _autocast(dtype: torch.dtype) -> torch.dtype | None:
    return dtype if dtype in (torch.float16, torch.bfloat16) else None


@functools.lru_cache(maxsize=64)
def _unet_dry_run(
    config: str,
    dtype: torch.dtype,
    attention: str,
    latent: tuple[int, int, int],
    text: tuple[int, int],
    n: int,
    checkpointing: bool,
) -> tuple[int, int]:
    """(weight bytes, peak bytes of n UNet evaluations' forward + loss + backward to the conditionings)."""
    from diffusers import UNet2DConditionModel

    unet = _meta_module(lambda: UNet2DConditionModel.from_config(json.loads(config)), dtype)
    if checkpointing:
        unet.enable_gradient_checkpointing()
        unet.train()  # diffusers < 0.20 checkpoints in training mode only (the UNet has no dropout)
    else:
        unet.eval()
    meta = {"device": "meta"}
    cond = torch.empty(n, *text, **meta, requires_grad=True)
    with LiveBytes() as live, _device_semantics(attention, _autocast(dtype)):
        latents = torch.empty(n, *latent, **meta, dtype=dtype)
        timesteps = torch.zeros(n, dtype=torch.long, **meta)
        target = torch.empty(n, *latent, **meta)
        pred = unet(latents, timesteps, encoder_hidden_states=cond.to(dtype)).sample
        loss = ((pred.float() - target).square().mean(dim=(1, 2, 3)) * torch.empty(n, **meta)).sum()
        del pred
        loss.backward()
    return _weight_bytes(unet), live.peak


@functools.lru_cache(maxsize=32)
def _text_dry_run(config: str, dtype: torch.dtype, attention: str, k: int, evaluations: int) -> tuple[int, int, int]:
    """(weight bytes, bytes held after the K prompts' forward + Gaussian + samples, peak of forward and
    backward)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    settings = json.loads(config)
    te = _meta_module(lambda: CLIPTextModel(CLIPTextConfig(**settings)), dtype).eval()
    width, token_dim = int(settings["hidden_size"]), te.get_input_embeddings().weight.shape[1]
    meta = {"device": "meta"}
    ctx = torch.empty(k, TEXT_LENGTH, token_dim, **meta, requires_grad=True)
    embeds: list[torch.Tensor] = []
    hook = te.get_input_embeddings().register_forward_hook(lambda module, args, out: embeds[0])
    try:
        with LiveBytes() as live, _device_semantics(attention, _autocast(dtype)):
            embeds.append(ctx.to(dtype) * 1)  # the soft prompts placed in the template (a new tensor)
            features = te(input_ids=torch.zeros(k, TEXT_LENGTH, dtype=torch.long, **meta)).last_hidden_state.float()
            mu, sigma = features.mean(dim=0), features.std(dim=0)
            w = torch.empty(evaluations, TEXT_LENGTH, width, **meta)
            cond = mu + w * sigma
            pooled = F.normalize(features[:, -1], dim=-1)
            ortho = (pooled @ pooled.T).square().sum()
            embeds.clear()
            del w, pooled
            held = live.now
            torch.autograd.backward([cond, ortho], [torch.empty_like(cond), None])
    finally:
        hook.remove()
    return _weight_bytes(te), held, live.peak


@functools.lru_cache(maxsize=16)
def _vae_dry_run(config: str, dtype: torch.dtype, attention: str, n: int, resolution: int) -> tuple[int, int]:
    """(weight bytes, peak bytes of encoding n images without gradients)."""
    from diffusers import AutoencoderKL

    vae = _meta_module(lambda: AutoencoderKL.from_config(json.loads(config)), dtype).eval()
    with torch.no_grad(), LiveBytes() as live, _device_semantics(attention, _autocast(dtype)):
        dist = vae.encode(torch.empty(n, 3, resolution, resolution, device="meta", dtype=dtype)).latent_dist
        mean, std = dist.mean.float(), dist.std.float()
        del dist, mean, std
    return _weight_bytes(vae), live.peak


# --------------------------------------------------------------------------- the estimate


@dataclass
class MemoryEstimate:
    """Bytes a training run needs; ``peak(chunk, checkpointing)`` for a UNet chunk size."""

    configs: ModelConfigs
    work: Workload
    attention: str
    weights: int = 0  # UNet + text encoder + VAE at the run's dtype
    fixed: int = 0  # latent cache, learned vectors + gradient + AdamW state
    vae: tuple[float, float] = (0.0, 0.0)  # (fixed, per image) bytes of a VAE call while caching latents
    text_held: int = 0  # text-encoder activations, Gaussian and samples held through the UNet passes
    text_peak: int = 0  # peak of the text side alone (forward and backward)
    _unet: dict[bool, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, configs: ModelConfigs, work: Workload) -> "MemoryEstimate":
        attention = attention_kind(work.device_type)
        estimate = cls(configs, work, attention)
        te_weights, estimate.text_held, estimate.text_peak = _text_dry_run(
            configs.key("text_encoder"), work.dtype, attention, work.num_prompts, work.evaluations
        )
        vae_weights, one = _vae_dry_run(configs.key("vae"), work.dtype, attention, 1, work.resolution)
        two = _vae_dry_run(configs.key("vae"), work.dtype, attention, 2, work.resolution)[1]
        estimate.vae = (max(0.0, 2.0 * one - two), float(two - one))
        unet_weights = estimate.unet_dry_run(1, False)[0]
        estimate.weights = unet_weights + te_weights + vae_weights
        latent = configs.latent_channels * (work.resolution // configs.vae_scale) ** 2
        token_dim = configs.text_width  # CLIP's token embeddings are as wide as its features
        estimate.fixed = 2 * 4 * latent * work.cached_latents + 4 * 4 * work.num_prompts * work.num_tokens * token_dim
        return estimate

    def unet_dry_run(self, n: int, checkpointing: bool) -> tuple[int, int]:
        side = self.work.resolution // self.configs.vae_scale
        return _unet_dry_run(
            self.configs.key("unet"),
            self.work.dtype,
            self.attention,
            (self.configs.latent_channels, side, side),
            (TEXT_LENGTH, self.configs.text_width),
            n,
            checkpointing,
        )

    def unet(self, checkpointing: bool) -> tuple[float, float]:
        """(fixed bytes, bytes per evaluation) of a UNet pass: linear in the batch."""
        if checkpointing not in self._unet:
            one, two = self.unet_dry_run(1, checkpointing)[1], self.unet_dry_run(2, checkpointing)[1]
            self._unet[checkpointing] = (max(0.0, 2.0 * one - two), float(two - one))
        return self._unet[checkpointing]

    def base(self, count_weights: bool = True) -> float:
        """What the step needs besides the UNet pass, the text side's held activations included."""
        return (self.weights if count_weights else 0) + self.fixed

    def vae_encode(self, images: int) -> float:
        """Peak bytes of one VAE call on ``images`` images (latent caching, before the first step)."""
        fixed, per_image = self.vae
        return fixed + images * per_image

    def step(self, chunk: int, checkpointing: bool) -> float:
        """Peak bytes of a step beyond ``base``, with UNet chunks of ``chunk`` evaluations."""
        fixed, per_eval = self.unet(checkpointing)
        return max(self.text_held + fixed + chunk * per_eval, self.text_peak)

    def peak(
        self, chunk: int, checkpointing: bool, vae_batch: int | None = None, count_weights: bool | None = None
    ) -> int:
        """Estimated peak bytes: UNet chunks of ``chunk`` evaluations, VAE calls of ``vae_batch``
        images (default: the workload's). ``count_weights``: None = unless already loaded."""
        weights = not self.configs.loaded if count_weights is None else count_weights
        vae = self.vae_encode(self.work.vae_batch if vae_batch is None else vae_batch)
        return int(self.base(weights) + max(self.step(chunk, checkpointing), vae))

    def largest_chunk(self, budget: float, checkpointing: bool) -> int:
        """The most UNet evaluations per chunk whose step fits ``budget`` bytes (0: none)."""
        fixed, per_eval = self.unet(checkpointing)
        room = budget - self.base(not self.configs.loaded)
        if room < self.step(1, checkpointing):
            return 0
        return int((room - self.text_held - fixed) // per_eval) if per_eval > 0 else self.work.evaluations

    def largest_vae_batch(self, budget: float) -> int:
        """The most images per VAE call (up to the workload's) that fit ``budget`` bytes, at least 1."""
        fixed, per_image = self.vae
        room = budget - self.base(not self.configs.loaded) - fixed
        most = int(room // per_image) if per_image > 0 else self.work.vae_batch
        return max(1, min(self.work.vae_batch, most))


def size(nbytes: float) -> str:
    """``35.9 GiB``, or ``41 MiB`` below one GiB."""
    return f"{nbytes / GIB:.1f} GiB" if nbytes >= GIB / 2 else f"{nbytes / (1 << 20):.0f} MiB"


def needed(estimate_bytes: float) -> float:
    """What must be free for an estimated peak: the estimate plus the margins of the module doc."""
    return estimate_bytes * FIT_FACTOR + FIT_RESERVE


def budget(free: float) -> float:
    """The largest estimated peak that fits ``free`` bytes."""
    return (free - FIT_RESERVE) / FIT_FACTOR


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class MemoryPlan:
    """How a run computes its UNet passes: ``unet_batch`` evaluations per chunk, with or without
    gradient checkpointing, ``vae_batch`` images per VAE call while caching, and why."""

    setting: int | str  # "auto" or the user's number
    evaluations: int  # B x S
    unet_batch: int
    gradient_checkpointing: bool
    vae_batch: int
    estimate: int | None  # estimated peak bytes of this plan (None: no estimate)
    unchunked: int | None  # ... of all evaluations at once, without checkpointing
    free: int | None
    device: str
    attention: str = ""
    fits: bool | None = None  # None: free memory unknown
    note: str = ""  # why there is no estimate

    @property
    def chunks(self) -> int:
        return math.ceil(self.evaluations / self.unet_batch)

    def describe(self) -> str:
        """The line ``dreamdist train`` prints before loading the model."""
        where = "RAM available" if self.device == "cpu" else f"free on {self.device}"
        free = f"{where}: {size(self.free)}" if self.free is not None else f"{where}: unknown"
        if self.estimate is None:
            return f"memory: no estimate ({self.note}); {free}; UNet {self._how()}"
        head = (
            f"memory: estimated peak {size(self.unchunked)} with all {self.evaluations} UNet "
            f"evaluations at once ({self.attention} attention); {free}"
        )
        if (self.unet_batch, self.gradient_checkpointing) == (self.evaluations, False):
            tail = f" -> UNet {self._how()}"
        else:
            tail = f" -> UNet {self._how()}: estimated peak {size(self.estimate)}"
        if self.fits is False:
            tail += (
                " (does not fit even so: expect an out-of-memory error; try --precision bf16, a lower "
                "--resolution, fewer --samples or a smaller --batch-size)"
                if self.setting == "auto"
                else " (does not fit: try --unet-batch auto)"
            )
        return head + tail

    def _how(self) -> str:
        if self.unet_batch >= self.evaluations:
            how = f"all {self.evaluations} evaluations in one pass"
        else:
            sizes = f"{self.unet_batch}" if self.evaluations % self.unet_batch == 0 else f"up to {self.unet_batch}"
            how = f"in {self.chunks} chunks of {sizes} evaluation{'s' if self.unet_batch > 1 else ''}"
        return how + (" with gradient checkpointing" if self.gradient_checkpointing else "")

    def record(self) -> dict[str, Any]:
        """For the distribution file's training metadata."""
        return {
            "unet_batch": self.unet_batch,
            "unet_batch_setting": self.setting,
            "unet_chunks": self.chunks,
            "gradient_checkpointing": self.gradient_checkpointing,
            "memory_estimate_gib": None if self.estimate is None else round(self.estimate / GIB, 3),
            "memory_free_gib": None if self.free is None else round(self.free / GIB, 3),
        }


def balanced_chunk(evaluations: int, largest: int) -> int:
    """The chunk size that splits ``evaluations`` into as few chunks as ``largest`` allows, as evenly
    as possible (16 with at most 5 per chunk: 4 chunks of 4, not 5 + 5 + 5 + 1)."""
    count = math.ceil(evaluations / max(1, min(largest, evaluations)))
    return math.ceil(evaluations / count)


def plan_memory(
    estimate: MemoryEstimate | None,
    evaluations: int,
    setting: int | str,
    checkpointing: bool,
    free: int | None,
    device: str,
    vae_batch: int = 8,
    note: str = "",
) -> MemoryPlan:
    """Choose the UNet chunk size, checkpointing and the VAE batch (module doc). ``checkpointing``:
    the user asked for gradient checkpointing (kept on). A number ``setting`` is used as given."""
    known = estimate is not None and free is not None
    if known:
        vae_batch = estimate.largest_vae_batch(budget(free))

    def made(chunk: int, ckpt: bool) -> MemoryPlan:
        peak = estimate.peak(chunk, ckpt, vae_batch) if estimate is not None else None
        return MemoryPlan(
            setting,
            evaluations,
            chunk,
            ckpt,
            vae_batch,
            peak,
            estimate.peak(evaluations, False, vae_batch) if estimate is not None else None,
            free,
            device,
            estimate.attention if estimate is not None else "",
            needed(peak) <= free if known else None,
            note,
        )

    if setting != "auto":
        return made(min(int(setting), evaluations), checkpointing)
    if not known:
        return made(evaluations, checkpointing)
    for ckpt in (True,) if checkpointing else CHUNK_ATTEMPTS:
        largest = estimate.largest_chunk(budget(free), ckpt)
        if largest >= 1:
            return made(balanced_chunk(evaluations, largest), ckpt)
    return made(1, True)
