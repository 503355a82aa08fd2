"""A tiny random-weight Stable-Diffusion-2-architecture pipeline, written in diffusers format.

Tests and the demo load it through the same ``from_pretrained`` path real users use with
``stabilityai/stable-diffusion-2-1``: real CLIPTokenizer files (over a small vocabulary this module
writes), CLIPTextModel, UNet2DConditionModel, AutoencoderKL and a DDIM scheduler.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from dreamdist.utils.atomic import atomic_write_text

# Words the tiny tokenizer knows as whole tokens; any other text still tokenizes, letter by letter.
TINY_WORDS = (
    "a an the of in on at with and photo picture painting drawing render style made gold silver "
    "wood stone glass toy cathedral castle house tree car robot cat dog bird night day snow rain "
    "red green blue yellow orange purple pink white black grey gray brown square circle triangle "
    "star cross small big large background side front back overhead view dslr high quality "
    "detailed blurry low ugly , . 3d model"
).split()

TINY_RESOLUTION = 32
SOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "!"


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable-unicode map (same table CLIPTokenizer uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tokenizer(path: str | os.PathLike, words: tuple[str, ...] = TINY_WORDS) -> None:
    """Write CLIPTokenizer files: every byte as a token (so any text encodes) plus whole-word merges.

    Like SD 2.x's tokenizer, padding uses "!" rather than the end-of-text token.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    merges: list[str] = []
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            merge = f"{symbols[0]} {symbols[1]}"
            if merge not in merges:
                merges.append(merge)
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
            vocab.setdefault(symbols[0], len(vocab))
    vocab.setdefault(SOS, len(vocab))
    vocab.setdefault(EOS, len(vocab))
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": SOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": PAD,
        "do_lower_case": True,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"bos_token": SOS, "eos_token": EOS, "unk_token": EOS, "pad_token": PAD}
    (path / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def clip_text_encoder(tokenizer, hidden_size: int, layers: int = 2, heads: int = 4, mlp_ratio: int = 2):
    """A random CLIPTextModel for ``tokenizer`` (SD's special-token ids), the shape given."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=mlp_ratio * hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=hidden_size,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def sd_scheduler(prediction_type: str = "epsilon"):
    """Stable Diffusion 2's DDIM scheduler settings (v_prediction: SD 2.1; epsilon: SD 2.1-base)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def make_tiny_model(
    path: str | os.PathLike,
    prediction_type: str = "epsilon",
    seed: int = 0,
    hidden_size: int = 32,
    resolution: int = TINY_RESOLUTION,
) -> Path:
    """Write the tiny pipeline to ``path`` (replacing it atomically) and return the path.

    ``prediction_type`` "epsilon" mimics SD 2.1-base, "v_prediction" SD 2.1.
    """
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', not {prediction_type!r}")
    path = Path(path)
    staging = path.with_name(f".{path.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    write_tokenizer(staging / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(staging / "tokenizer")

    torch.manual_seed(seed)
    text_encoder = clip_text_encoder(tokenizer, hidden_size)
    unet = UNet2DConditionModel(
        sample_size=resolution // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=hidden_size,
        attention_head_dim=(2, 4),
        use_linear_projection=True,  # as SD 2.x
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=resolution,
    )
    scheduler = sd_scheduler(prediction_type)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(staging, safe_serialization=True)
    if path.exists():
        shutil.rmtree(path)
    staging.rename(path)
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("DREAMDIST_CACHE", Path.home() / ".cache" / "dreamdist"))


def default_tiny_model(prediction_type: str = "v_prediction") -> Path:
    """The embedded default model: built once into the cache, reused afterwards."""
    path = cache_dir() / f"tiny-sd2-{prediction_type.replace('_', '-')}"
    marker = path / "model_index.json"
    if not marker.exists():
        make_tiny_model(path, prediction_type=prediction_type)
        atomic_write_text(path / "DREAMDIST_TINY_MODEL", "random weights; pipeline plumbing only\n")
    return path
