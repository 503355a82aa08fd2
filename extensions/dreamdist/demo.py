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

from dreamdist.train.losscurve import loss_curve_path
from dreamdist.utils.atomic import atomic_write_text

NOTE = (
    "The embedded model is tiny (a few MB, trained on toy shapes, or random weights if the toy "
    "model is absent): its images are rough by design. The demo proves the pipeline, not the quality."
)


@dataclass
class TrainedSet:
    """One reference set and what training it made, for the index page."""

    name: str
    references: str  # folder, relative to the demo's output
    description: str
    distribution: str
    log_csv: str
    loss_curve: str


@dataclass
class DemoResult:
    out: Path
    entries: list[tuple[str, str]] = field(default_factory=list)  # (relative path, what it is)
    sets: list[TrainedSet] = field(default_factory=list)


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
    from dreamdist.tiny_model import default_tiny_model
    from dreamdist.toy import toy_model_path
    from dreamdist.utils.compat import loads_vae_without_mid_attention

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


def run_demo(
    out: Path, steps: int = 60, keep: bool = False, model: str | None = None, progress: bool = True
) -> DemoResult:
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
        config = TrainConfig(
            num_prompts=8,
            num_tokens=2,
            samples=2,
            steps=steps,
            batch_size=4,
            template="a {}",
            checkpoint_every=max(steps, 1),
        )
        dist = out / f"{name}.safetensors"
        train_distribution(
            refs,
            model,
            dist,
            config,
            progress=progress,
            checkpoint=None if keep else False,
            log_csv=out / f"{name}.log.csv",
        )
        dists[name] = dist
        add((dist.name, f"the learned distribution (K=8 prompts, M=2 tokens, {steps} steps)"))
        add((f"{name}.log.csv", "per-step diffusion and orthogonality loss"))
        curve = loss_curve_path(out / f"{name}.log.csv").name
        add((curve, f"loss curve of the {name} training"))
        result.sets.append(
            TrainedSet(
                name,
                f"references/{name}",
                f"{colour} {' and '.join(shapes)}s on grey",
                dist.name,
                f"{name}.log.csv",
                curve,
            )
        )

    red = [dists["red"]]
    run = sweep_gamma(red, out / "gamma-sweep", gammas=(0.0, 1.0, 2.0), n=4, **common)
    add((str(run.grid.relative_to(out)), "gamma sweep (rows gamma 0, 1, 2; same seeds per column)"))
    run = sample(red, out / "edited", template="a {} on a black background", n=4, **common)
    add((str(run.grid.relative_to(out)), "text-guided edit: 'a {} on a black background'"))
    run = mix_row(dists["red"], dists["blue"], out / "mix", steps_between=3, **common)
    add((str(run.grid.relative_to(out)), "mix red -> blue (paper eq. 7), weights 0 .. 1"))
    write_index(result, model)
    return result


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
    ".thumbs img{width:64px;height:64px;image-rendering:pixelated;margin:2px;border:1px solid #ccc}"
    ".grid img{image-rendering:pixelated;max-width:520px}figure{margin:1em 0}"
    ".set{display:flex;gap:2em;align-items:flex-start;flex-wrap:wrap}"
)


def _img(src: str, alt: str, cls: str = "") -> str:
    return f"<img src='{html.escape(src)}' alt='{html.escape(alt)}'{f' class={cls}' if cls else ''}>"


def write_index(result: DemoResult, model: str) -> None:
    """README.txt (what each file is) and index.html: each reference set as thumbnails beside its loss
    curve, then the sample grids. Relative links only: it opens from disk."""
    lines = ["dreamdist demo output", f"model: {model}", NOTE, ""]
    lines += [f"{path}\t{what}" for path, what in result.entries]
    atomic_write_text(result.out / "README.txt", "\n".join(lines) + "\n")
    parts = [
        f"<!doctype html><meta charset=utf-8><title>dreamdist demo</title><style>{STYLE}</style>",
        "<h1>dreamdist demo</h1>",
        f"<p>{html.escape(NOTE)}</p><p>model: {html.escape(model)}</p>",
        "<h2>Reference sets and training</h2>",
    ]
    for s in result.sets:
        thumbs = "".join(
            _img(f"{s.references}/{p.name}", p.name)
            for p in sorted((result.out / s.references).iterdir())
            if p.suffix == ".png"
        )
        parts.append(
            f"<h3>{html.escape(s.name)}: {html.escape(s.description)}</h3><div class=set>"
            f"<div><div class=thumbs>{thumbs}</div><p><a href='{html.escape(s.distribution)}'>"
            f"{html.escape(s.distribution)}</a> &middot; <a href='{html.escape(s.log_csv)}'>"
            f"{html.escape(s.log_csv)}</a></p></div>{_img(s.loss_curve, f'loss curve of {s.name}')}</div>"
        )
    parts.append("<h2>Samples</h2>")
    trained = {name for s in result.sets for name in (s.references, s.distribution, s.log_csv, s.loss_curve)}
    for path, what in result.entries:
        if path not in trained:
            parts.append(
                f"<figure class=grid><figcaption>{html.escape(what)} (<a href='{html.escape(path)}'>"
                f"{html.escape(path)}</a>)</figcaption>{_img(path, what)}</figure>"
            )
    atomic_write_text(result.out / "index.html", "\n".join(parts) + "\n")


NEXT_STEPS = """\
Next steps with real weights (needs a GPU and the SD 2.1 download):
  dreamdist train my_refs/ --model stabilityai/stable-diffusion-2-1 --out my_style.safetensors
  dreamdist sample my_style.safetensors --n 16 --gamma 1.0 --out previews/
3D (needs a GPU and a threestudio checkout with this extension installed, see README):
  python launch.py --config configs/dreamdist-mvdream.yaml --train --gpu 0 \\
      system.prompt_processor.distribution=/abs/path/my_style.safetensors seed=0"""
