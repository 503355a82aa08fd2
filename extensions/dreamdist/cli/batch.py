"""Train many 3D assets from one distribution: one threestudio run per seed (launch.py --train with
seed=S, then with --export launch.py --export and a GLB per seed), one job per GPU at a time, or
as tasks on an existing Ray cluster. OUT/manifest.jsonl records every state change; re-running the
same command resumes (done seeds are skipped, interrupted ones resume their checkpoint, failed ones
retry from scratch). Each GLB's manifest record names the checkpoint it came from. Per-job logs go to
OUT/logs/, GLBs to OUT/glb/, threestudio trials to OUT/threestudio/, per-seed state and locks to
OUT/seeds/. If the runner dies (even by SIGKILL), its launch.py processes die with it.
OUT/gallery.html (opens from disk, no server) shows every seed as it goes: status, time, threestudio's
test renders (still and turntable), GLB link and the commands that regenerate it.

Example:
  dreamdist batch --threestudio ~/threestudio --config configs/dreamdist-mvdream.yaml \\
      --distribution dist.safetensors --seeds 0-199 --gpus 0,1,2,3 --out runs/props --export \\
      trainer.max_steps=5000"""

from __future__ import annotations

import argparse
import sys

from dreamdist.cli import ExampleHelpFormatter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = ExampleHelpFormatter
    parser.add_argument("--threestudio", required=True, help="threestudio checkout (the folder holding launch.py)")
    parser.add_argument(
        "--config",
        required=True,
        help="threestudio config, e.g. configs/dreamdist-mvdream.yaml (relative to the current "
        "folder or to --threestudio)",
    )
    parser.add_argument(
        "--distribution",
        required=True,
        action="append",
        help="distribution .safetensors; repeat to mix several (weights via the override "
        "system.prompt_processor.distribution_weights=[...])",
    )
    parser.add_argument("--seeds", required=True, help="seeds, one asset each: e.g. 0-199,300,305-310")
    parser.add_argument("--out", required=True, help="output folder (manifest, logs, trials, GLBs)")
    parser.add_argument("--gpus", default="0", help="local backend: GPUs, one job slot each (e.g. 0,1,2,3)")
    parser.add_argument(
        "--export",
        action="store_true",
        help="after training, export each mesh (mesh-exporter) and convert it to OUT/glb/*.glb",
    )
    parser.add_argument("--retries", type=int, default=2, help="extra attempts for a failed seed per run")
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="restart interrupted seeds from an empty trial folder instead of resuming their "
        "last checkpoint (threestudio resume=)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the exact commands and exit")
    parser.add_argument(
        "--gallery-only",
        action="store_true",
        help="rewrite OUT/gallery.html from the manifest and trial folders, run nothing",
    )
    parser.add_argument(
        "--python", default=None, help="Python of threestudio's environment (default: the one running dreamdist)"
    )
    parser.add_argument(
        "--export-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for the export step only, e.g. system.exporter.context_type=cuda "
        "(headless machines) or system.exporter.texture_size=2048",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (per-asset lines only)")
    glb = parser.add_argument_group("GLB conversion (with --export; see `dreamdist export-mesh --help`)")
    glb.add_argument("--up", default="+Z", help="threestudio's up axis, turned to glTF's +Y")
    glb.add_argument("--front", default=None, help="front axis to turn to glTF's +Z (threestudio: +X)")
    glb.add_argument("--height", type=float, default=None, help="scale every asset to this height in metres")
    glb.add_argument("--origin", default="bottom-center", choices=["bottom-center", "center", "keep"])
    glb.add_argument("--max-faces", type=int, default=None, help="decimate each GLB to this many triangles")
    glb.add_argument("--lods", type=int, default=1, help="LODs per asset at halving face budgets")
    ray = parser.add_argument_group("Ray backend")
    ray.add_argument("--backend", choices=["local", "ray"], default="local")
    ray.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (e.g. auto, or ray://head:10001); 'local' starts a private one",
    )
    ray.add_argument("--ray-gpus-per-task", type=float, default=1.0)
    ray.add_argument("--ray-cpus-per-task", type=float, default=1.0)
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="threestudio config overrides passed to every training run"
    )


def run(args: argparse.Namespace) -> int:
    from dreamdist.batch.jobs import GlbOptions, build_spec
    from dreamdist.batch.runner import dry_run, run_batch
    from dreamdist.batch.seeds import parse_gpus, parse_seeds
    from dreamdist.utils.errors import InputError

    seeds = parse_seeds(args.seeds)
    gpus = parse_gpus(args.gpus) if args.backend == "local" else None
    if args.retries < 0:
        raise InputError(f"--retries {args.retries}: must be 0 or more")
    if args.backend == "ray" and not args.address:
        raise InputError("--backend ray needs --address (auto, ray://HEAD:10001, or local)")
    glb = GlbOptions(
        up=args.up, front=args.front, height=args.height, origin=args.origin, max_faces=args.max_faces, lods=args.lods
    )
    spec = build_spec(
        args.threestudio,
        args.config,
        args.distribution,
        args.out,
        args.overrides,
        export=args.export,
        export_overrides=args.export_set,
        glb=glb,
        python=args.python,
        resume_interrupted=not args.no_resume,
    )
    if args.export:
        import trimesh  # noqa: F401 - fail now, not after the first training

    if args.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise InputError(f"--backend ray needs Ray: pip install 'ray>=2.9' ({exc})") from exc
    if args.dry_run:
        return dry_run(spec, seeds, gpus)
    if args.gallery_only:
        from dreamdist.batch.gallery import write_gallery
        from dreamdist.batch.manifest import Manifest, check_same_batch

        manifest = Manifest(spec.manifest_path)
        if not manifest.path.is_file():
            raise InputError(f"--out {args.out}: no manifest.jsonl there, so no batch to show; run the batch first")
        check_same_batch(manifest, spec.settings(), manifest.records())
        print(f"gallery: {write_gallery(spec, seeds)}")
        return 0

    def make_backend():
        from dreamdist.batch.backends import LocalBackend, RayBackend

        if args.backend == "ray":
            return RayBackend(spec, args.address, args.ray_gpus_per_task, args.ray_cpus_per_task)
        return LocalBackend(spec, gpus)

    summary = run_batch(spec, seeds, make_backend, retries=args.retries, progress=False if args.no_progress else None)
    print(summary.table())
    sys.stdout.flush()
    return summary.exit_code
