"""One seed = one job: the exact threestudio command lines, and running them (train, export, GLB).

The trial directory is made deterministic (tag "<distribution>-seed<S>", use_timestamp=false,
exp_root_dir under --out), so the runner knows where every seed's files are without parsing logs,
and a restarted seed reuses its folder instead of leaving timestamped debris.

launch.py runs with the threestudio root as working directory (it imports ./custom/*), so every
path we hand it is absolute.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from dreamdist.batch.process import elapsed, run_logged, shell_line
from dreamdist.errors import DreamdistError, InputError

# keys the runner sets itself; a user override of one would break resume or the trial layout
RESERVED = {
    "seed": "--seeds",
    "tag": "(set per seed by dreamdist batch)",
    "use_timestamp": "(always false: trial folders must be deterministic)",
    "exp_root_dir": "--out",
    "resume": "(set for the export step)",
    "system.prompt_processor.distribution": "--distribution",
}
DIST_KEY = "system.prompt_processor.distribution"


@dataclasses.dataclass(frozen=True)
class GlbOptions:
    up: str = "+Z"
    front: str | None = None
    height: float | None = None
    origin: str = "bottom-center"
    max_faces: int | None = None
    lods: int = 1


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """Everything that turns a seed into commands; plain data, so Ray can ship it to workers."""

    threestudio: Path
    config: Path
    distributions: tuple[Path, ...]
    out: Path
    name: str
    overrides: tuple[str, ...] = ()
    export: bool = False
    export_overrides: tuple[str, ...] = ()
    glb: GlbOptions = GlbOptions()
    python: str = sys.executable

    # ---- layout
    @property
    def exp_root(self) -> Path:
        return self.out / "threestudio"

    @property
    def manifest_path(self) -> Path:
        return self.out / "manifest.jsonl"

    def tag(self, seed: int) -> str:
        """Same shape as the dreamdist configs' own tag: "<dist stem>[+<stem>...]-seed<S>"."""
        stems = []
        for p in self.distributions:
            stem = p.name
            for suffix in (".safetensors", ".pt"):
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
            stems.append(stem.replace(" ", "_"))
        return f"{'+'.join(stems)}-seed{seed}"

    def trial_dir(self, seed: int) -> Path:
        return self.exp_root / self.name / self.tag(seed)

    def glb_path(self, seed: int) -> Path:
        return self.out / "glb" / f"{self.tag(seed)}.glb"

    def log_path(self, seed: int, attempt: int) -> Path:
        return self.out / "logs" / f"seed{seed}-try{attempt}.log"

    # ---- commands
    def _dist_value(self) -> str:
        if len(self.distributions) == 1:
            return str(self.distributions[0])
        return "[" + ",".join(str(p) for p in self.distributions) + "]"

    def train_command(self, seed: int) -> list[str]:
        return [self.python, "launch.py", "--config", str(self.config), "--train", "--gpu", "0",
                f"{DIST_KEY}={self._dist_value()}", f"seed={seed}", f"tag={self.tag(seed)}",
                "use_timestamp=false", f"exp_root_dir={self.exp_root}", *self.overrides]

    def export_command(self, seed: int) -> list[str]:
        trial = self.trial_dir(seed)
        return [self.python, "launch.py", "--config", str(trial / "configs" / "parsed.yaml"), "--export",
                "--gpu", "0", f"resume={trial / 'ckpts' / 'last.ckpt'}", "system.exporter_type=mesh-exporter",
                *self.export_overrides]

    def glb_command(self, seed: int, obj: str | Path | None = None) -> list[str]:
        """The equivalent `dreamdist export-mesh` line (the job runs it in-process)."""
        obj = obj or self.trial_dir(seed) / "save" / "it<N>-export" / "model.obj"
        g = self.glb
        cmd = ["dreamdist", "export-mesh", str(obj), str(self.glb_path(seed)), "--up", g.up, "--origin", g.origin,
               "--force"]
        if g.front:
            cmd += ["--front", g.front]
        if g.height is not None:
            cmd += ["--height", str(g.height)]
        if g.max_faces is not None:
            cmd += ["--max-faces", str(g.max_faces)]
        if g.lods != 1:
            cmd += ["--lods", str(g.lods)]
        return cmd

    def settings(self) -> dict[str, Any]:
        """What defines the assets: a re-run in the same --out must match these to resume."""
        return {"config": str(self.config), "distributions": [str(p) for p in self.distributions],
                "overrides": list(self.overrides), "name": self.name}


