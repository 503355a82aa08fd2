"""The distribution file: learned vectors + metadata in one .safetensors file.

Tensors: ``ctx`` (C*K, M, d_tok) float32 (component c's K prompts are rows c*K .. c*K+K-1) and
``fingerprint_probe`` (16, d_tok), a few rows of the text encoder's token-embedding table. Metadata
(all strings, safetensors' own header): ``format``, ``format_version``, ``base_model``,
``fingerprint`` (JSON: hidden size, vocabulary size, sha256 of the fp16-rounded token-embedding
table), ``num_prompts`` (K per component), ``num_tokens``, ``template``, ``training`` (JSON),
``image_count``, ``created``; version 2 adds ``components`` (JSON: per component its ``weight`` and
the reference ``images`` it explains).

Versions: a one-component distribution is written as version 1, readable by every dreamdist; a
mixture (``dreamdist train --components C``, C > 1) as version 2, which a dreamdist older than
mixtures refuses with "upgrade dreamdist" rather than misreading it as one Gaussian of C*K prompts.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dreamdist.utils.atomic import atomic_path
from dreamdist.utils.errors import DistributionFileError, FingerprintMismatchError

FORMAT = "dreamdist.distribution"
FORMAT_VERSION = 2  # the newest this reads
SINGLE_VERSION = 1  # what one-component files are written as
PROBE_ROWS = 16


@dataclass(frozen=True)
class Fingerprint:
    """Identifies a text encoder's token space. The hash is over the fp16-rounded table, so fp32
    and fp16 copies of the same weights agree; the probe rows allow a tolerant check for bf16."""

    hidden_size: int
    vocab_size: int
    sha256: str
    probe: torch.Tensor = field(compare=False, repr=False)

    @classmethod
    def of(cls, text_encoder) -> "Fingerprint":
        table = text_encoder.get_input_embeddings().weight.detach()
        digest = hashlib.sha256(table.to("cpu", torch.float16).numpy().tobytes()).hexdigest()
        rows = torch.linspace(0, table.shape[0] - 1, PROBE_ROWS).long()
        return cls(
            int(text_encoder.config.hidden_size),
            int(table.shape[0]),
            digest,
            table[rows.to(table.device)].to("cpu", torch.float32).clone(),
        )

    def to_json(self) -> str:
        return json.dumps({"hidden_size": self.hidden_size, "vocab_size": self.vocab_size, "sha256": self.sha256})

    def matches(self, other: "Fingerprint") -> bool:
        if (self.hidden_size, self.vocab_size) != (other.hidden_size, other.vocab_size):
            return False
        if self.sha256 == other.sha256:
            return True
        if self.probe.shape != other.probe.shape:
            return False
        return torch.allclose(self.probe, other.probe, rtol=1e-2, atol=1e-3)


@dataclass(frozen=True)
class Component:
    """One Gaussian of a mixture: its weight and the reference images (file names) it explains."""

    weight: float
    images: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "images": list(self.images)}


@dataclass
class DistributionFile:
    """What a distribution file holds: C x K x M learned vectors (C = 1 unless trained as a
    mixture), the components' weights and how they were made."""

    ctx: torch.Tensor
    base_model: str
    fingerprint: Fingerprint
    template: str = "{}"
    training: dict[str, Any] = field(default_factory=dict)
    image_count: int = 0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    path: Path | None = None
    components: tuple[Component, ...] = (Component(1.0),)

    def __post_init__(self) -> None:
        c = len(self.components)
        if c < 1 or self.ctx.shape[0] % c:
            raise DistributionFileError(f"{self.ctx.shape[0]} learned prompts do not split into {c} components")

    @property
    def num_components(self) -> int:
        return len(self.components)

    @property
    def format_version(self) -> int:
        return SINGLE_VERSION if self.num_components == 1 else FORMAT_VERSION

    def component_ctx(self) -> list[torch.Tensor]:
        """Each component's K x M learned vectors."""
        return list(self.ctx.split(self.num_prompts))

    @property
    def num_prompts(self) -> int:
        """K: prompts per component."""
        return int(self.ctx.shape[0]) // self.num_components

    @property
    def num_tokens(self) -> int:
        return int(self.ctx.shape[1])

    def metadata(self) -> dict[str, str]:
        meta = {
            "format": FORMAT,
            "format_version": str(self.format_version),
            "base_model": self.base_model,
            "fingerprint": self.fingerprint.to_json(),
            "num_prompts": str(self.num_prompts),
            "num_tokens": str(self.num_tokens),
            "template": self.template,
            "training": json.dumps(self.training, sort_keys=True),
            "image_count": str(self.image_count),
            "created": self.created,
        }
        if self.num_components > 1:
            meta["components"] = json.dumps([c.to_dict() for c in self.components])
        return meta

    def check_encoder(self, text_encoder, encoder_name: str = "the given text encoder") -> None:
        """Refuse a text encoder other than the one the vectors were trained in."""
        theirs = Fingerprint.of(text_encoder)
        if not self.fingerprint.matches(theirs):
            where = f" ({self.path})" if self.path else ""
            raise FingerprintMismatchError(
                f"distribution{where} was trained on {self.base_model!r} (hidden {self.fingerprint.hidden_size}, "
                f"vocab {self.fingerprint.vocab_size}) but is used with {encoder_name!r} (hidden "
                f"{theirs.hidden_size}, vocab {theirs.vocab_size}, different token embeddings); "
                f"use the base model it was trained on (--model {self.base_model})"
            )


def save_distribution(path: str | os.PathLike, dist: DistributionFile) -> Path:
    """Write atomically: a crash leaves the previous file (or none), never a partial one."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {
        "ctx": dist.ctx.detach().to("cpu", torch.float32).contiguous(),
        "fingerprint_probe": dist.fingerprint.probe.contiguous(),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dist.metadata())
    dist.path = path
    return path


def load_distribution(path: str | os.PathLike) -> DistributionFile:
    """Read a distribution file, with one clear error for anything that is not one we can read."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise DistributionFileError(f"{path}: no such distribution file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            tensors = {k: f.get_tensor(k) for k in ("ctx", "fingerprint_probe") if k in keys}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DistributionFileError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None
    if meta.get("format") != FORMAT or "ctx" not in tensors:
        raise DistributionFileError(
            f"{path}: not a dreamdist distribution file (format {meta.get('format')!r}); "
            "make one with `dreamdist train`"
        )
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise DistributionFileError(
            f"{path}: format version {version} is newer than this dreamdist reads ({FORMAT_VERSION}); upgrade dreamdist"
        )
    try:
        fp = json.loads(meta["fingerprint"])
        fingerprint = Fingerprint(fp["hidden_size"], fp["vocab_size"], fp["sha256"], tensors["fingerprint_probe"])
        components = tuple(
            Component(float(c["weight"]), tuple(c.get("images", ())))
            for c in json.loads(meta.get("components", '[{"weight": 1.0}]'))
        )
        return DistributionFile(
            ctx=tensors["ctx"],
            base_model=meta["base_model"],
            fingerprint=fingerprint,
            template=meta.get("template", "{}"),
            training=json.loads(meta.get("training", "{}")),
            image_count=int(meta.get("image_count", "0")),
            created=meta.get("created", ""),
            path=path,
            components=components,
        )
    except DistributionFileError as exc:
        raise DistributionFileError(f"{path}: {exc}") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise DistributionFileError(f"{path}: damaged metadata ({exc!r})") from None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
