"""STAND-IN for threestudio's launch.py -- tests and benchmarks only. This is NOT threestudio.

`dreamdist batch` drives threestudio's launch.py as a subprocess; threestudio itself (CUDA-only
dependencies, not on the package registries) cannot be installed in CI. This file has the same
command-line shape and writes the same files in the same places, so the batch runner and the mesh
export are tested against the real contract. Mirrored from threestudio v0.2.3 (launch.py,
threestudio/utils/config.py, systems/base.py, utils/saving.py, models/exporters/mesh_exporter.py):

  python launch.py --config X.yaml (--train|--validate|--test|--export) [--gpu 0] key=value ...

  * must run with the threestudio root as working directory (the real one lists ./custom)
  * config: OmegaConf YAML merged with the key=value overrides, threestudio's resolvers registered
  * trial dir: {exp_root_dir}/{name}/{tag}[@timestamp unless use_timestamp=false]
  * --train writes TRIAL/configs/parsed.yaml, TRIAL/ckpts/last.ckpt, TRIAL/cmd.txt, TRIAL/save/
  * --export (resume=TRIAL/ckpts/last.ckpt system.exporter_type=mesh-exporter) writes
    TRIAL/save/it{global_step}-export/model.obj + model.mtl + texture_kd.jpg (fmt obj-mtl, the default)
    or model.obj with vertex colours (system.exporter.fmt=obj), in threestudio's exact OBJ/MTL text
  * CUDA_VISIBLE_DEVICES, if set, wins over --gpu (as in the real one)

Not mirrored: no training happens; the "mesh" is a textured ellipsoid whose size depends on the seed;
last.ckpt is a small JSON file, not a torch checkpoint.

Controls for tests (environment variables):
  STANDIN_LAUNCH_SECONDS         how long --train takes (default 0.2)
  STANDIN_LAUNCH_EXPORT_SECONDS  how long --export takes (default 0.05)
  STANDIN_LAUNCH_FAIL_SEEDS      comma-separated seeds whose --train exits 1
  STANDIN_LAUNCH_FAIL_ONCE_SEEDS seeds whose first --train in a trial dir exits 1, later ones succeed
  STANDIN_LAUNCH_EMPTY_MESH      "1": --export writes an OBJ with no faces
  STANDIN_LAUNCH_LOG             append a JSON line when an invocation starts and one when it succeeds
                                 (event, mode, seed, CUDA_VISIBLE_DEVICES, pid, times)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _register_resolvers() -> None:
    """threestudio/utils/config.py registers these at import time."""
    from omegaconf import OmegaConf

    resolvers = {
        "calc_exp_lr_decay_rate": lambda factor, n: factor ** (1.0 / n),
        "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
        "div": lambda a, b: a / b, "idiv": lambda a, b: a // b,
        "basename": lambda p: os.path.basename(p), "rmspace": lambda s, sub: s.replace(" ", sub),
        "tuple2": lambda s: [float(s), float(s)], "gt0": lambda s: s > 0, "not": lambda s: not s,
    }
    import warnings

    with warnings.catch_warnings():  # omegaconf 2.4 renames it; threestudio pins 2.3
        warnings.simplefilter("ignore")
        for name, fn in resolvers.items():
            if not OmegaConf.has_resolver(name):
                OmegaConf.register_new_resolver(name, fn)


def load_config(path: str, extras: list[str], n_gpus: int):
    """threestudio.utils.config.load_config + ExperimentConfig.__post_init__, reduced."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_cli(extras), {"n_gpus": n_gpus})
    OmegaConf.resolve(cfg)
    defaults = {"name": "default", "tag": "", "seed": 0, "use_timestamp": True, "timestamp": None,
                "exp_root_dir": "outputs", "resume": None}
    for key, value in defaults.items():
        if key not in cfg:
            cfg[key] = value
    if not cfg.tag and not cfg.use_timestamp:
        raise ValueError("Either tag is specified or use_timestamp is True.")
    if cfg.timestamp is None:
        cfg.timestamp = time.strftime("@%Y%m%d-%H%M%S") if cfg.use_timestamp else ""
    cfg.trial_name = cfg.tag + cfg.timestamp
    cfg.exp_dir = os.path.join(cfg.exp_root_dir, cfg.name)
    cfg.trial_dir = os.path.join(cfg.exp_dir, cfg.trial_name)
    os.makedirs(cfg.trial_dir, exist_ok=True)
    return cfg


# ------------------------------------------------------------------------------------------- main


def _seeds(name: str) -> set[int]:
    return {int(s) for s in os.environ.get(name, "").split(",") if s.strip()}


def _sleep(seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    step = 0
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(left, 0.05))
        step += 1
        if step % 10 == 0:
            print(f"[standin] {what} ...", flush=True)


