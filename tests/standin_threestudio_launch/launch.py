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
  * --train (trainer.fit, then trainer.test) writes TRIAL/cmd.txt, TRIAL/configs/parsed.yaml (at fit
    start), checkpoints in TRIAL/ckpts/ named as Lightning's ModelCheckpoint(dirpath=TRIAL/ckpts,
    **cfg.checkpoint) names them (see ModelCheckpoint below: next to a stale last.ckpt it writes
    last-v1.ckpt), then the test renders (below); with resume=CKPT it goes on from CKPT's step
  * test renders, by trainer.test after --train and by --test (resume=CKPT: tests at CKPT's step, as
    set_system_status does): the system's test_step saves one image per test view with save_image_grid,
    TRIAL/save/it{step}-test/{index}.png for index 0..data.n_test_views-1 (default 120): a row of panels
    comp_rgb | comp_normal | opacity, each eval_height x eval_width; view 0 is azimuth 0 (threestudio's
    front view) at eval_elevation_deg, the views go round 360 degrees. on_test_epoch_end then writes the
    turntable TRIAL/save/it{step}-test.mp4 with save_img_sequence (imageio.mimsave, fps=30: imageio-ffmpeg's
    H.264 mp4); no gif (save_format="mp4" in dreamfusion-system and threestudio-mvdream's mvdream-system)
  * SIGTERM is handled as Lightning's _SignalConnector does: it only sets a flag; training and testing
    stop at the next step and exit 0, --export (trainer.predict) never reads it and runs to its end
  * --export (resume=TRIAL/ckpts/last.ckpt system.exporter_type=mesh-exporter) writes
    TRIAL/save/it{global_step}-export/model.obj + model.mtl + texture_kd.jpg (fmt obj-mtl, the default)
    or model.obj with vertex colours (system.exporter.fmt=obj), in threestudio's exact OBJ/MTL text
  * CUDA_VISIBLE_DEVICES, if set, wins over --gpu (as in the real one)

Not mirrored: no training happens; the "mesh" is a textured ellipsoid whose size depends on the seed;
checkpoints are small zip archives holding JSON (torch.save's format is a zip archive too), not
torch checkpoints. Test renders are 64 x 64 panels of that ellipsoid drawn with numpy and written as PNG
with zlib (real: eval_height x eval_width renders written by cv2); the mp4 is written only when imageio
and imageio-ffmpeg are importable (threestudio requires imageio[ffmpeg]; the test environment need not).

Controls for tests (environment variables):
  STANDIN_LAUNCH_SECONDS         how long --train takes for all trainer.max_steps (default 0.2)
  STANDIN_LAUNCH_TEST_SECONDS    how long trainer.test (after --train, or --test) takes (default 0.05)
  STANDIN_LAUNCH_WORKER          "1": --train/--export start a worker process (like a DataLoader
                                 worker) in launch.py's process group; its pid is logged as worker_pid
  STANDIN_LAUNCH_EXPORT_SECONDS  how long --export takes (default 0.05)
  STANDIN_LAUNCH_FAIL_SEEDS      comma-separated seeds whose --train exits 1
  STANDIN_LAUNCH_FAIL_ONCE_SEEDS seeds whose first --train (per tag) exits 1, later ones succeed
  STANDIN_LAUNCH_EMPTY_MESH      "1": --export writes an OBJ with no faces
  STANDIN_LAUNCH_LOG             append a JSON line when an invocation starts and one when it succeeds
                                 (event, mode, seed, CUDA_VISIBLE_DEVICES, pid, times)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path


def _register_resolvers() -> None:
    """threestudio/utils/config.py registers these at import time."""
    from omegaconf import OmegaConf

    resolvers = {
        "calc_exp_lr_decay_rate": lambda factor, n: factor ** (1.0 / n),
        "add": lambda a, b: a + b,
        "sub": lambda a, b: a - b,
        "mul": lambda a, b: a * b,
        "div": lambda a, b: a / b,
        "idiv": lambda a, b: a // b,
        "basename": lambda p: os.path.basename(p),
        "rmspace": lambda s, sub: s.replace(" ", sub),
        "tuple2": lambda s: [float(s), float(s)],
        "gt0": lambda s: s > 0,
        "not": lambda s: not s,
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
    defaults = {
        "name": "default",
        "tag": "",
        "seed": 0,
        "use_timestamp": True,
        "timestamp": None,
        "exp_root_dir": "outputs",
        "resume": None,
    }
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


# ------------------------------------------------------------------ Lightning, as threestudio uses it

_SIGTERM = {"received": False}


def _connect_sigterm() -> None:
    """lightning.pytorch.trainer.connectors.signal_connector._SignalConnector (read in 2.0.0 and 2.6.0),
    registered by every trainer.fit/test/predict: on SIGTERM it logs and sets `received_sigterm`,
    nothing else. The fit and evaluation loops then raise SIGTERMException, a SystemExit without a
    code (exit status 0); the prediction loop (launch.py --export) never looks at the flag."""

    def notify(signum, frame):  # noqa: ARG001
        print(f"[standin] Received SIGTERM: {signum}", flush=True)
        _SIGTERM["received"] = True

    signal.signal(signal.SIGTERM, notify)


def _check_sigterm() -> None:
    if _SIGTERM["received"]:
        raise SystemExit  # SIGTERMException


def save_checkpoint(path: str, state: dict) -> None:
    """Lightning writes torch.save's bytes into the file in place (not atomically); torch.save's
    format is a zip archive."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.json", json.dumps(state))
    with open(path, "wb") as fh:
        fh.write(buf.getvalue())


def load_checkpoint(path: str) -> dict:
    """torch.load: a torn or foreign file raises."""
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("archive/data.json"))


class ModelCheckpoint:
    """The file naming of lightning.pytorch.callbacks.ModelCheckpoint (read in 2.0.0 and 2.6.0; the
    version counter for last.ckpt exists since 1.7), which threestudio's launch.py builds as
    ModelCheckpoint(dirpath=TRIAL/ckpts, **cfg.checkpoint):
      * no monitor: one "epoch={E}-step={S}.ckpt" per save (default filename "{epoch}-{step}", metric
        names inserted with "="), the previous one removed if save_top_k == 1; and last.ckpt if save_last;
      * a file that exists and is not this callback's own previous one is never overwritten: "-v1",
        "-v2", ... is appended (STARTING_VERSION 1), e.g. last-v1.ckpt next to a stale last.ckpt
        (_get_metric_interpolated_filepath_name, _save_last_checkpoint);
      * trainer.fit(ckpt_path=...) restores last_model_path when the checkpoint holds a state under this
        callback's state_key (its trigger settings) and the same dirpath (load_state_dict), so a run
        resumed with the same settings overwrites its own last.ckpt; other settings give last-v1.ckpt;
      * saves every every_n_train_steps steps; with no trigger set, once per epoch (here: at the end);
      * Lightning 2.0-2.5 also write last.ckpt at every validation (threestudio: every
        trainer.val_check_interval steps), so an interrupted training leaves a recent last.ckpt; 2.6 does
        not (PR #21244). STANDIN_LIGHTNING_LAST_AT_VALIDATION=0 gives 2.6's behaviour.
    """

    def __init__(
        self,
        dirpath: str | Path,
        save_last: bool | None = None,
        save_top_k: int = 1,
        every_n_train_steps: int | None = None,
        **_,
    ) -> None:
        self.dirpath = os.path.realpath(dirpath)
        self.save_last, self.save_top_k = save_last, save_top_k
        self.every_n_train_steps = every_n_train_steps or 0
        self.last_model_path = self.best_model_path = ""
        self.last_global_step_saved = -1

    @property
    def state_key(self) -> str:
        """Callback._generate_state_key(monitor, mode, every_n_train_steps, every_n_epochs, ...)."""
        every_n_epochs = 0 if self.every_n_train_steps else 1
        return "ModelCheckpoint" + repr(
            {
                "monitor": None,
                "mode": "min",
                "every_n_train_steps": self.every_n_train_steps,
                "every_n_epochs": every_n_epochs,
                "train_time_interval": None,
            }
        )

    def state_dict(self) -> dict:
        return {
            "dirpath": self.dirpath,
            "last_model_path": self.last_model_path,
            "best_model_path": self.best_model_path,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("dirpath", self.dirpath) == self.dirpath:
            self.last_model_path = state.get("last_model_path", self.last_model_path)
        self.best_model_path = state["best_model_path"]

    def _versioned(self, name: str, own: str) -> str:
        path, ver = os.path.join(self.dirpath, name + ".ckpt"), 1
        while os.path.exists(path) and path != own:
            path, ver = os.path.join(self.dirpath, f"{name}-v{ver}.ckpt"), ver + 1
        return path

    def save(self, epoch: int, step: int, write, last_only: bool = False) -> list[str]:
        """Save the top-k and last files; `write(path)` writes one (the state includes ours)."""
        if step == self.last_global_step_saved:  # _should_skip_saving_checkpoint
            return []
        self.last_global_step_saved = step
        os.makedirs(self.dirpath, exist_ok=True)
        written = []
        if self.save_top_k != 0 and not last_only:
            path = self._versioned(f"epoch={epoch}-step={step}", "")
            previous, self.best_model_path = self.best_model_path, path
            write(path)
            written.append(path)
            if self.save_top_k == 1 and previous and previous != path and os.path.exists(previous):
                os.remove(previous)
        if self.save_last:
            path = self._versioned("last", self.last_model_path)
            previous, self.last_model_path = self.last_model_path, path
            write(path)
            written.append(path)
            if previous and previous != path and os.path.exists(previous):
                os.remove(previous)
        return written


_WORKER: list[subprocess.Popen] = []


def _start_worker() -> int | None:
    """A child like a DataLoader worker: it dies with launch.py's process group, not with launch.py."""
    if os.environ.get("STANDIN_LAUNCH_WORKER") != "1":
        return None
    _WORKER.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]))
    return _WORKER[-1].pid


def _train(cfg, trial: Path, run: dict, record: dict) -> int:
    """trainer.fit(system, ckpt_path=cfg.resume) then trainer.test(system), as launch.py --train does."""
    from omegaconf import OmegaConf

    checkpoint_cfg = OmegaConf.to_container(cfg.checkpoint) if "checkpoint" in cfg else {}
    callback = ModelCheckpoint(trial / "ckpts", **(checkpoint_cfg or {}))
    step = 0
    if cfg.resume is not None:  # restores the step and the callback state
        resumed = load_checkpoint(cfg.resume)
        step = int(resumed["global_step"])
        if callback.state_key in resumed["callbacks"]:
            callback.load_state_dict(resumed["callbacks"][callback.state_key])
    _connect_sigterm()
    (trial / "cmd.txt").write_text("python " + " ".join(sys.argv) + "\n" + str(run["args"]) + "\n")
    (trial / "configs").mkdir(parents=True, exist_ok=True)  # ConfigSnapshotCallback.on_fit_start
    OmegaConf.save(cfg, trial / "configs" / "parsed.yaml")
    (trial / "save").mkdir(parents=True, exist_ok=True)
    max_steps = int(OmegaConf.select(cfg, "trainer.max_steps", default=0) or 1)
    marker = Path(cfg.exp_root_dir) / f".standin-failed-once-{cfg.tag}"
    fail = cfg.seed in _seeds("STANDIN_LAUNCH_FAIL_SEEDS") or (
        cfg.seed in _seeds("STANDIN_LAUNCH_FAIL_ONCE_SEEDS") and not marker.exists()
    )
    written: list[str] = []
    record["checkpoints"] = written

    def save(at: int, last_only: bool = False) -> None:
        state = {"epoch": 0, "global_step": at, "run": {"pid": run["pid"], "start": run["start"]}}
        written.extend(
            callback.save(
                0,
                at,
                lambda p: save_checkpoint(p, {**state, "callbacks": {callback.state_key: callback.state_dict()}}),
                last_only,
            )
        )

    val_every = OmegaConf.select(cfg, "trainer.val_check_interval", default=None)
    if not isinstance(val_every, int) or os.environ.get("STANDIN_LIGHTNING_LAST_AT_VALIDATION") == "0":
        val_every = 0

    per_step = float(os.environ.get("STANDIN_LAUNCH_SECONDS", "0.2")) / max_steps
    first, t0, ticks = step, time.monotonic(), 0
    while step < max_steps:
        time.sleep(min(0.02, max(0.0, t0 + per_step * (max_steps - first) - time.monotonic())))
        ticks += 1
        if ticks % 10 == 0:
            print(f"[standin] training step {step}/{max_steps} ...", flush=True)
        _check_sigterm()
        new = min(max_steps, first + int((time.monotonic() - t0) / per_step) if per_step > 0 else max_steps)
        if fail and new >= max_steps // 2:
            marker.touch()
            print(
                "Traceback (most recent call last):\n  ...\nRuntimeError: [standin] CUDA out of memory "
                "(simulated failure)",
                file=sys.stderr,
                flush=True,
            )
            return 1
        n = callback.every_n_train_steps
        events = [(k * n, False) for k in range(step // n + 1, new // n + 1)] if n else []
        if val_every and callback.save_last:  # on_validation_end, after that step's on_train_batch_end
            events += [(k * val_every, True) for k in range(step // val_every + 1, new // val_every + 1)]
        for at, last_only in sorted(events):
            save(at, last_only)
        step = new
    if not callback.every_n_train_steps and step > first:
        save(step)
    record["global_step"] = step
    _test(cfg, trial, step)
    return 0


# ------------------------------------------------------------------------ trainer.test: test renders


def write_png(path: Path, rgb) -> None:
    """An 8-bit RGB PNG (what cv2.imwrite writes for threestudio's image grids), with zlib only."""
    import numpy as np

    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def render_test_views(seed: int, n: int, size: int = 64):
    """The n test views (uint8, n x size x 3*size x 3), each as test_step's image grid: comp_rgb |
    comp_normal | opacity side by side. Azimuths linspace(0, 360, n) as RandomCameraDataset("test"),
    of mesh_exporter.py's ellipsoid (Z up, seen from the side) in its four-colour quadrant albedo."""
    import numpy as np

    radii = np.array([0.3, 0.4, 0.6]) * (1 + 0.1 * (seed % 5))
    az = np.radians(np.linspace(0.0, 360.0, n))[:, None, None]
    half_w = np.hypot(radii[0] * np.sin(az), radii[1] * np.cos(az))  # in half-frame units
    y, x = np.mgrid[0:size, 0:size] + 0.5
    u, v = (x / size * 2 - 1) / half_w, np.broadcast_to((1 - y / size * 2) / radii[2], (n, size, size))
    inside = u * u + v * v < 1
    w = np.sqrt(np.clip(1 - u * u - v * v, 0, 1))  # towards the camera
    longitude = az + np.arcsin(np.clip(u / np.sqrt(np.clip(1 - v * v, 1e-6, 1)), -1, 1))
    quadrant = np.floor(longitude / (np.pi / 2)).astype(int) % 4
    colours = np.roll(np.array([[220, 70, 60], [240, 190, 50], [60, 160, 90], [60, 110, 220]], float), seed % 4, 0)
    rgb = np.where(inside[..., None], colours[quadrant] * (0.35 + 0.65 * w[..., None]), 235.0)
    normal = np.where(inside[..., None], (np.stack([u, v, w], -1) * 0.5 + 0.5) * 255, 0.0)
    opacity = np.repeat(inside[..., None] * 255.0, 3, axis=-1)
    return np.concatenate([rgb, normal, opacity], axis=2).round().astype(np.uint8)


def write_turntable(path: Path, frames: list, fps: int = 30) -> bool:
    """save_img_sequence(save_format="mp4", fps=30): imageio.mimsave with imageio-ffmpeg; skipped
    (False) where those are not installed."""
    try:
        import imageio
        import imageio_ffmpeg  # noqa: F401 - imageio's mp4 writer
    except ImportError:
        print("[standin] imageio[ffmpeg] not installed: no test video", flush=True)
        return False
    imageio.mimsave(path, frames, fps=fps)
    return True


def _test(cfg, trial: Path, step: int) -> None:
    """trainer.test: test_step saves it{step}-test/{index}.png per test view, on_test_epoch_end the mp4."""
    from omegaconf import OmegaConf

    _SIGTERM["received"] = False  # trainer.test registers the handler afresh
    _connect_sigterm()
    save = trial / "save"
    test_dir = save / f"it{step}-test"
    test_dir.mkdir(parents=True, exist_ok=True)
    n = int(OmegaConf.select(cfg, "data.n_test_views", default=120) or 120)
    seconds = float(os.environ.get("STANDIN_LAUNCH_TEST_SECONDS", "0.05"))
    t0, frames = time.monotonic(), render_test_views(int(cfg.seed), n)
    for index in range(n):  # one test_step per view
        write_png(test_dir / f"{index}.png", frames[index])
        until = t0 + seconds * (index + 1) / n
        while (left := until - time.monotonic()) > 0:
            time.sleep(min(0.02, left))
            if index < n - 1:  # the evaluation loop does not stop before its last batch
                _check_sigterm()
    write_turntable(save / f"it{step}-test.mp4", list(frames), fps=30)
    print(f"[standin] Test results saved to {save}", flush=True)


def main(args: argparse.Namespace, extras: list[str]) -> int:
    from omegaconf import OmegaConf

    os.listdir("custom")  # the real launch.py imports ./custom/*: it must run from the threestudio root
    env_gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    gpus = env_gpus or args.gpu.split(",")
    _register_resolvers()
    cfg = load_config(args.config, extras, n_gpus=len(gpus))
    trial = Path(cfg.trial_dir)
    mode = "train" if args.train else "export" if args.export else "validate" if args.validate else "test"
    record = {
        "mode": mode,
        "seed": int(cfg.seed),
        "tag": cfg.tag,
        "trial_dir": str(trial),
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu_arg": args.gpu,
        "start": time.time(),
        "resume": cfg.resume,
    }
    if args.train or args.export:
        record["worker_pid"] = _start_worker()
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
        code = _train(cfg, trial, {"pid": record["pid"], "start": record["start"], "args": args}, record)
        if code:
            return code
    elif args.test:  # set_system_status(resume), then trainer.test(ckpt_path=resume)
        if cfg.resume is not None and not os.path.exists(cfg.resume):
            print(f"[standin] FileNotFoundError: checkpoint {cfg.resume}", file=sys.stderr)
            return 1
        _test(cfg, trial, int(load_checkpoint(cfg.resume)["global_step"]) if cfg.resume else 0)
    elif args.export:
        if cfg.resume is None or not os.path.exists(cfg.resume):
            print(f"[standin] FileNotFoundError: checkpoint {cfg.resume}", file=sys.stderr)
            return 1
        exporter = OmegaConf.select(cfg, "system.exporter_type", default="mesh-exporter")
        if exporter != "mesh-exporter":
            print(f"[standin] exporter {exporter} writes no mesh", file=sys.stderr)
            return 1
        state = load_checkpoint(cfg.resume)
        step = state["global_step"]
        record["checkpoint_run"] = state.get("run")  # which --train invocation wrote it
        _connect_sigterm()  # trainer.predict: the flag is never read, the export runs to its end
        _sleep(float(os.environ.get("STANDIN_LAUNCH_EXPORT_SECONDS", "0.05")), "exporting")
        from mesh_exporter import write_mesh_export  # beside this file: sys.path[0] is the script's folder

        # mesh-exporter's Config defaults (threestudio v0.2.3); texture_size stays the stand-in's small one
        settings = {
            key: OmegaConf.select(cfg, f"system.exporter.{key}", default=default)
            for key, default in (
                ("fmt", "obj-mtl"),
                ("save_name", "model"),
                ("save_normal", False),
                ("save_uv", True),
                ("save_texture", True),
                ("texture_format", "jpg"),
            )
        }
        out = write_mesh_export(
            trial / "save" / f"it{step}-export",
            seed=int(cfg.seed),
            **settings,
            empty=os.environ.get("STANDIN_LAUNCH_EMPTY_MESH") == "1",
        )
        print(f"[standin] Export assets saved to {out.parent}", flush=True)
    for worker in _WORKER:  # a finished launch.py shuts its workers down
        worker.terminate()
        worker.wait()
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
