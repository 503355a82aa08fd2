"""One seed = one job: the exact threestudio command lines, and running them (train, export, GLB).

The trial directory is made deterministic (tag "<distribution>-seed<S>", use_timestamp=false,
exp_root_dir under --out), so the runner knows where every seed's files are without parsing logs,
and a restarted seed reuses its folder instead of leaving timestamped debris. Which checkpoint an
attempt produced is read from that folder after training (see attempts.py), never guessed: a
retried seed either resumes the interrupted attempt on purpose or starts from an empty folder.

launch.py runs with the threestudio root as working directory (it imports ./custom/*), so every
path we hand it is absolute.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from dreamdist.batch import attempts
from dreamdist.batch.process import GRACE_S, elapsed, run_logged, shell_line
from dreamdist.utils.errors import DreamdistError, InputError
from dreamdist.utils.tags import distribution_tag

LOCK_WAIT_S = 30.0  # a killed job tree releases the seed lock within milliseconds; longer means a live runner

# keys the runner sets itself; a user override of one would break resume or the trial layout
RESERVED = {
    "seed": "--seeds",
    "tag": "(set per seed by dreamdist batch)",
    "use_timestamp": "(always false: trial folders must be deterministic)",
    "exp_root_dir": "--out",
    "resume": "(set by dreamdist batch: resumes an interrupted attempt, and picks the checkpoint to export)",
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
    resume_interrupted: bool = True  # False: an interrupted seed restarts from an empty trial folder

    # ---- layout
    @property
    def exp_root(self) -> Path:
        return self.out / "threestudio"

    @property
    def manifest_path(self) -> Path:
        return self.out / "manifest.jsonl"

    def tag(self, seed: int) -> str:
        """The dreamdist configs' own tag: "<dist stem>[+<stem>...]-seed<S>"."""
        return f"{distribution_tag(self.distributions)}-seed{seed}"

    def trial_dir(self, seed: int) -> Path:
        return self.exp_root / self.name / self.tag(seed)

    def glb_path(self, seed: int) -> Path:
        return self.out / "glb" / f"{self.tag(seed)}.glb"

    def log_path(self, seed: int, attempt: int) -> Path:
        return self.out / "logs" / f"seed{seed}-try{attempt}.log"

    def state_path(self, seed: int) -> Path:
        return self.out / "seeds" / f"{self.tag(seed)}.json"

    def lock_path(self, seed: int) -> Path:
        return self.out / "seeds" / f"{self.tag(seed)}.lock"

    # ---- commands
    def _dist_value(self) -> str:
        if len(self.distributions) == 1:
            return str(self.distributions[0])
        return "[" + ",".join(str(p) for p in self.distributions) + "]"

    def train_command(self, seed: int, resume: str | Path | None = None) -> list[str]:
        """resume: a checkpoint of an interrupted attempt (threestudio's `resume=`: Lightning restores
        the step, optimizer and its last.ckpt name from it)."""
        return [
            self.python,
            "launch.py",
            "--config",
            str(self.config),
            "--train",
            "--gpu",
            "0",
            f"{DIST_KEY}={self._dist_value()}",
            f"seed={seed}",
            f"tag={self.tag(seed)}",
            "use_timestamp=false",
            f"exp_root_dir={self.exp_root}",
            *self.overrides,
            *([f"resume={resume}"] if resume else []),
        ]

    def export_command(self, seed: int, checkpoint: str | Path | None = None) -> list[str]:
        """checkpoint: the one this seed's training wrote (None: a placeholder, for --dry-run)."""
        trial = self.trial_dir(seed)
        ckpt = checkpoint or trial / "ckpts" / "<checkpoint-written-by-the-training>.ckpt"
        return [
            self.python,
            "launch.py",
            "--config",
            str(trial / "configs" / "parsed.yaml"),
            "--export",
            "--gpu",
            "0",
            f"resume={ckpt}",
            "system.exporter_type=mesh-exporter",
            *self.export_overrides,
        ]

    def glb_command(self, seed: int, obj: str | Path | None = None) -> list[str]:
        """The equivalent `dreamdist export-mesh` line (the job runs it in-process)."""
        obj = obj or self.trial_dir(seed) / "save" / "it<N>-export" / "model.obj"
        g = self.glb
        cmd = [
            "dreamdist",
            "export-mesh",
            str(obj),
            str(self.glb_path(seed)),
            "--up",
            g.up,
            "--origin",
            g.origin,
            "--force",
        ]
        if g.front:
            cmd += ["--front", g.front]
        if g.height is not None:
            cmd += ["--height", str(g.height)]
        if g.max_faces is not None:
            cmd += ["--max-faces", str(g.max_faces)]
        if g.lods != 1:
            cmd += ["--lods", str(g.lods)]
        return cmd

    def fingerprint(self, seed: int) -> str:
        """What a checkpoint of this seed depends on: a retry may resume or reuse one only if equal."""
        parts = {
            "train": self.train_command(seed),
            "threestudio": str(self.threestudio),
            "config": _sha256(self.config),
            "distributions": [_sha256(p) for p in self.distributions],
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def settings(self) -> dict[str, Any]:
        """What defines the assets: a re-run in the same --out must match these to resume."""
        return {
            "config": str(self.config),
            "distributions": [str(p) for p in self.distributions],
            "overrides": list(self.overrides),
            "name": self.name,
        }


def _sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 - cache key
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------- validation


def _resolve_config(config: str, threestudio: Path) -> Path:
    for candidate in (Path(config), threestudio / config):
        if candidate.is_file():
            return candidate.resolve()
    raise InputError(
        f"--config {config}: no such file (looked in the current folder and in {threestudio}); "
        "pass e.g. configs/dreamdist-mvdream.yaml from the dreamdist repo"
    )


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


def build_spec(
    threestudio: str | Path,
    config: str,
    distributions: Sequence[str | Path],
    out: str | Path,
    overrides: Sequence[str] = (),
    export: bool = False,
    export_overrides: Sequence[str] = (),
    glb: GlbOptions = GlbOptions(),
    python: str | None = None,
    resume_interrupted: bool = True,
) -> BatchSpec:
    """Check every input before any job starts; raise InputError naming the problem and the fix."""
    if os.name != "posix":
        raise InputError("dreamdist batch needs Linux or macOS (it runs each job in its own process group)")
    root = Path(threestudio).expanduser()
    if not root.is_dir():
        raise InputError(f"--threestudio {threestudio}: no such folder; point it at a threestudio checkout")
    if not (root / "launch.py").is_file():
        raise InputError(
            f"--threestudio {threestudio}: no launch.py there; point it at the threestudio "
            "checkout's root folder (the one holding launch.py and custom/)"
        )
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
    return BatchSpec(
        threestudio=root,
        config=cfg,
        distributions=tuple(dists),
        out=out_path.resolve(),
        name=name,
        overrides=overrides,
        export=export,
        export_overrides=export_overrides,
        glb=glb,
        python=py,
        resume_interrupted=resume_interrupted,
    )


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
    stage: str | None = None  # the stage that failed or was interrupted: lock | train | export | glb
    trained: bool = False  # this seed's training is finished (now or in an earlier attempt)
    error: str | None = None
    checkpoint: str | None = None  # the checkpoint the training produced, and the export read
    checkpoint_bytes: int | None = None
    checkpoint_mtime: str | None = None
    resumed_from: str | None = None  # this attempt resumed an interrupted one from this checkpoint
    mesh: str | None = None  # the OBJ launch.py --export wrote, converted to `glb`

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def use_checkpoint(self, info: attempts.CheckpointInfo) -> None:
        self.checkpoint, self.checkpoint_bytes, self.checkpoint_mtime = info.path, info.bytes, info.mtime_iso()


def plan_training(spec: BatchSpec, seed: int) -> tuple[attempts.CheckpointInfo | None, Path | None]:
    """(checkpoint of a finished training to export as is, or None; else checkpoint to resume, or None)."""
    state = attempts.read_state(spec.state_path(seed))
    fp = spec.fingerprint(seed)
    done = attempts.trained_checkpoint(state, fp)
    if done is not None:
        return done, None
    resume = attempts.resumable_checkpoint(state, fp, spec.trial_dir(seed)) if spec.resume_interrupted else None
    return None, resume


def _said(log_path: str, offset: int, needle: bytes) -> bool:
    """Whether the log, from `offset` on (one stage's output), contains `needle`."""
    with open(log_path, "rb") as fh:
        fh.seek(offset)
        tail = b""
        for block in iter(lambda: fh.read(1 << 20), b""):
            if needle in tail[-len(needle) :] + block:
                return True
            tail = block
    return False


def _remove_stale_exports(trial: Path) -> None:
    """save/it*-export folders of earlier (maybe killed) exports: the GLB must come from this one."""
    for folder in trial.glob("save/it*-export"):
        if folder.is_dir():
            shutil.rmtree(folder)


def run_job(
    spec: BatchSpec, seed: int, attempt: int, gpu: str | None, stop_event: threading.Event | None = None
) -> JobResult:
    """Train one seed (or reuse its finished training), then with --export export its mesh and
    convert it to GLB. Holds the seed's lock throughout, so two attempts never overlap.

    gpu: the CUDA_VISIBLE_DEVICES value for the job (None: leave the environment's, e.g. Ray's).
    """
    start = time.monotonic()
    trial = spec.trial_dir(seed)
    log_path = spec.log_path(seed, attempt)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    result = JobResult(
        seed=seed, attempt=attempt, status="failed", wall_s=0.0, trial_dir=str(trial), log=str(log_path), gpu=gpu
    )

    def finish(status: str, stage: str | None = None, code: int | None = None, error: str | None = None) -> JobResult:
        result.status, result.stage, result.exit_code, result.error = status, stage, code, error
        result.wall_s = elapsed(start)
        with open(log_path, "ab") as fh:
            fh.write(
                f"\n[dreamdist batch] seed {seed} attempt {attempt}: {status}"
                f"{' at ' + stage if stage else ''}{': ' + error if error else ''} "
                f"({result.wall_s:.1f} s)\n".encode()
            )
        return result

    lock = attempts.SeedLock(spec.lock_path(seed))
    try:
        if not lock.acquire(LOCK_WAIT_S, stop_event):
            return finish("interrupted", "lock")
    except attempts.SeedBusy as exc:
        return finish("failed", "lock", None, f"not run: {exc}")
    try:
        return _run_locked(spec, seed, attempt, gpu, stop_event, result, finish, lock.fd)
    finally:
        lock.close()


def _run_locked(
    spec: BatchSpec,
    seed: int,
    attempt: int,
    gpu: str | None,
    stop_event: threading.Event | None,
    result: JobResult,
    finish: Any,
    lock_fd: int | None,
) -> JobResult:
    trial = spec.trial_dir(seed)
    state_path = spec.state_path(seed)
    env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {}
    keep = (lock_fd,) if lock_fd is not None else ()
    fp = spec.fingerprint(seed)
    ckpt, resume_from = plan_training(spec, seed)
    with open(result.log, "ab") as log:
        log.write(f"[dreamdist batch] seed {seed} attempt {attempt} gpu {gpu} host {os.uname().nodename}\n".encode())
        if ckpt is not None:
            log.write(
                f"[dreamdist batch] training finished in an earlier attempt: export only, from {ckpt.path}\n".encode()
            )
        else:
            if resume_from is not None:
                log.write(
                    f"[dreamdist batch] the last attempt was interrupted with the same settings: "
                    f"resuming from {resume_from}\n".encode()
                )
                result.resumed_from = str(resume_from)
            elif trial.exists():
                log.write(f"[dreamdist batch] fresh start: removing {trial} left by an earlier attempt\n".encode())
                shutil.rmtree(trial)
            before = attempts.snapshot(trial / "ckpts")
            attempts.write_state(
                state_path,
                seed=seed,
                attempt=attempt,
                state=attempts.TRAINING,
                fingerprint=fp,
                resumed_from=result.resumed_from,
            )
            log.flush()
            offset = os.fstat(log.fileno()).st_size
            code = run_logged(
                spec.train_command(seed, resume_from),
                log,
                spec.threestudio,
                env,
                stop_event,
                grace_s=GRACE_S,
                keep_fds=keep,
            )
            error, fail_state = None, attempts.FAILED
            if code is None:
                attempts.write_state(
                    state_path,
                    seed=seed,
                    attempt=attempt,
                    state=attempts.INTERRUPTED,
                    fingerprint=fp,
                    resumed_from=result.resumed_from,
                )
                return finish("interrupted", "train")
            if code != 0:
                error = f"launch.py --train exited with {code}"
            elif _said(result.log, offset, b"Received SIGTERM"):
                # Lightning 2.0's SIGTERMException is a SystemExit without a code: a training stopped
                # early by someone else's SIGTERM exits 0, maybe with a mid-training last.ckpt
                error = "launch.py --train got a SIGTERM (not from dreamdist batch) and stopped before the end"
                fail_state = attempts.INTERRUPTED  # its checkpoint is sound: a retry may resume it
            elif not (trial / "configs" / "parsed.yaml").is_file():
                error = f"launch.py --train exited 0 but left no configs/parsed.yaml in {trial}"
            else:
                written = attempts.written_checkpoint(trial / "ckpts", before)
                if written is None and resume_from is not None and resume_from.is_file():
                    written = resume_from  # resumed at its last step: nothing left to train, nothing re-saved
                if written is None:
                    error = (
                        f"launch.py --train exited 0 but wrote no checkpoint in {trial / 'ckpts'} "
                        "(is checkpoint.save_last true in the config?)"
                    )
                else:
                    ckpt = attempts.CheckpointInfo.of(written)
            if ckpt is None:
                attempts.write_state(
                    state_path,
                    seed=seed,
                    attempt=attempt,
                    state=fail_state,
                    fingerprint=fp,
                    resumed_from=result.resumed_from,
                )
                return finish("failed", "train", code, error)
            attempts.write_state(
                state_path,
                seed=seed,
                attempt=attempt,
                state=attempts.TRAINED,
                fingerprint=fp,
                resumed_from=result.resumed_from,
                checkpoint=dataclasses.asdict(ckpt),
            )
            log.write(f"[dreamdist batch] training wrote {ckpt.path}\n".encode())
        result.trained = True
        result.use_checkpoint(ckpt)
        if spec.export:
            _remove_stale_exports(trial)
            code = run_logged(
                spec.export_command(seed, ckpt.path), log, spec.threestudio, env, stop_event, grace_s=0.0, keep_fds=keep
            )  # 0: Lightning ignores SIGTERM while exporting
            if code is None:
                return finish("interrupted", "export")
            if code != 0:
                return finish("failed", "export", code, f"launch.py --export exited with {code}")
    result.exit_code = 0
    if spec.export:
        if stop_event is not None and stop_event.is_set():
            return finish("interrupted", "glb")
        if not ckpt.unchanged():
            return finish("failed", "export", 0, f"{ckpt.path} changed while it was being exported")
        from dreamdist.mesh_export import export_mesh, find_threestudio_export

        obj = find_threestudio_export(trial)
        if obj is None:
            return finish("failed", "glb", 0, f"launch.py --export wrote no {trial}/save/it*-export/*.obj")
        result.mesh = str(obj)
        g = spec.glb
        with open(result.log, "ab") as log:
            log.write(f"\n$ {shell_line(spec.glb_command(seed, obj))}\n".encode())
        try:
            report = export_mesh(
                obj,
                spec.glb_path(seed),
                up=g.up,
                front=g.front,
                height=g.height,
                origin=g.origin,
                max_faces=g.max_faces,
                lods=g.lods,
                force=True,
            )
        except DreamdistError as exc:
            return finish("failed", "glb", None, str(exc))
        except Exception as exc:  # noqa: BLE001 - recorded in the manifest; the batch goes on
            return finish("failed", "glb", None, f"{type(exc).__name__}: {exc}")
        with open(result.log, "ab") as log:
            log.write((report.format() + "\n" + json.dumps(report.to_dict()) + "\n").encode())
        result.glb = report.path
    return finish("done", code=0)
