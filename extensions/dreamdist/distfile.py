"""The distribution file: learned vectors + metadata in one .safetensors file.

Tensors: ``ctx`` (K, M, d_tok) float32 and ``fingerprint_probe`` (16, d_tok), a few rows of the
text encoder's token-embedding table. Metadata (all strings, safetensors' own header):
``format``, ``format_version``, ``base_model``, ``fingerprint`` (JSON: hidden size, vocabulary size,
sha256 of the fp16-rounded token-embedding table), ``num_prompts``, ``num_tokens``, ``template``,
``training`` (JSON), ``image_count``, ``created``.
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

from dreamdist.atomic import atomic_path
from dreamdist.errors import DistributionFileError, FingerprintMismatchError

FORMAT = "dreamdist.distribution"
FORMAT_VERSION = 1
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


@dataclass
class DistributionFile:
    """What a distribution file holds: the K x M learned vectors and how they were made."""

    ctx: torch.Tensor
    base_model: str
    fingerprint: Fingerprint
    template: str = "{}"
    training: dict[str, Any] = field(default_factory=dict)
    image_count: int = 0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    path: Path | None = None

    @property
    def num_prompts(self) -> int:
        return int(self.ctx.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.ctx.shape[1])

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "base_model": self.base_model,
            "fingerprint": self.fingerprint.to_json(),
            "num_prompts": str(self.num_prompts),
            "num_tokens": str(self.num_tokens),
            "template": self.template,
            "training": json.dumps(self.training, sort_keys=True),
            "image_count": str(self.image_count),
            "created": self.created,
        }

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
        raise DistributionFileError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}"
        ) from None
    if meta.get("format") != FORMAT or "ctx" not in tensors:
        raise DistributionFileError(
            f"{path}: not a dreamdist distribution file (format {meta.get('format')!r}); "
            "make one with `dreamdist train`"
        )
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise DistributionFileError(
            f"{path}: format version {version} is newer than this dreamdist reads ({FORMAT_VERSION}); "
            "upgrade dreamdist"
        )
    try:
        fp = json.loads(meta["fingerprint"])
        fingerprint = Fingerprint(fp["hidden_size"], fp["vocab_size"], fp["sha256"], tensors["fingerprint_probe"])
        return DistributionFile(
            ctx=tensors["ctx"],
            base_model=meta["base_model"],
            fingerprint=fingerprint,
            template=meta.get("template", "{}"),
            training=json.loads(meta.get("training", "{}")),
            image_count=int(meta.get("image_count", "0")),
            created=meta.get("created", ""),
            path=path,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise DistributionFileError(f"{path}: damaged metadata ({exc!r})") from None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