# ----------------------------------------------------------------------------------- validation


def _resolve_config(config: str, threestudio: Path) -> Path:
    for candidate in (Path(config), threestudio / config):
        if candidate.is_file():
            return candidate.resolve()
    raise InputError(f"--config {config}: no such file (looked in the current folder and in {threestudio}); "
                     "pass e.g. configs/dreamdist-mvdream.yaml from the dreamdist repo")


def _experiment_name(config: Path, overrides: Sequence[str]) -> str:
    """threestudio's `name`, with overrides applied: the trial folder is exp_root_dir/name/tag."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.merge(OmegaConf.load(config), OmegaConf.from_dotlist(list(overrides)))
    except Exception as exc:  # noqa: BLE001 - YAML or override syntax errors: one clear line
        raise InputError(f"--config {config}: cannot be read with the given overrides ({exc})") from exc
    if not OmegaConf.is_dict(cfg):
        raise InputError(f"--config {config}: not a threestudio config (expected a YAML mapping)")
    try:
        name = OmegaConf.select(cfg, "name", default="default")
    except Exception as exc:  # noqa: BLE001 - e.g. an interpolation we cannot resolve outside threestudio
        raise InputError(f"--config {config}: cannot resolve its `name` ({exc}); pass name=... as an override") from exc
    if "system" not in cfg:
        raise InputError(f"--config {config}: has no `system` section; is it a threestudio config?")
    return str(name)


def check_overrides(overrides: Sequence[str], what: str = "override") -> tuple[str, ...]:
    for item in overrides:
        key, eq, _ = item.partition("=")
        key = key.strip().lstrip("+~")
        if not eq or not key:
            raise InputError(f"{what} {item!r} is not KEY=VALUE (e.g. trainer.max_steps=5000)")
        if what == "override" and key in RESERVED:
            raise InputError(f"{what} {item!r}: {key} is set by dreamdist batch; use {RESERVED[key]}")
    return tuple(overrides)


def build_spec(threestudio: str | Path, config: str, distributions: Sequence[str | Path], out: str | Path,
               overrides: Sequence[str] = (), export: bool = False, export_overrides: Sequence[str] = (),
               glb: GlbOptions = GlbOptions(), python: str | None = None) -> BatchSpec:
    """Check every input before any job starts; raise InputError naming the problem and the fix."""
    root = Path(threestudio).expanduser()
    if not root.is_dir():
        raise InputError(f"--threestudio {threestudio}: no such folder; point it at a threestudio checkout")
    if not (root / "launch.py").is_file():
        raise InputError(f"--threestudio {threestudio}: no launch.py there; point it at the threestudio "
                         "checkout's root folder (the one holding launch.py and custom/)")
    root = root.resolve()
    overrides = check_overrides(overrides)
    export_overrides = check_overrides(export_overrides, "--export-set")
    cfg = _resolve_config(config, root)
    name = _experiment_name(cfg, overrides)
    if not distributions:
        raise InputError("--distribution is required (a .safetensors file from `dreamdist train`)")
    dists = []
    for d in distributions:
        p = Path(d).expanduser()
        if not p.is_file():
            raise InputError(f"--distribution {d}: no such file; train one with `dreamdist train`")
        dists.append(p.resolve())
    out_path = Path(out).expanduser()
    if out_path.exists() and not out_path.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    py = python or sys.executable
    if not (Path(py).is_file() if os.sep in py else shutil.which(py)):
        raise InputError(f"--python {py}: no such program (the Python of threestudio's environment)")
    if glb.lods < 1 or (glb.max_faces is not None and glb.max_faces < 4):
        raise InputError("--lods must be >= 1 and --max-faces >= 4")
    if glb.height is not None and not glb.height > 0:
        raise InputError(f"--height {glb.height}: must be a positive number of metres")
    from dreamdist.mesh_export import axis_transform

    axis_transform(glb.up, glb.front)  # refuses a bad --up / --front now, not after hours of training
    return BatchSpec(threestudio=root, config=cfg, distributions=tuple(dists), out=out_path.resolve(), name=name,
                     overrides=overrides, export=export, export_overrides=export_overrides, glb=glb, python=py)


# ----------------------------------------------------------------------------------------- run


@dataclasses.dataclass
class JobResult:
    seed: int
    attempt: int
    status: str  # done | failed | interrupted
    wall_s: float
    trial_dir: str
    log: str
    gpu: str | None = None
    exit_code: int | None = None
    glb: str | None = None
    stage: str | None = None  # the stage that failed or was interrupted: train | export | glb
    trained: bool = False  # ckpts/last.ckpt was written by a successful train stage
    error: str | None = None

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_job(spec: BatchSpec, seed: int, attempt: int, gpu: str | None, skip_train: bool = False,
            stop_event: threading.Event | None = None) -> JobResult:
    """Train one seed, then (with --export) export its mesh and convert it to GLB.

    gpu: the CUDA_VISIBLE_DEVICES value for the job (None: leave the environment's, e.g. Ray's).
    skip_train: the seed's training already succeeded (a previous attempt failed later): export only.
    """
    start = time.monotonic()
    trial = spec.trial_dir(seed)
    log_path = spec.log_path(seed, attempt)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {}
    result = JobResult(seed=seed, attempt=attempt, status="failed", wall_s=0.0, trial_dir=str(trial),
                       log=str(log_path), gpu=gpu)

    def finish(status: str, stage: str | None = None, code: int | None = None, error: str | None = None) -> JobResult:
        result.status, result.stage, result.exit_code, result.error = status, stage, code, error
        result.wall_s = elapsed(start)
        with open(log_path, "ab") as fh:
            fh.write(f"\n[dreamdist batch] seed {seed} attempt {attempt}: {status}"
                     f"{' at ' + stage if stage else ''}{': ' + error if error else ''} "
                     f"({result.wall_s:.1f} s)\n".encode())
        return result

    outcome: tuple[str, str, int | None, str | None] | None = None
    with open(log_path, "ab") as log:
        log.write(f"[dreamdist batch] seed {seed} attempt {attempt} gpu {gpu} host {os.uname().nodename}\n".encode())
        stages: list[tuple[str, list[str]]] = []
        if skip_train and (trial / "ckpts" / "last.ckpt").is_file():
            log.write(b"[dreamdist batch] training already finished in an earlier attempt: export only\n")
            result.trained = True
        else:
            stages.append(("train", spec.train_command(seed)))
        if spec.export:
            stages.append(("export", spec.export_command(seed)))
        for stage, cmd in stages:
            code = run_logged(cmd, log, spec.threestudio, env, stop_event)
            if code is None:
                outcome = ("interrupted", stage, None, None)
            elif code != 0:
                outcome = ("failed", stage, code, f"launch.py --{stage} exited with {code}")
            elif stage == "train":
                missing = [p for p in ("configs/parsed.yaml", "ckpts/last.ckpt") if not (trial / p).is_file()]
                if missing:
                    outcome = ("failed", stage, code, f"launch.py --train exited 0 but left no "
                               f"{', '.join(missing)} in {trial} (is checkpoint.save_last true?)")
                else:
                    result.trained = True
            if outcome is not None:
                break
    if outcome is not None:
        return finish(*outcome)
    result.exit_code = 0
    if spec.export:
        if stop_event is not None and stop_event.is_set():
            return finish("interrupted", "glb")
        from dreamdist.mesh_export import export_mesh, find_threestudio_export

        obj = find_threestudio_export(trial)
        if obj is None:
            return finish("failed", "glb", 0, f"launch.py --export wrote no {trial}/save/it*-export/*.obj")
        g = spec.glb
        with open(log_path, "ab") as log:
            log.write(f"\n$ {shell_line(spec.glb_command(seed, obj))}\n".encode())
        try:
            report = export_mesh(obj, spec.glb_path(seed), up=g.up, front=g.front, height=g.height,
                                 origin=g.origin, max_faces=g.max_faces, lods=g.lods, force=True)
        except DreamdistError as exc:
            return finish("failed", "glb", None, str(exc))
        except Exception as exc:  # noqa: BLE001 - recorded in the manifest; the batch goes on
            return finish("failed", "glb", None, f"{type(exc).__name__}: {exc}")
        with open(log_path, "ab") as log:
            log.write((report.format() + "\n" + json.dumps(report.to_dict()) + "\n").encode())
        result.glb = report.path
    return finish("done", code=0)
