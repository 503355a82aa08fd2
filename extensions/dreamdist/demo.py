"""`dreamdist demo`: the whole 2D pipeline end to end on the embedded model, on a CPU, in minutes.

It draws its own reference sets (toy shapes), trains two small distributions, and samples a gamma
sweep, a text-edited set and a two-distribution mix, writing everything under one folder with an
index. It proves the pipeline works, not image quality: the embedded model is tiny.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dreamdist.atomic import atomic_write_text

NOTE = (
    "The embedded model is tiny (a few MB, trained on toy shapes, or random weights if the toy "
    "model is absent): its images are rough by design. The demo proves the pipeline, not the quality."
)


@dataclass
class DemoResult:
    out: Path
    entries: list[tuple[str, str]] = field(default_factory=list)  # (relative path, what it is)


def free_out_dir(out: Path) -> Path:
    """Never clobber an earlier result: ``demo-out`` exists -> ``demo-out-1``, ``-2``..."""
    if not out.exists() or not any(out.iterdir()):
        return out
    n = 1
    while (candidate := out.with_name(f"{out.name}-{n}")).exists():
        n += 1
    return candidate


def default_model() -> Path:
    """The shipped toy model where this diffusers can load it, else the random-weight tiny model
    (built once)."""
    from dreamdist.compat import loads_vae_without_mid_attention
    from dreamdist.tiny_model import default_tiny_model
    from dreamdist.toy import toy_model_path

    toy = toy_model_path()
    if (toy / "model_index.json").exists() and loads_vae_without_mid_attention():
        return toy
    return default_tiny_model("epsilon")


def write_references(folder: Path, shapes: tuple[str, ...], colour: str, count: int, seed: int) -> None:
    """A reference set sharing a look (one colour, grey background) and varying in shape/size/position."""
    from dreamdist.toy import draw
    from dreamdist.toy.shapes import random_spec

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        spec = random_spec(rng, shapes=shapes, colours=(colour,), backgrounds=("grey",))
        pixels = draw(spec, rng)
        if pixels.dtype != np.uint8:
            pixels = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}-{spec.colour}-{spec.shape}.png")


def run_demo(out: Path, steps: int = 60, keep: bool = False, model: str | None = None,
             progress: bool = True) -> DemoResult:
    from dreamdist.sampling import mix_row, sample, sweep_gamma
    from dreamdist.train import TrainConfig, train_distribution

    out = free_out_dir(Path(out))
    out.mkdir(parents=True)
    model = str(model or default_model())
    result = DemoResult(out)
    add = result.entries.append
    common = dict(model=model, steps=10, guidance_scale=4.0, batch_size=4, progress=progress)

    sets = {"red": (("square", "triangle"), "red"), "blue": (("circle",), "blue")}
    dists: dict[str, Path] = {}
    for i, (name, (shapes, colour)) in enumerate(sets.items()):
        refs = out / "references" / name
        write_references(refs, shapes, colour, 12 if name == "red" else 8, seed=i)
        add((f"references/{name}", f"reference images: {colour} {' and '.join(shapes)}s on grey"))
        config = TrainConfig(num_prompts=8, num_tokens=2, samples=2, steps=steps, batch_size=4,
                             template="a {}", checkpoint_every=max(steps, 1))
        dist = out / f"{name}.safetensors"
        train_distribution(refs, model, dist, config, progress=progress, checkpoint=None if keep else False,
                           log_csv=out / f"{name}.log.csv")
        dists[name] = dist
        add((dist.name, f"the learned distribution (K=8 prompts, M=2 tokens, {steps} steps)"))
        add((f"{name}.log.csv", "per-step diffusion and orthogonality loss"))

    red = [dists["red"]]
    run = sweep_gamma(red, out / "gamma-sweep", gammas=(0.0, 1.0, 2.0), n=4, **common)
    add((str(run.grid.relative_to(out)), "gamma sweep (rows gamma 0, 1, 2; same seeds per column)"))
    run = sample(red, out / "edited", template="a {} on a black background", n=4, **common)
    add((str(run.grid.relative_to(out)), "text-guided edit: 'a {} on a black background'"))
    run = mix_row(dists["red"], dists["blue"], out / "mix", steps_between=3, **common)
    add((str(run.grid.relative_to(out)), "mix red -> blue (paper eq. 7), weights 0 .. 1"))
    write_index(result, model)
    return result


def write_index(result: DemoResult, model: str) -> None:
    lines = ["dreamdist demo output", f"model: {model}", NOTE, ""]
    lines += [f"{path}\t{what}" for path, what in result.entries]
    atomic_write_text(result.out / "README.txt", "\n".join(lines) + "\n")
    items = "\n".join(
        f"<li><a href='{html.escape(p)}'>{html.escape(p)}</a>: {html.escape(w)}"
        + (f"<br><img src='{html.escape(p)}' style='image-rendering:pixelated;max-width:480px'>" if p.endswith(".png") else "")
        + "</li>"
        for p, w in result.entries
    )
    atomic_write_text(
        result.out / "index.html",
        f"<!doctype html><meta charset=utf-8><title>dreamdist demo</title><h1>dreamdist demo</h1>"
        f"<p>{html.escape(NOTE)}</p><p>model: {html.escape(model)}</p><ul>{items}</ul>\n",
    )


NEXT_STEPS = """\
Next steps with real weights (needs a GPU and the SD 2.1 download):
  dreamdist train my_refs/ --model stabilityai/stable-diffusion-2-1 --out my_style.safetensors
  dreamdist sample my_style.safetensors --n 16 --gamma 1.0 --out previews/
3D (needs a GPU and a threestudio checkout with this extension installed, see README):
  python launch.py --config configs/dreamdist-mvdream.yaml --train --gpu 0 \\
      system.prompt_processor.distribution=/abs/path/my_style.safetensors seed=0"""