def main(args: argparse.Namespace, extras: list[str]) -> int:
    from omegaconf import OmegaConf

    os.listdir("custom")  # the real launch.py imports ./custom/*: it must run from the threestudio root
    env_gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    gpus = env_gpus or args.gpu.split(",")
    _register_resolvers()
    cfg = load_config(args.config, extras, n_gpus=len(gpus))
    trial = Path(cfg.trial_dir)
    mode = "train" if args.train else "export" if args.export else "validate" if args.validate else "test"
    record = {"mode": mode, "seed": int(cfg.seed), "tag": cfg.tag, "trial_dir": str(trial), "pid": os.getpid(),
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpu_arg": args.gpu,
              "start": time.time()}
    print(f"[standin] {mode} seed={cfg.seed} trial_dir={trial} gpus={gpus}", flush=True)
    log = os.environ.get("STANDIN_LAUNCH_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps({"event": "start", **record}) + "\n")
    dist = OmegaConf.select(cfg, "system.prompt_processor.distribution")
    if dist is not None and not os.path.exists(str(dist)):  # what the dreamdist prompt processor refuses
        print(f"[standin] distribution file not found: {dist}", file=sys.stderr)
        return 1

    if args.train:
        _sleep(float(os.environ.get("STANDIN_LAUNCH_SECONDS", "0.2")), "training")
        marker = trial / ".standin-failed-once"
        if cfg.seed in _seeds("STANDIN_LAUNCH_FAIL_SEEDS") or (
                cfg.seed in _seeds("STANDIN_LAUNCH_FAIL_ONCE_SEEDS") and not marker.exists()):
            marker.touch()
            print("Traceback (most recent call last):\n  ...\nRuntimeError: [standin] CUDA out of memory "
                  "(simulated failure)", file=sys.stderr, flush=True)
            return 1
        (trial / "configs").mkdir(parents=True, exist_ok=True)
        (trial / "ckpts").mkdir(parents=True, exist_ok=True)
        (trial / "save").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, trial / "configs" / "parsed.yaml")
        steps = int(OmegaConf.select(cfg, "trainer.max_steps", default=0) or 0)
        (trial / "ckpts" / "last.ckpt").write_text(json.dumps({"epoch": 0, "global_step": steps,
                                                                "standin": True}))
        (trial / "cmd.txt").write_text("python " + " ".join(sys.argv) + "\n" + str(args) + "\n")
    elif args.export:
        if cfg.resume is None or not os.path.exists(cfg.resume):
            print(f"[standin] FileNotFoundError: checkpoint {cfg.resume}", file=sys.stderr)
            return 1
        exporter = OmegaConf.select(cfg, "system.exporter_type", default="mesh-exporter")
        if exporter != "mesh-exporter":
            print(f"[standin] exporter {exporter} writes no mesh", file=sys.stderr)
            return 1
        step = json.loads(Path(cfg.resume).read_text())["global_step"]
        _sleep(float(os.environ.get("STANDIN_LAUNCH_EXPORT_SECONDS", "0.05")), "exporting")
        # mesh_exporter.py sits next to this file; tests that copy launch.py alone into a fake threestudio
        # root find it in the checkout the (editable) dreamdist install comes from
        folder = Path(__file__).resolve().parent
        if not (folder / "mesh_exporter.py").is_file():
            import dreamdist

            folder = Path(dreamdist.__file__).resolve().parents[2] / "tests" / "standin_threestudio_launch"
        sys.path.insert(0, str(folder))
        from mesh_exporter import write_mesh_export

        # mesh-exporter's Config defaults (threestudio v0.2.3); texture_size stays the stand-in's small one
        settings = {key: OmegaConf.select(cfg, f"system.exporter.{key}", default=default) for key, default in
                    (("fmt", "obj-mtl"), ("save_name", "model"), ("save_normal", False), ("save_uv", True),
                     ("save_texture", True), ("texture_format", "jpg"))}
        out = write_mesh_export(trial / "save" / f"it{step}-export", seed=int(cfg.seed), **settings,
                                empty=os.environ.get("STANDIN_LAUNCH_EMPTY_MESH") == "1")
        print(f"[standin] Export assets saved to {out.parent}", flush=True)
    if log:
        record["end"] = time.time()
        with open(log, "a") as fh:
            fh.write(json.dumps({"event": "end", **record}) + "\n")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="path to config file")
    parser.add_argument("--gpu", default="0", help="GPU(s) to be used")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--train", action="store_true")
    group.add_argument("--validate", action="store_true")
    group.add_argument("--test", action="store_true")
    group.add_argument("--export", action="store_true")
    parser.add_argument("--gradio", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--typecheck", action="store_true")
    args, extras = parser.parse_known_args()
    sys.exit(main(args, extras))
