#!/usr/bin/env python
"""Benchmark `dreamdist train`: where a training step's time and memory go.

For the tiny test model and a medium-size random model (the same classes: CLIPTextModel hidden 256,
UNet2DConditionModel channels (64, 128, 256), AutoencoderKL), at the paper's K=32, M=8, S=4 and
batch size 4, prints:

- seconds per step, steady state (median over the measured steps, after warm-up steps);
- peak memory: on CPU the process's peak RSS (each model is measured in its own subprocess, so the
  figure covers loading + training of that model only), on CUDA torch.cuda.max_memory_allocated;
- the share of a step (in a second, profiled run) spent in the text encoder (forward + backward of the
  K prompts, with the Gaussian fit and the B x S reparameterised samples), the UNet forward and the
  UNet backward;
- the overhead ratio: step time / (K-prompt text-encoder forward+backward + B*S UNet forward+backward),
  the two unavoidable parts each timed alone on the same shapes, outside the trainer but between its
  steps (so both see the same machine load). Target <= 1.15.

Then, for UNet chunks of 16 / 4 / 1 evaluations (--unet-batches; 16 = the whole step at once), each in
its own subprocess at the same settings: step time, peak RSS of the process (CPU; CUDA: peak
allocated), the step's own peak (RSS growth during the steps over the RSS before them; and the
tensor bytes ``dreamdist.train.memory.LiveBytes`` saw alive) next to the estimate, as ratios to the
unchunked step.

On the CPU, subnormal floats are flushed to zero (``torch.set_flush_denormal``): the random-weight
models' backward passes produce them in some batch shapes, and x86 CPUs handle them up to 30x slower,
which timed the medium model's 4-evaluation chunks at 2.7x the unchunked step instead of 1.0x. Real
weights on a GPU do not have this problem; a benchmark of the step should not measure it.

``--plan-table`` prints instead what the estimate says Stable Diffusion 2.1 needs at the paper's
settings and what ``--unet-batch auto`` picks on cards of 12 to 80 GB (the README's table); it loads
no model (dry runs on the meta device).

    python scripts/bench_train.py                  # both models, CPU
    python scripts/bench_train.py --device cuda --precision bf16 --models tiny medium
    python scripts/bench_train.py --plan-table
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

MEDIUM_RESOLUTION = 128


class PhaseTimer:
    """The trainer's step hook (dreamdist.train.StepHook): syncs the device and reads ``clock`` at
    each phase boundary, so the phases' times add up to the step's. A phase that ends several times
    in a step (the UNet's, once per chunk) adds up within the step."""

    def __init__(self, clock: Callable[[], float], sync: Callable[[], None]) -> None:
        self.clock, self.sync = clock, sync
        self.timings: dict[str, list[float]] = {}
        self._last = 0.0
        self._steps = 0

    def begin_step(self, step: int) -> None:  # noqa: ARG002
        self._steps += 1
        self._last = self.clock()

    def end_phase(self, phase: str) -> None:
        self.sync()
        now = self.clock()
        times = self.timings.setdefault(phase, [])
        if len(times) < self._steps:
            times.append(0.0)
        times[-1] += now - self._last
        self._last = now


def bench_inputs(work: Path, model_kind: str) -> tuple[Path, Path]:
    """(the model folder, the reference-image folder) a timed run trains on, written under ``work``."""
    if model_kind == "tiny":
        from dreamdist.tiny_model import make_tiny_model

        return make_tiny_model(work / "model", prediction_type="v_prediction"), draw_images(work / "images")
    return make_medium_model(work / "model"), draw_images(work / "images")


def make_medium_model(path: Path) -> Path:
    """A medium random-weight SD-2-architecture pipeline (same classes as dreamdist.tiny_model)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from dreamdist.tiny_model import write_tokenizer

    write_tokenizer(path / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer")
    torch.manual_seed(0)
    hidden = 256
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=hidden,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=MEDIUM_RESOLUTION // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 128, 256),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=hidden,
        attention_head_dim=(4, 8, 8),
        use_linear_projection=True,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=MEDIUM_RESOLUTION,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
    )
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
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def draw_images(folder: Path, count: int = 6) -> Path:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.new("RGB", (160 + 8 * i, 144), (255, 255, 255))
        ImageDraw.Draw(image).ellipse((10 + 4 * i, 10, 140, 130), fill=(200, 40 * i % 255, 90))
        image.save(folder / f"ref{i}.png")
    return folder


def measure(model_kind: str, args: argparse.Namespace) -> dict:
    """Everything for one model (run in a fresh subprocess)."""
    import torch

    from dreamdist.core.runtime import load_pipeline
    from dreamdist.train import TrainConfig, Trainer, resolve_precision
    from dreamdist.utils.quiet import quiet_libraries

    quiet_libraries()
    warnings.filterwarnings("ignore")
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # torch + libraries, no model yet
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix=f"bench-train-{model_kind}-"))
    try:
        model, images = bench_inputs(work, model_kind)
        device, dtype = resolve_precision(args.device, args.precision)
        cuda = device.type == "cuda"
        sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
        # On CPU, time in CPU seconds of this process: the machine may be shared, and wall time then
        # measures the neighbours as much as us. On CUDA, wall time with device syncs.
        clock = time.perf_counter if cuda else time.process_time
        pipe = load_pipeline(model, device, dtype)
        steps = args.warmup + args.steps
        config = TrainConfig(
            steps=steps,
            checkpoint_every=0,
            precision=args.precision,
            unet_batch=16,
            gradient_checkpointing=args.gradient_checkpointing,
        )

        measured = range(max(args.warmup, 1), steps)  # step i's time is stamp[i] - stamp[i-1]

        # 1. a profiled run (device syncs between phases): shares of a step, peak memory
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        stamps_p: list[float] = []
        timer = PhaseTimer(clock, sync)
        trainer = Trainer(
            images,
            pipe,
            work / "out" / "a.safetensors",
            config,
            progress=False,
            callback=lambda info: (sync(), stamps_p.append(clock())),
            hook=timer,
        )
        total = trainer.run().seconds  # latent caching + steps
        step_p = statistics.median(stamps_p[i] - stamps_p[i - 1] for i in measured)
        phases = {k: statistics.median(v[i] for i in measured) for k, v in timer.timings.items()}
        peak = (
            torch.cuda.max_memory_allocated(device)
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )

        # 2. the unavoidable parts alone, same shapes and precision, outside the trainer
        encoder, template = trainer.model.encoder, trainer.template
        k, m = config.num_prompts, config.num_tokens
        ctx = (torch.randn(k, m, encoder.token_dim, device=device) * 0.02).requires_grad_(True)
        seq, dim = trainer.layout.input_ids.shape[0], encoder.hidden_size
        feat_grad = torch.randn(k, seq, dim, device=device)
        autocast = trainer.model.autocast

        def text_encoder_fwd_bwd():
            with autocast():
                enc = encoder.encode_soft(ctx, template)
            torch.autograd.backward([enc.features.float(), enc.pooled.float().sum()], [feat_grad, None])
            ctx.grad = None

        n = config.batch_size * config.samples
        c, h, w = trainer.latent_shape
        latents = torch.randn(n, c, h, w, device=device, dtype=pipe.unet.dtype)
        timesteps = torch.randint(0, 1000, (n,), device=device)
        cond = torch.randn(n, seq, dim, device=device).requires_grad_(True)
        out_grad = torch.randn(n, c, h, w, device=device)

        def unet_fwd_bwd():
            with autocast():
                pred = pipe.unet(latents, timesteps, encoder_hidden_states=cond.to(pipe.unet.dtype)).sample
            pred.float().backward(out_grad)
            cond.grad = None

        # 3. the real trainer, unprofiled, with the parts-alone timings interleaved between its steps
        # (inside the callback, outside the step's stamps), so that both see the same machine load
        stamps: list[tuple[float, float]] = []  # (callback entered, callback left) per step
        alone: dict[str, list[float]] = {"te": [], "unet": []}

        def between_steps(info):
            sync()
            entered = clock()
            for key, fn in (("te", text_encoder_fwd_bwd), ("unet", unet_fwd_bwd)):
                t0 = clock()
                fn()
                sync()
                alone[key].append(clock() - t0)
            stamps.append((entered, clock()))

        trainer = Trainer(images, pipe, work / "out" / "b.safetensors", config, progress=False, callback=between_steps)
        trainer.run()
        step_s = statistics.median(stamps[i][0] - stamps[i - 1][1] for i in measured)
        te_s = statistics.median(alone["te"][i] for i in measured)
        unet_s = statistics.median(alone["unet"][i] for i in measured)
        text_s = phases["text_fwd"] + phases["text_bwd"]
        profiled = sum(phases.values())
        return {
            "model": model_kind,
            "device": str(device),
            "precision": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads(),
            "clock": "wall" if cuda else "cpu",
            "resolution": trainer.resolution,
            "latent": f"{c}x{h}x{w}",
            "unet_params_M": round(sum(p.numel() for p in pipe.unet.parameters()) / 1e6, 2),
            "text_params_M": round(sum(p.numel() for p in pipe.text_encoder.parameters()) / 1e6, 2),
            "steps_timed": len(measured),
            "step_s": step_s,
            "latent_cache_s": trainer.latent_cache_s,
            "run_s": total,
            "peak_mem_MiB": peak / 2**20,
            "rss_before_model_MiB": None if cuda else rss_start / 2**20,
            "profiled_step_s": step_p,
            "share_text_encoder": text_s / step_p,
            "share_unet_fwd": phases["unet_fwd"] / step_p,
            "share_unet_bwd": phases["unet_bwd"] / step_p,
            "share_other": 1 - profiled / step_p,
            "alone_text_encoder_fwd_bwd_s": te_s,
            "alone_unet_fwd_bwd_s": unet_s,
            "ratio": step_s / (te_s + unet_s),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def current_rss() -> int:
    """Resident bytes of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def measure_chunk(model_kind: str, chunk: int, args: argparse.Namespace) -> dict:
    """One UNet chunk size on one model (run in a fresh subprocess, so the peak RSS is its own)."""
    import torch

    from dreamdist.train import TrainConfig, Trainer
    from dreamdist.train.memory import LiveBytes
    from dreamdist.utils.quiet import quiet_libraries

    quiet_libraries()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix=f"bench-chunk-{model_kind}-"))
    try:
        model, images = bench_inputs(work, model_kind)
        steps = args.warmup + args.steps
        config = TrainConfig(
            steps=steps,
            checkpoint_every=0,
            precision=args.precision,
            unet_batch=chunk,
            gradient_checkpointing=args.gradient_checkpointing,
        )
        trainer = Trainer(images, str(model), work / "out.safetensors", config, device=args.device, progress=False)
        device = trainer.model.device
        cuda = device.type == "cuda"
        sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
        clock = time.perf_counter if cuda else time.process_time
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        before_steps = current_rss()
        stamps: list[float] = []
        trainer.callback = lambda info: (sync(), stamps.append(clock()))
        trainer.run()
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        measured = range(max(args.warmup, 1), steps)
        step_s = statistics.median(stamps[i] - stamps[i - 1] for i in measured)
        # one more step, its tensors followed by LiveBytes (not timed)
        with trainer.model.unet_checkpointing(trainer.memory.gradient_checkpointing), LiveBytes() as live:
            trainer.step(trainer.draw())
        trainer.prompts.ctx.grad = None
        estimate = trainer.memory_estimate
        n = config.batch_size * config.samples
        return {
            "model": model_kind,
            "device": str(device),
            "chunk": chunk,
            "chunks": trainer.memory.chunks,
            "step_s": step_s,
            "peak_MiB": (torch.cuda.max_memory_allocated(device) if cuda else peak_rss) / 2**20,
            "step_rss_MiB": None if cuda else max(0, peak_rss - before_steps) / 2**20,
            "live_step_MiB": live.peak / 2**20,
            "estimate_step_MiB": estimate.step(min(chunk, n), trainer.memory.gradient_checkpointing) / 2**20
            if estimate is not None
            else None,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def chunk_table(rows: list[dict]) -> str:
    head = (
        "model",
        "UNet chunk",
        "s/step",
        "x unchunked",
        "peak MiB",
        "x",
        "step RSS MiB",
        "x",
        "step tensors MiB",
        "x",
        "estimate MiB",
        "estimate / tensors",
    )
    lines = [" | ".join(head), " | ".join("-" * len(h) for h in head)]
    base: dict[str, dict] = {}
    for r in rows:
        ref = base.setdefault(r["model"], r)

        def ratio(key: str) -> str:
            return f"{r[key] / ref[key]:.2f}" if r.get(key) and ref.get(key) else "-"

        lines.append(
            " | ".join(
                [
                    r["model"],
                    f"{r['chunk']} ({r['chunks']} pass{'es' if r['chunks'] > 1 else ''})",
                    f"{r['step_s']:.3f}",
                    ratio("step_s"),
                    f"{r['peak_MiB']:.0f}",
                    ratio("peak_MiB"),
                    f"{r['step_rss_MiB']:.0f}" if r["step_rss_MiB"] is not None else "-",
                    ratio("step_rss_MiB"),
                    f"{r['live_step_MiB']:.1f}",
                    ratio("live_step_MiB"),
                    f"{r['estimate_step_MiB']:.1f}" if r["estimate_step_MiB"] is not None else "-",
                    f"{r['estimate_step_MiB'] / r['live_step_MiB']:.3f}" if r["estimate_step_MiB"] else "-",
                ]
            )
        )
    return "\n".join(lines)


CARDS_GB = (12, 16, 24, 48, 80)
CARD_RESERVED_GIB = 0.6  # taken before training starts: the CUDA context, a desktop


def plan_table() -> str:
    """README's memory tables: SD 2.1 at the paper's settings (768 px, K=32, M=8, B=4, S=4), by dry run."""
    import torch

    from dreamdist.train import TrainConfig
    from dreamdist.train.memory import GIB, SD21_CONFIGS, MemoryEstimate, Workload, plan_memory

    config = TrainConfig()
    n = config.batch_size * config.samples

    def estimate(dtype: torch.dtype) -> MemoryEstimate:
        work = Workload(
            config.num_prompts,
            config.num_tokens,
            config.batch_size,
            config.samples,
            SD21_CONFIGS.native_resolution,
            dtype,
            "cuda",
            cached_latents=20 * 33,
        )
        return MemoryEstimate.of(SD21_CONFIGS, work)

    bf16, fp32 = estimate(torch.bfloat16), estimate(torch.float32)
    rows = [
        ("bf16, all 16 UNet evaluations at once", bf16.peak(n, False, 1)),
        ("bf16, gradient checkpointing, all at once", bf16.peak(n, True, 1)),
        ("bf16, 4 chunks of 4 evaluations", bf16.peak(4, False, 1)),
        ("bf16, 16 chunks of 1 evaluation", bf16.peak(1, False, 1)),
        ("fp32, all 16 UNet evaluations at once", fp32.peak(n, False, 1)),
        ("fp32, gradient checkpointing, 16 chunks of 1", fp32.peak(1, True, 1)),
    ]
    fixed = bf16.unet(False)[1], bf16.unet(True)[1]
    lines = ["| SD 2.1, 768 px, K=32, M=8, B=4, S=4, flash attention | estimated peak |", "|---|---|"]
    lines += [f"| {what} | {peak / GIB:.1f} GiB |" for what, peak in rows]
    lines += [
        "",
        f"Per bf16 UNet evaluation {fixed[0] / GIB:.2f} GiB ({fixed[1] / GIB:.2f} with checkpointing); "
        f"weights {bf16.weights / GIB:.1f} GiB (fp32 {fp32.weights / GIB:.1f}); K-prompt text encoder "
        f"{bf16.text_held / GIB:.1f} GiB; latents of 20 images x 33 crop positions {bf16.fixed / GIB:.2f} GiB; "
        f"one VAE call while caching {bf16.vae_encode(1) / GIB:.1f} GiB per image.",
        "",
    ]
    lines += ["| card | free (assumed) | `--unet-batch auto` picks (bf16) | estimated peak |", "|---|---|---|---|"]
    for card in CARDS_GB:
        free = int((card - CARD_RESERVED_GIB) * GIB)
        plan = plan_memory(bf16, n, "auto", False, free, "cuda:0")
        how = plan.describe().split(" -> UNet ")[1].split(":")[0]
        fits = "" if plan.fits else " (does not fit)"
        lines.append(
            f"| {card} GB | {free / GIB:.1f} GiB | {how}, VAE {plan.vae_batch} per call | "
            f"{plan.estimate / GIB:.1f} GiB{fits} |"
        )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = (
        "model",
        "device",
        "clock",
        "prec",
        "latent",
        "UNet M",
        "s/step",
        "peak MiB (before model)",
        "text enc",
        "UNet fwd",
        "UNet bwd",
        "other",
        "TE alone",
        "UNet alone",
        "ratio",
    )
    lines = [" | ".join(head), " | ".join("-" * len(h) for h in head)]
    for r in rows:
        before = f" ({r['rss_before_model_MiB']:.0f})" if r.get("rss_before_model_MiB") else ""
        lines.append(
            " | ".join(
                [
                    r["model"],
                    r["device"],
                    r["clock"],
                    r["precision"],
                    r["latent"],
                    f"{r['unet_params_M']:.1f}",
                    f"{r['step_s']:.3f}",
                    f"{r['peak_mem_MiB']:.0f}{before}",
                    f"{r['share_text_encoder']:.1%}",
                    f"{r['share_unet_fwd']:.1%}",
                    f"{r['share_unet_bwd']:.1%}",
                    f"{max(0.0, r['share_other']):.1%}",
                    f"{r['alone_text_encoder_fwd_bwd_s']:.3f}s",
                    f"{r['alone_unet_fwd_bwd_s']:.3f}s",
                    f"{r['ratio']:.3f}",
                ]
            )
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=("tiny", "medium"), default=["tiny", "medium"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--steps", type=int, default=6, help="measured steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps, not measured")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--unet-batches",
        type=int,
        nargs="*",
        default=[16, 4, 1],
        help="UNet chunk sizes to compare (16: the whole step; none: skip)",
    )
    parser.add_argument("--skip-phases", action="store_true", help="only the chunk comparison")
    parser.add_argument("--plan-table", action="store_true", help="print the SD 2.1 memory tables and exit")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--one", choices=("tiny", "medium"), help=argparse.SUPPRESS)  # subprocess mode
    parser.add_argument("--chunk", type=int, help=argparse.SUPPRESS)  # subprocess mode
    args = parser.parse_args()
    if args.one:
        import torch

        torch.set_flush_denormal(True)  # see the module doc
    if args.plan_table:
        print(plan_table())
        return 0
    if args.one:
        row = measure_chunk(args.one, args.chunk, args) if args.chunk else measure(args.one, args)
        print("BENCH-ROW " + json.dumps(row), flush=True)
        return 0

    def run_one(kind: str, *extra: str) -> dict | None:
        argv = [
            sys.executable,
            __file__,
            "--one",
            kind,
            "--device",
            args.device,
            "--precision",
            args.precision,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--threads",
            str(args.threads),
            *extra,
        ]
        if args.gradient_checkpointing:
            argv.append("--gradient-checkpointing")
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        found = [line for line in done.stdout.splitlines() if line.startswith("BENCH-ROW ")]
        if done.returncode or not found:
            print(f"{kind} {' '.join(extra)}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
            return None
        return json.loads(found[-1][len("BENCH-ROW ") :])

    rows, chunk_rows = [], []
    for kind in [] if args.skip_phases else args.models:
        row = run_one(kind)
        if row is None:
            return 1
        rows.append(row)
        print(f"{kind}: {row['step_s']:.3f} s/step, ratio {row['ratio']:.3f}", file=sys.stderr, flush=True)
    for kind in args.models:
        for chunk in args.unet_batches:
            row = run_one(kind, "--chunk", str(chunk))
            if row is None:
                return 1
            chunk_rows.append(row)
            print(f"{kind} chunk {chunk}: {row['step_s']:.3f} s/step", file=sys.stderr, flush=True)
    if rows:
        print(
            "K=32 M=8 S=4 batch 4 (UNet batch 16); s/step = median steady-state step (CPU: CPU seconds of the "
            "process, robust to a shared machine; CUDA: wall seconds); shares are of that step; 'alone' = the "
            "unavoidable part timed outside the trainer; ratio = s/step / (TE alone + UNet alone), target <= 1.15"
        )
        print(table(rows))
    if chunk_rows:
        print(
            "\nUNet chunks, same settings; x = ratio to the unchunked step (chunk 16). peak = the process's peak "
            "RSS (CPU; CUDA: peak allocated), incl. loading and latent caching; step RSS = its growth during the "
            "steps; step tensors = bytes LiveBytes saw alive in one step; estimate = dreamdist.train.memory's "
            "figure for that step"
        )
        print(chunk_table(chunk_rows))
    if args.json:
        args.json.write_text(json.dumps({"phases": rows, "chunks": chunk_rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
