"""tiny-sd2 with its VAE swapped for an 8x-downsampling random one (threestudio's SD guidance resizes
renders to 512 px; the tiny model's 2x VAE would give 256x256 latents, whose self-attention is too
big for CPU). Same text encoder, tokenizer, UNet: distributions trained on tiny-sd2 still match."""

import json
import shutil
import sys

import torch
from diffusers import AutoencoderKL

src, dst = sys.argv[1], sys.argv[2]
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst)
shutil.rmtree(f"{dst}/vae")
torch.manual_seed(0)
old = json.load(open(f"{src}/vae/config.json"))
vae = AutoencoderKL(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[8, 8, 16, 16],
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=512,
    scaling_factor=old.get("scaling_factor", 0.18215),
)
vae.save_pretrained(f"{dst}/vae")
print("wrote", dst)
