#!/usr/bin/env python
"""Fidelity benchmark: does a learned prompt distribution capture what its reference images share
and how they vary? Run on the shipped toy model (``extensions/dreamdist/toy/model``), with reference
sets drawn by the toy generator and every sample labelled by the rule-based toy classifier.

1. two modes: 6 red squares + 6 blue circles. A distribution (K=8, M=2) against a single learned
   prompt (K=1, no orthogonality loss: textual-inversion-like) and a mixture of C=2 distributions.
   Share of each mode, out-of-set share (anything else, unrecognised shapes included), both modes
   present (each >= 20%), and the paper's
   Table-1 distribution metrics in a toy feature space (see below): Frechet distance, density and
   coverage (Naeem et al. 2020, k=5), with the real set itself (other seeds) as the reference point.
2. gamma 0 / 1 / 2 on the same distribution: mode shares, out-of-set share, pixel diversity.
3. mixing a red-square-only distribution with a blue-circle-only one, blue weight 0 .. 1 (eq. 7).
4. text-guided editing: the red-square distribution re-encoded in templates asking for blue.
5. mixtures (``--components``, beyond the paper): C=2 Gaussians of K prompts each. On the two-mode
   set it is a row of section 1 (and the components' split of the images is printed); here, on each
   one-mode set beside one Gaussian (C=1): a mixture must not lose what one Gaussian gets.

Toy feature space (``toy_features``). FID, CLIP-I and DINO need pretrained encoders (downloads);
the toy world has none, so the distribution metrics of sections 1-3 use 7 numbers per image that
describe exactly what toy images vary in: the mean colour of the foreground (3), its
intersection-over-union with an ideal square, circle and triangle fitted to its bounding box (3), and
its area (1). Raw pixels would be dominated by the background and the shape's position, which the
references vary on purpose; these features play the role Inception/CLIP features play for photos
(what is drawn, not where). The real set (``--real-set``) is by default the toy model's own rendering
of the two modes: ``--real-per-mode`` images each from the captions "a red square" and "a blue circle"
(the model's best rendering of the reference distribution when told exactly what to draw). The toy
model draws softer, rounder and less saturated shapes than the generator does, and exact drawings
(``--real-set drawn``: a fresh draw of the two-mode world) sit so tightly in these features that no
sample of the model comes within their k-NN radii (density and coverage ~0 even for the captions'
own images): that measures the model's rendering, not the distribution. Density, coverage and the
Frechet distance are ``dreamdist.evaluate.metrics``' implementations, the ones ``dreamdist evaluate`` uses.

Training and sampling are the project's own (``dreamdist.train.train_distribution``,
``dreamdist.sampling.Sampler``); this script only draws the data, calls them and counts.
Prints one table (markdown); ``--json`` also writes every number.

    nice -n 19 python scripts/bench_fidelity.py                       # the full benchmark
    python scripts/bench_fidelity.py --train-steps 2 --samples 2 --sample-steps 2   # smoke test
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from dreamdist.evaluate.metrics import DEFAULT_K, density_coverage, frechet_distance_of_features
from dreamdist.toy import toy_model_path
from dreamdist.toy.classify import MIN_AREA, classify, foreground, shape_ious, to_array
from dreamdist.toy.shapes import (
    ToySpec,
    caption_for,
    draw,
    random_spec,
    save_reference_set,
)

MODE_A = ("red", "square")
MODE_B = ("blue", "circle")
MIX_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
GAMMAS = (0.0, 1.0, 2.0)
EDIT_TEMPLATES = ("blue {}", "{} blue", "a blue {}")


# --------------------------------------------------------------------------- data


def reference_specs(colour: str, shape: str, n: int, seed: int) -> list[ToySpec]:
    """``n`` images of one colour and shape, random background, size and position."""
    rng = np.random.default_rng(seed)
    return [random_spec(rng, shapes=(shape,), colours=(colour,)) for _ in range(n)]


def write_sets(root: Path, per_mode: int, single_set: int, seed: int) -> dict[str, Path]:
    sets = {
        "two_mode": reference_specs(*MODE_A, per_mode, seed) + reference_specs(*MODE_B, per_mode, seed + 1),
        "red_square": reference_specs(*MODE_A, single_set, seed + 2),
        "blue_circle": reference_specs(*MODE_B, single_set, seed + 3),
    }
    return {
        name: (save_reference_set(root / name, specs, seed=seed + 10 + i), root / name)[1]
        for i, (name, specs) in enumerate(sets.items())
    }


def real_two_mode_images(per_mode: int, seed: int) -> list[np.ndarray]:
    """A fresh draw of the two-mode world (other seeds than the training references)."""
    specs = reference_specs(*MODE_A, per_mode, seed + 100) + reference_specs(*MODE_B, per_mode, seed + 101)
    rng = np.random.default_rng(seed + 102)
    return [draw(spec, rng) for spec in specs]


def caption_images(pipe, per_mode: int, steps: int, guidance: float, seed: int, batch: int) -> list:
    """The toy model's rendering of the two modes: ``per_mode`` images from each mode's plain caption."""
    prompts = [caption_for(MODE_A[1], MODE_A[0])] * per_mode + [caption_for(MODE_B[1], MODE_B[0])] * per_mode
    images = []
    for start in range(0, len(prompts), batch):
        generator = torch.Generator().manual_seed(seed + 1_000 + start)
        with torch.no_grad():
            images += pipe(
                prompt=prompts[start : start + batch],
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generator,
            ).images
    return images


# --------------------------------------------------------------------------- counting


def toy_features(images) -> np.ndarray:
    """(n, 7): foreground mean RGB, IoU with an ideal square / circle / triangle fitted to the
    foreground's bounding box (the classifier's own measure), foreground area fraction. An image with
    no foreground gets its mean RGB and zeros."""
    rows = []
    for image in images:
        rgb = to_array(image)[..., :3]
        mask = foreground(rgb)
        area = int(mask.sum())
        if area < MIN_AREA:
            rows.append([*rgb.reshape(-1, 3).mean(axis=0), 0.0, 0.0, 0.0, 0.0])
            continue
        ious = list(shape_ious(mask).values())
        rows.append([*rgb[mask].mean(axis=0), *ious, area / mask.size])
    return np.asarray(rows, dtype=np.float64)


def distribution_metrics(images, real_features: np.ndarray, k: int = DEFAULT_K) -> dict:
    """Frechet distance, density and coverage of ``images`` against the real set, in toy features."""
    feats = toy_features(images)
    density, coverage = density_coverage(real_features, feats, k)
    fd = frechet_distance_of_features(feats, real_features) if len(feats) > 1 else float("nan")
    return {"fd": fd, "density": density, "dc_coverage": coverage}


def labels_of(images) -> list[tuple[str, str]]:
    out = []
    for image in images:
        label = classify(image)
        out.append((label.colour, label.shape))
    return out


def diversity(images) -> float:
    """Mean pairwise RMS pixel distance in [0, 1] (0: all images identical)."""
    x = np.stack([np.asarray(im, dtype=np.float32).reshape(-1) / 255 for im in images])
    if len(x) < 2:
        return 0.0
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0) / x.shape[1]
    iu = np.triu_indices(len(x), 1)
    return float(np.sqrt(d2[iu]).mean())


def summarise(images, real_features: np.ndarray | None = None) -> dict:
    labels = labels_of(images)
    n = max(1, len(labels))
    a = sum(lab == MODE_A for lab in labels) / n
    b = sum(lab == MODE_B for lab in labels) / n
    row = {
        "n": len(labels),
        "red_square": a,
        "blue_circle": b,
        "out_of_set": 1 - a - b,
        "coverage": bool(a >= 0.2 and b >= 0.2),
        "red": sum(c == "red" for c, _ in labels) / n,
        "blue": sum(c == "blue" for c, _ in labels) / n,
        "recognised": sum(c not in ("none", "other") and s not in ("none", "unknown") for c, s in labels) / n,
        "blue_square": sum(lab == ("blue", "square") for lab in labels) / n,
        "diversity": diversity(images),
        "other_labels": collections.Counter(
            f"{c} {s}" for c, s in labels if (c, s) not in (MODE_A, MODE_B)
        ).most_common(),
    }
    if real_features is not None:
        row.update(distribution_metrics(images, real_features))
    return row


# --------------------------------------------------------------------------- training


def train(pipe, images_dir: Path, out: Path, k: int, args, ortho: bool = True, log=print, components: int = 1) -> Path:
    from dreamdist.train import TrainConfig, messages_to, train_distribution

    if getattr(args, "reuse", False) and out.is_file():
        log(f"  reusing {out} (--reuse: trained earlier, with the settings of that run)")
        return out
    config = TrainConfig(
        num_prompts=k,
        components=components,
        num_tokens=args.tokens,
        samples=args.train_samples,
        ortho_weight=5e-3 if ortho else 0.0,
        steps=args.train_steps,
        lr=args.lr,
        batch_size=args.train_batch,
        template=args.template,
        seed=args.seed,
        checkpoint_every=0,
    )
    began = time.time()
    said: list[str] = []
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings(), messages_to(said.append):
        warnings.simplefilter("ignore")  # K = 1 warns that it learns a single prompt: that is the point here
        result = train_distribution(
            images_dir, pipe, out, config, device="cpu", checkpoint=False, log_csv=False, progress=False, overwrite=True
        )
    for line in said:
        if "components" in line:  # the mixture's k-means start and E steps
            log(f"    {line}")
    losses = result.diffusion_losses
    tail = float(np.mean(losses[-20:])) if losses else float("nan")
    log(
        f"  trained {out.name}: C={components} K={k} M={args.tokens}, {args.train_steps} steps in "
        f"{time.time() - began:.0f}s "
        f"(last diffusion loss {tail:.4f})"
    )
    return out


def split_text(path: Path) -> str:
    """Each component's weight and its images by mode (the two-mode set's files are named
    ``NNN_<colour>_<shape>.png`` by the toy generator)."""
    from dreamdist.core.distfile import load_distribution

    parts = []
    for i, comp in enumerate(load_distribution(path).components):
        modes = collections.Counter(" ".join(Path(name).stem.split("_")[1:3]) for name in comp.images)
        parts.append(f"component {i} (weight {comp.weight:.2f}): " + ", ".join(f"{n} {m}" for m, n in modes.items()))
    return "; ".join(parts)


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="default: the shipped toy model")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--tokens", type=int, default=2, help="M learned tokens per prompt")
    p.add_argument("--prompts", type=int, default=8, help="K prompts of the distributions")
    p.add_argument("--train-samples", type=int, default=4, help="S samples per image per step")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--template", default="{}", help="training template")
    p.add_argument("--per-mode", type=int, default=6, help="images per mode in the two-mode set")
    p.add_argument(
        "--real-set",
        choices=("captions", "drawn"),
        default="captions",
        help="what density/coverage/FD compare against: the toy model's images for the two modes' "
        "captions, or exact drawings of the two-mode world (see the module doc)",
    )
    p.add_argument("--real-per-mode", type=int, default=32, help="images per mode in that real set")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="reuse distribution files already in --work-dir instead of training them again",
    )
    p.add_argument("--single-set", type=int, default=8, help="images in each one-mode set (for mixing/editing)")
    p.add_argument("--samples", type=int, default=64, help="images sampled per row")
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=16, help="images per pipeline call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--components", type=int, default=2, help="C of the mixture rows (section 5)")
    p.add_argument("--sections", default="12345", help="which experiments to run, e.g. 12 (default: all)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep reference sets and distributions here")
    p.add_argument("--json", type=Path, default=None, help="also write all numbers to this JSON file")
    return p.parse_args(argv)


def fmt(x: float) -> str:
    return f"{100 * x:.0f}%"


def real_set_text(args) -> str:
    if args.real_set == "drawn":
        return f"a fresh exact drawing of {2 * args.real_per_mode} two-mode images"
    return f"the toy model's {args.real_per_mode} + {args.real_per_mode} images for 'a red square' / 'a blue circle'"


def dc_text(row: dict) -> str:
    if "density" not in row:
        return ""
    return f", FD {row['fd']:.3f}, density {row['density']:.2f}, coverage {row['dc_coverage']:.2f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dreamdist.sampling import RenderSettings, Sampler
    from dreamdist.utils.quiet import quiet_libraries

    quiet_libraries()
    model = str(args.model or toy_model_path())
    began = time.time()
    sampler = Sampler.load(model, device="cpu")
    settings = RenderSettings(
        steps=args.sample_steps, guidance_scale=args.guidance, batch_size=min(args.batch_size, args.samples)
    )
    seeds = list(range(10_000, 10_000 + args.samples))

    def sample(gaussian, gamma: float = 1.0) -> list:
        with torch.no_grad():
            return sampler.images(gaussian, seeds, gamma, settings)

    def sample_prompts(path: Path) -> list:
        """Diagnostic: the K learned prompts themselves, image i from prompt i mod K (no Gaussian)."""
        from dreamdist.core.distfile import load_distribution
        from dreamdist.core.gaussian import FeatureGaussian
        from dreamdist.core.templates import Template
        from dreamdist.sampling import Shot

        with torch.no_grad():
            ctx = load_distribution(path).ctx.to(sampler.device, torch.float32)
            feats = sampler.encoder.encode_soft(ctx, Template.parse(args.template)).features.float()
            points = [FeatureGaussian(f, torch.zeros_like(f)) for f in feats]
            shots = [Shot(points[i % len(points)], s, 0.0) for i, s in enumerate(seeds)]
            return [image for _, image in sampler.render(shots, settings)]

    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fidelity-")))
        work.mkdir(parents=True, exist_ok=True)
        print(
            f"model {model}; {args.samples} samples per row, {args.sample_steps} DDIM steps, guidance "
            f"{args.guidance}; training {args.train_steps} steps, M={args.tokens}, S={args.train_samples}, "
            f"batch {args.train_batch}, template {args.template!r}",
            flush=True,
        )
        sets = write_sets(work / "refs", args.per_mode, args.single_set, args.seed)

        def real_images_of(per_mode: int, seed: int) -> list:
            if args.real_set == "drawn":
                return real_two_mode_images(per_mode, seed)
            return caption_images(sampler.pipe, per_mode, args.sample_steps, args.guidance, seed, settings.batch_size)

        real_images = real_images_of(args.real_per_mode, args.seed)
        real_features = toy_features(real_images)
        real_row = summarise(real_images)
        print(
            f"  real set ({args.real_set}): red square {fmt(real_row['red_square'])}, blue circle "
            f"{fmt(real_row['blue_circle'])}, out-of-set {fmt(real_row['out_of_set'])}",
            flush=True,
        )
        want = set(args.sections)
        k = args.prompts
        files = {}
        if want & {"1", "2"}:
            files["dist"] = train(sampler.pipe, sets["two_mode"], work / f"two_mode_k{k}.safetensors", k, args)
        if "1" in want:
            files["single"] = train(
                sampler.pipe, sets["two_mode"], work / "two_mode_k1.safetensors", 1, args, ortho=False
            )
        if want & {"3", "4"}:
            files["red"] = train(sampler.pipe, sets["red_square"], work / f"red_square_k{k}.safetensors", k, args)
        if "3" in want:
            files["blue"] = train(sampler.pipe, sets["blue_circle"], work / f"blue_circle_k{k}.safetensors", k, args)
        if "5" in want and "red" not in files:
            files["red"] = train(sampler.pipe, sets["red_square"], work / f"red_square_k{k}.safetensors", k, args)
        if "5" in want and "blue" not in files:
            files["blue"] = train(sampler.pipe, sets["blue_circle"], work / f"blue_circle_k{k}.safetensors", k, args)
        c = args.components
        for name in ("two_mode",) * ("1" in want) + ("red_square", "blue_circle") * ("5" in want):
            files[f"{name}_c"] = train(
                sampler.pipe, sets[name], work / f"{name}_c{c}_k{k}.safetensors", k, args, components=c
            )
        rows: list[tuple[str, str, dict]] = []

        def run(section: str, setting: str, gaussian, gamma: float = 1.0, images=None) -> None:
            t = time.time()
            real = real_features if section[0] in "123" else None  # an edit's target is not the two-mode set
            row = summarise(images if images is not None else sample(gaussian, gamma), real)
            rows.append((section, setting, row))
            others = ", ".join(f"{label} {count}" for label, count in row["other_labels"][:4])
            print(
                f"  {section} | {setting}: red square {fmt(row['red_square'])}, blue circle "
                f"{fmt(row['blue_circle'])}, out-of-set {fmt(row['out_of_set'])} [{others}]{dc_text(row)} "
                f"({time.time() - t:.0f}s)",
                flush=True,
            )

        if "1" in want:
            run("1 two modes", f"distribution K={k}", sampler.distribution([files["dist"]]).gaussian())
            run("1 two modes", "single prompt K=1", sampler.distribution([files["single"]]).gaussian())
            print(f"  two-mode components: {split_text(files['two_mode_c'])}", flush=True)
            run("1 two modes", f"mixture C={c}, K={k} each", sampler.distribution([files["two_mode_c"]]).mixture())
            run(
                "1 two modes",
                f"the K={k} prompts themselves, no Gaussian (diagnostic)",
                None,
                images=sample_prompts(files["dist"]),
            )
            run(
                "1 two modes",
                f"real set again, other seeds ({args.real_set}; what a perfect distribution scores)",
                None,
                images=real_images_of(max(1, args.samples // 2), args.seed + 7),
            )
        if "2" in want:
            dist = sampler.distribution([files["dist"]])
            for g in GAMMAS:
                run("2 gamma", f"K={k}, gamma {g:g}", dist.gaussian(), gamma=g)
        if "3" in want:
            for w in MIX_WEIGHTS:
                mixed = sampler.distribution([files["red"], files["blue"]], weights=[1 - w, w])
                run("3 mix", f"red sq {1 - w:g} + blue circ {w:g}", mixed.gaussian())
        if "4" in want:
            red = sampler.distribution([files["red"]])
            run("4 edit", f"red-square dist, {args.template!r} (as trained)", red.gaussian())
            for template in EDIT_TEMPLATES:
                run("4 edit", f"red-square dist, {template!r}", red.gaussian(template))
        if "5" in want:
            for name, one, label in (
                ("red_square", "red", "red-square set"),
                ("blue_circle", "blue", "blue-circle set"),
            ):
                run("5 one mode", f"{label}, one Gaussian K={k}", sampler.distribution([files[one]]).gaussian())
                run(
                    "5 one mode",
                    f"{label}, mixture C={c}, K={k} each",
                    sampler.distribution([files[f"{name}_c"]]).mixture(),
                )

    print()
    print(
        "| section | setting | red square | blue circle | out-of-set | both modes | FD | density | coverage "
        "| blue (any shape) | blue square | diversity |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for section, setting, row in rows:
        both = "yes" if row["coverage"] else "no"
        fd, density, cover = (
            (f"{row['fd']:.3f}", f"{row['density']:.2f}", f"{row['dc_coverage']:.2f}")
            if "density" in row
            else ("-", "-", "-")
        )
        print(
            f"| {section} | {setting} | {fmt(row['red_square'])} | {fmt(row['blue_circle'])} | "
            f"{fmt(row['out_of_set'])} | {both} | {fd} | {density} | {cover} | {fmt(row['blue'])} | "
            f"{fmt(row['blue_square'])} | {row['diversity']:.3f} |"
        )
    print(
        f"both modes: each mode >= 20% of the samples. out-of-set: neither a red square nor a blue circle "
        f"(blends, other colours or shapes, unrecognised blobs). FD (Frechet distance, lower is better), "
        f"density and coverage (Naeem et al. 2020, k={DEFAULT_K}; 1 and 1 for samples drawn like the real "
        f"set): against {real_set_text(args)}, in the toy feature space "
        "(foreground colour, shape IoUs, area); sections 1-3 only. blue square: the edit's target (new "
        "colour, shape kept). diversity: mean pairwise RMS pixel distance."
    )
    print(f"\n{args.samples} samples per row; total {time.time() - began:.0f}s")
    if args.json:
        payload = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "rows": [{"section": s, "setting": st, **r} for s, st, r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
