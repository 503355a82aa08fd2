#!/usr/bin/env python
"""Stage-2 benchmark on the shipped toy model: what fine-tuning the UNet after the prompt distribution
(``dreamdist finetune``) buys, and what it costs.

1. Step cost: seconds per stage-2 step (full UNet, and LoRA when peft is installed) as a ratio to a
   stage-1 step at the same batch size and S (``--cost-steps`` timed steps after 2 warm-up steps).
2. The toy table, on the one-mode set (red squares) and the two-mode set (red squares + blue
   circles) of ``scripts/bench_fidelity.py`` (its reference sets, labelling and diversity measure,
   imported):
   - stage 1 only: a K-prompt distribution, the base model;
   - stage 1 + stage 2: the same distribution, then the UNet fine-tuned on samples of it;
   - K=1 + stage 2: Zeng et al.'s recipe, one learned prompt (no orthogonality loss), then stage 2.
   Per row: in-set share (samples labelled as a reference mode), mean distance of a sample to its
   nearest reference image (RMS over pixels in [0, 1]; lower: closer to the references), diversity
   (mean pairwise RMS distance), and language drift: the same distribution re-encoded in
   "a {} on a black background" -- the share of samples whose background is black (the text edit
   still works) and their in-set share -- plus the wall time of each stage.

The toy model's UNet is tiny and was trained at lr 1e-3, so Zeng et al.'s lr 5e-6 for 800 steps barely
moves it; the toy defaults are ``--ft-lr 1e-4 --ft-steps 150`` (stage 1: 200 steps at batch 2; flags
give the paper's numbers). On 2 idle CPU cores the default run takes about 15 minutes; ``--samples``,
``--train-steps`` and ``--ft-steps`` are the budgets.

    nice -n 19 python scripts/bench_finetune.py                       # step cost + the table
    python scripts/bench_finetune.py --cost-only                      # step cost only (a minute)
    python scripts/bench_finetune.py --train-steps 2 --ft-steps 2 --samples 4 --sample-steps 2   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling script bench_fidelity (scripts are not a package)

from bench_fidelity import MODE_A, MODE_B, diversity, labels_of, write_sets  # noqa: E402

from dreamdist.toy import toy_model_path  # noqa: E402
from dreamdist.toy.classify import CHROMA_THRESHOLD, to_array  # noqa: E402

EDIT = "a {} on a black background"
BLACK = 0.2  # mean background brightness below this: a black background


def quietly():
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")  # K = 1 warns that it learns a single prompt: that is the point here
    return stack


# --------------------------------------------------------------------------- metrics


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.float32).reshape(-1) / 255 for im in images])


def nearest_reference(images, references) -> float:
    """Mean over samples of the RMS pixel distance to the nearest reference image."""
    x, r = pixels(images), pixels(references)
    d2 = np.maximum((x * x).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2 * x @ r.T, 0) / x.shape[1]
    return float(np.sqrt(d2.min(axis=1)).mean())


def black_background(image) -> bool:
    rgb = to_array(image)[..., :3]
    background = rgb.max(axis=-1) - rgb.min(axis=-1) <= CHROMA_THRESHOLD
    return bool(background.any() and rgb[background].mean() < BLACK)


def in_set(images, modes) -> float:
    labels = labels_of(images)
    return sum(lab in modes for lab in labels) / max(1, len(labels))


# --------------------------------------------------------------------------- runs


def stage1(model: str, refs: Path, out: Path, k: int, args) -> float:
    from dreamdist.train import TrainConfig, train_distribution

    config = TrainConfig(
        num_prompts=k,
        num_tokens=args.tokens,
        samples=args.train_samples,
        steps=args.train_steps,
        ortho_weight=5e-3 if k > 1 else 0.0,
        lr=args.lr,
        batch_size=args.train_batch,
        seed=args.seed,
        checkpoint_every=0,
    )
    began = time.perf_counter()
    with quietly():
        train_distribution(
            refs, model, out, config, device="cpu", checkpoint=False, log_csv=False, progress=False, overwrite=True
        )
    return time.perf_counter() - began


def stage2(model: str, dist: Path, refs: Path, out: Path, args) -> float:
    from dreamdist.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(
        method=args.ft_method,
        steps=args.ft_steps,
        lr=args.ft_lr,
        samples=args.train_samples,
        batch_size=args.ft_batch,
        seed=args.seed,
        checkpoint_every=0,
    )
    began = time.perf_counter()
    with quietly():
        finetune(
            dist,
            refs,
            out,
            config,
            model=model,
            device="cpu",
            checkpoint=False,
            log_csv=False,
            progress=False,
            overwrite=True,
        )
    return time.perf_counter() - began


def step_cost(model: str, refs: Path, work: Path, args) -> dict:
    """Seconds per step of stage 1 and of stage 2 (each method), same batch and S."""
    from dreamdist.finetune import FinetuneConfig, FinetuneTrainer
    from dreamdist.train import TrainConfig, Trainer

    def timed(trainer) -> float:
        for _ in range(2):
            trainer.update()
        began = time.perf_counter()
        for _ in range(args.cost_steps):
            trainer.update()
        return (time.perf_counter() - began) / args.cost_steps

    dist = work / "cost.safetensors"
    with quietly():
        t1 = Trainer(
            refs,
            model,
            dist,
            TrainConfig(
                num_prompts=args.prompts,
                num_tokens=args.tokens,
                samples=args.train_samples,
                batch_size=args.train_batch,
                steps=10_000,
            ),
            device="cpu",
            checkpoint=False,
            log_csv=False,
            progress=False,
            overwrite=True,
        )
        s1 = timed(t1)
        t1.steps_done = t1.config.steps
        t1._save_distribution()  # stage 2 needs a distribution file; its quality is irrelevant here
        del t1
        costs = {"stage1_s": s1}
        methods = ["full"] + (["lora"] if importlib.util.find_spec("peft") else [])
        for method in methods:
            t2 = FinetuneTrainer(
                dist,
                refs,
                work / f"cost-{method}",
                FinetuneConfig(method=method, samples=args.train_samples, batch_size=args.train_batch, steps=10_000),
                model=model,
                device="cpu",
                checkpoint=False,
                log_csv=False,
                progress=False,
                overwrite=True,
            )
            costs[f"stage2_{method}_s"] = timed(t2)
            del t2
    return costs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="default: the shipped toy model")
    p.add_argument("--prompts", type=int, default=8, help="K of the stage-1 distributions")
    p.add_argument("--tokens", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=200, help="stage-1 steps")
    p.add_argument("--train-samples", type=int, default=4, help="S, both stages")
    p.add_argument("--train-batch", type=int, default=2, help="stage-1 batch (and the step-cost batch)")
    p.add_argument("--lr", type=float, default=1e-3, help="stage-1 lr")
    p.add_argument("--ft-method", choices=("full", "lora"), default="full")
    p.add_argument("--ft-steps", type=int, default=150, help="stage-2 steps (Zeng et al.: 800)")
    p.add_argument("--ft-lr", type=float, default=1e-4, help="stage-2 lr (Zeng et al.: 5e-6, for SD 2.1)")
    p.add_argument("--ft-batch", type=int, default=1, help="stage-2 images per step")
    p.add_argument("--per-mode", type=int, default=6, help="images per mode in the two-mode set")
    p.add_argument("--single-set", type=int, default=8, help="images in the one-mode set")
    p.add_argument("--samples", type=int, default=32, help="images sampled per row")
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--cost-steps", type=int, default=10, help="timed steps per step-cost measurement")
    p.add_argument("--cost-only", action="store_true", help="only the step-cost ratio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work-dir", type=Path, default=None, help="keep reference sets, distributions and models here")
    p.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dreamdist.sampling import RenderSettings, Sampler
    from dreamdist.utils.quiet import quiet_libraries

    quiet_libraries()
    model = str(args.model or toy_model_path())
    began = time.time()
    payload: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-finetune-")))
        work.mkdir(parents=True, exist_ok=True)
        sets = write_sets(work / "refs", args.per_mode, args.single_set, args.seed)
        costs = step_cost(model, sets["two_mode"], work, args)
        payload["step_cost"] = costs
        print(
            f"step cost (toy model, batch {args.train_batch}, S {args.train_samples}, 2 threads): stage 1 "
            f"{costs['stage1_s'] * 1000:.0f} ms/step",
            flush=True,
        )
        for key, value in costs.items():
            if key.startswith("stage2_"):
                print(
                    f"  stage 2 {key.split('_')[1]}: {value * 1000:.0f} ms/step = {value / costs['stage1_s']:.2f}x "
                    "a stage-1 step",
                    flush=True,
                )
        if args.cost_only:
            print(json.dumps(payload["step_cost"]))
            return 0

        settings = RenderSettings(
            steps=args.sample_steps, guidance_scale=args.guidance, batch_size=min(16, args.samples)
        )
        seeds = list(range(10_000, 10_000 + args.samples))
        samplers: dict[str, Sampler] = {}

        def images(model_dir: str, dist: Path, template: str | None = None) -> list:
            if model_dir not in samplers:
                samplers[model_dir] = Sampler.load(model_dir, device="cpu")
            sampler = samplers[model_dir]
            with torch.no_grad():
                return sampler.images(sampler.distribution([dist]).gaussian(template), seeds, 1.0, settings)

        rows = []
        cases = {"one mode (red squares)": ("red_square", {MODE_A}), "two modes": ("two_mode", {MODE_A, MODE_B})}
        k = args.prompts
        for set_label, (set_name, modes) in cases.items():
            refs = sets[set_name]
            from PIL import Image

            references = [Image.open(p).convert("RGB") for p in sorted(refs.iterdir())]
            dist_k, dist_1 = work / f"{set_name}_k{k}.safetensors", work / f"{set_name}_k1.safetensors"
            t1k = stage1(model, refs, dist_k, k, args)
            t11 = stage1(model, refs, dist_1, 1, args)
            ft_k, ft_1 = work / f"{set_name}_k{k}_ft", work / f"{set_name}_k1_ft"
            t2k = stage2(model, dist_k, refs, ft_k, args)
            t21 = stage2(model, dist_1, refs, ft_1, args)
            for label, model_dir, dist, t_1, t_2 in (
                (f"stage 1 only (K={k})", model, dist_k, t1k, None),
                (f"stage 1 (K={k}) + stage 2", str(ft_k), dist_k, t1k, t2k),
                ("K=1 + stage 2 (Zeng et al.)", str(ft_1), dist_1, t11, t21),
            ):
                t = time.time()
                plain, edited = images(model_dir, dist), images(model_dir, dist, EDIT)
                row = {
                    "set": set_label,
                    "setting": label,
                    "in_set": in_set(plain, modes),
                    "nearest_ref": nearest_reference(plain, references),
                    "diversity": diversity(plain),
                    "edit_black_bg": sum(map(black_background, edited)) / len(edited),
                    "edit_in_set": in_set(edited, modes),
                    "stage1_s": t_1,
                    "stage2_s": t_2,
                }
                rows.append(row)
                print(
                    f"  {set_label} | {label}: in-set {row['in_set']:.0%}, nearest ref {row['nearest_ref']:.3f}, "
                    f"diversity {row['diversity']:.3f}, edit black bg {row['edit_black_bg']:.0%} "
                    f"(in-set {row['edit_in_set']:.0%}) ({time.time() - t:.0f}s)",
                    flush=True,
                )
        payload["rows"] = rows

    print()
    print(
        "| set | setting | in-set | nearest reference | diversity | edit: black background | edit: in-set "
        "| stage 1 | stage 2 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t2 = f"{r['stage2_s']:.0f}s" if r["stage2_s"] is not None else "-"
        print(
            f"| {r['set']} | {r['setting']} | {r['in_set']:.0%} | {r['nearest_ref']:.3f} | {r['diversity']:.3f} | "
            f"{r['edit_black_bg']:.0%} | {r['edit_in_set']:.0%} | {r['stage1_s']:.0f}s | {t2} |"
        )
    print(
        f"\n{args.samples} samples per row, {args.sample_steps} DDIM steps, guidance {args.guidance}; stage 1: "
        f"{args.train_steps} steps, M={args.tokens}, S={args.train_samples}, batch {args.train_batch}; stage 2: "
        f"{args.ft_method}, {args.ft_steps} steps, lr {args.ft_lr:g}, batch {args.ft_batch}. edit: the same "
        f"distribution in {EDIT!r}. total {time.time() - began:.0f}s"
    )
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
