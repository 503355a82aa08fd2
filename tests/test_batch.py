"""`dreamdist batch` against the stand-in of threestudio's launch.py (tests/standin_threestudio_launch),
never a real threestudio: completion on fake GPUs, retries, kill-and-resume (no stale checkpoint, no
orphans, one attempt per seed at a time), Lightning-style checkpoint naming, dry run, refusals, Ray."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from dreamdist.batch.seeds import format_seeds, parse_gpus, parse_seeds
from dreamdist.cli import main
from dreamdist.utils.errors import InputError

REPO = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).parent / "standin_threestudio_launch" / "launch.py"
CONFIG = REPO / "configs" / "dreamdist-mvdream.yaml"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A threestudio-shaped folder holding the stand-in launch.py, a distribution file, and an --out."""
    root = tmp_path / "threestudio"
    (root / "custom").mkdir(parents=True)
    for name in ("launch.py", "mesh_exporter.py"):  # the stand-in and its exporter
        shutil.copy(STANDIN.parent / name, root / name)
    dist = tmp_path / "cats.safetensors"
    dist.write_bytes(b"stand-in distribution")
    launches = tmp_path / "launches.jsonl"
    monkeypatch.setenv("STANDIN_LAUNCH_LOG", str(launches))
    monkeypatch.setenv("STANDIN_LAUNCH_SECONDS", "0.1")
    monkeypatch.setenv("STANDIN_LAUNCH_EXPORT_SECONDS", "0.02")
    for var in (
        "STANDIN_LAUNCH_FAIL_SEEDS",
        "STANDIN_LAUNCH_FAIL_ONCE_SEEDS",
        "STANDIN_LAUNCH_EMPTY_MESH",
        "STANDIN_LAUNCH_TEST_SECONDS",
        "STANDIN_LAUNCH_WORKER",
    ):
        monkeypatch.delenv(var, raising=False)
    return type("Env", (), {"root": root, "dist": dist, "out": tmp_path / "out", "launches": launches, "tmp": tmp_path})


def base_args(env, *extra: str) -> list[str]:
    return [
        "--threestudio",
        str(env.root),
        "--config",
        str(CONFIG),
        "--distribution",
        str(env.dist),
        "--out",
        str(env.out),
        "--no-progress",
        *extra,
    ]


def batch(env, *extra: str) -> int:
    return main(["batch", *base_args(env, *extra)])


def manifest(env) -> list[dict]:
    """The records as the runner reads them (a torn line from a crash is skipped)."""
    from dreamdist.batch.manifest import Manifest

    return Manifest(env.out / "manifest.jsonl").records()


def final_status(env) -> dict[int, dict]:
    return {r["seed"]: r for r in manifest(env) if "seed" in r}


def launches(env, event: str = "end", mode: str | None = None) -> list[dict]:
    if not env.launches.exists():
        return []
    recs = [json.loads(line) for line in env.launches.read_text().splitlines() if line.strip()]
    return [r for r in recs if r["event"] == event and (mode is None or r["mode"] == mode)]


# --------------------------------------------------------------------------------------- seeds


def test_seed_and_gpu_lists():
    seeds = parse_seeds("0-199, 300,305-310")
    assert len(seeds) == 207 and seeds[:2] == [0, 1] and seeds[-1] == 310
    assert parse_seeds("3,1,3,2") == [3, 1, 2]
    assert format_seeds([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert parse_gpus("0, 1,2") == ["0", "1", "2"]
    for bad in ("5-2", "", "a", "-1", "1-", "1.5"):
        with pytest.raises(InputError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(InputError, match="--gpus"):
        parse_gpus(" , ")


# ------------------------------------------------------------------------------------ complete


def test_six_seeds_on_two_fake_gpus_complete_with_glbs(env, capsys):
    assert (
        batch(
            env,
            "--seeds",
            "0-5",
            "--gpus",
            "0,1",
            "--export",
            "--height",
            "1.5",
            "--max-faces",
            "800",
            "trainer.max_steps=1234",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "done              6" in out and "failed            0" in out and "time per asset" in out

    final = final_status(env)
    assert sorted(final) == list(range(6)) and {r["status"] for r in final.values()} == {"done"}
    for seed, rec in final.items():
        trial = Path(rec["trial_dir"])
        assert trial == env.out / "threestudio" / "dreamdist-mvdream" / f"cats-seed{seed}"  # {exp_root}/{name}/{tag}
        assert (trial / "configs" / "parsed.yaml").is_file() and (trial / "ckpts" / "last.ckpt").is_file()
        assert (trial / "save" / "it1234-export" / "model.obj").is_file()
        assert Path(rec["glb"]) == env.out / "glb" / f"cats-seed{seed}.glb" and Path(rec["glb"]).is_file()
        assert rec["exit_code"] == 0 and rec["wall_s"] > 0 and Path(rec["log"]).is_file()
        assert rec["checkpoint"] == str(trial / "ckpts" / "last.ckpt") and rec["resumed_from"] is None  # GLB source
        assert rec["mesh"] == str(trial / "save" / "it1234-export" / "model.obj")
        assert "export-mesh" in Path(rec["log"]).read_text()

    trains = launches(env, mode="train")
    assert sorted(r["seed"] for r in trains) == list(range(6))  # each seed trained exactly once
    assert sorted(r["seed"] for r in launches(env, mode="export")) == list(range(6))
    # one job per GPU: CUDA_VISIBLE_DEVICES is that slot's GPU, launch.py sees it as its GPU 0
    assert {r["cuda_visible_devices"] for r in trains} == {"0", "1"}
    assert {r["gpu_arg"] for r in trains} == {"0"}
    by_gpu = collections.defaultdict(list)
    for r in launches(env):
        by_gpu[r["cuda_visible_devices"]].append((r["start"], r["end"]))
    for spans in by_gpu.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), "two jobs on one GPU"

    # the same command again: everything is done, nothing runs
    n = len(launches(env, "start"))
    assert (
        batch(
            env,
            "--seeds",
            "0-5",
            "--gpus",
            "0,1",
            "--export",
            "--height",
            "1.5",
            "--max-faces",
            "800",
            "trainer.max_steps=1234",
        )
        == 0
    )
    assert len(launches(env, "start")) == n
    assert "0 to run, 6 already done" in capsys.readouterr().out


def test_failing_job_is_retried_then_recorded_failed_and_rerun_finishes_it(env, capsys, monkeypatch):
    monkeypatch.setenv("STANDIN_LAUNCH_FAIL_SEEDS", "2")
    monkeypatch.setenv("STANDIN_LAUNCH_FAIL_ONCE_SEEDS", "1")
    assert batch(env, "--seeds", "0-3", "--gpus", "0,1", "--retries", "1") == 1
    out = capsys.readouterr().out
    assert "failed            1" in out and "seed 2 failed after attempt 2" in out

    recs = [r for r in manifest(env) if r.get("seed") == 2]
    assert [(r["status"], r["attempt"]) for r in recs] == [("running", 1), ("failed", 1), ("running", 2), ("failed", 2)]
    assert recs[1]["retry"] is True and "retry" not in recs[3]
    assert recs[3]["exit_code"] == 1 and recs[3]["stage"] == "train"
    for attempt in (1, 2):
        assert "simulated failure" in (env.out / "logs" / f"seed2-try{attempt}.log").read_text()
    final = final_status(env)
    assert final[1]["status"] == "done" and final[1]["attempt"] == 2  # failed once, the retry succeeded
    assert final[0]["status"] == final[3]["status"] == "done"

    # fixed: the same command finishes seed 2 only
    monkeypatch.delenv("STANDIN_LAUNCH_FAIL_SEEDS")
    before = collections.Counter(r["seed"] for r in launches(env, "start"))
    assert batch(env, "--seeds", "0-3", "--gpus", "0,1", "--retries", "1") == 0
    after = collections.Counter(r["seed"] for r in launches(env, "start"))
    assert after - before == collections.Counter({2: 1})
    assert final_status(env)[2]["status"] == "done" and final_status(env)[2]["attempt"] == 3


def test_export_failure_retries_only_the_export(env, capsys, monkeypatch):
    monkeypatch.setenv("STANDIN_LAUNCH_EMPTY_MESH", "1")
    assert batch(env, "--seeds", "4", "--gpus", "0", "--export", "--retries", "0") == 1
    rec = final_status(env)[4]
    assert rec["status"] == "failed" and rec["stage"] == "glb" and rec["trained"] is True
    assert "empty" in rec["error"]
    monkeypatch.delenv("STANDIN_LAUNCH_EMPTY_MESH")
    assert batch(env, "--seeds", "4", "--gpus", "0", "--export") == 0
    assert len(launches(env, mode="train")) == 1  # not trained again: hours of GPU time saved
    assert len(launches(env, mode="export")) == 2
    assert Path(final_status(env)[4]["glb"]).is_file()


# --------------------------------------------------------------------------------- kill/resume


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except OSError:
        return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_killed_runner_resumes_without_redoing_or_losing_records(env, sig, monkeypatch):
    monkeypatch.setenv("STANDIN_LAUNCH_SECONDS", "0.4")
    args = base_args(env, "--seeds", "0-5", "--gpus", "0,1")
    runner = subprocess.Popen(
        [sys.executable, "-m", "dreamdist.batch", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    manifest_path = env.out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and runner.poll() is None:
        text = manifest_path.read_text() if manifest_path.exists() else ""
        if sum('"status": "done"' in line for line in text.splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert runner.poll() is None, runner.communicate()[0]
    runner.send_signal(sig)
    output = runner.communicate(timeout=60)[0]
    if sig == signal.SIGINT:
        assert runner.returncode == 130, output
        assert "interrupted" in output
    # no job outlives the runner (Ctrl-C stops them; after SIGKILL they get PR_SET_PDEATHSIG)
    pids = {r["pid"] for r in launches(env, "start")}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)

    before_lines = manifest_path.read_text().splitlines()
    done_before = {r["seed"] for r in map(json.loads, before_lines) if r.get("status") == "done"}
    assert 2 <= len(done_before) < 6
    if sig == signal.SIGINT:  # the jobs that were running are recorded as interrupted
        assert any(json.loads(line).get("status") == "interrupted" for line in before_lines)

    assert main(["batch", *args]) == 0
    after_lines = manifest_path.read_text().splitlines()
    assert after_lines[: len(before_lines)] == before_lines  # no record lost or rewritten
    assert all(json.loads(line) for line in after_lines)  # every line is whole JSON
    final = final_status(env)
    assert {s: r["status"] for s, r in final.items()} == {s: "done" for s in range(6)}
    trained = collections.Counter(r["seed"] for r in launches(env, mode="train"))
    for seed in done_before:
        assert trained[seed] == 1, f"seed {seed} was done before the kill but trained again"
    assert all((Path(final[s]["trial_dir"]) / "ckpts" / "last.ckpt").is_file() for s in range(6))


# ------------------------------------------------------- checkpoints: Lightning naming, never stale


def ckpt_run(path: str | Path) -> dict:
    """Which stand-in --train invocation wrote a checkpoint ({"pid", "start"})."""
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("archive/data.json"))["run"]


def key(rec: dict) -> tuple:
    """One launch.py invocation (pids alone could be reused)."""
    return rec["pid"], rec["start"]


def standin(env, mode: str, *extra: str, tag: str = "t", timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "launch.py",
        "--config",
        str(CONFIG),
        f"--{mode}",
        f"system.prompt_processor.distribution={env.dist}",
        "seed=1",
        f"tag={tag}",
        "use_timestamp=false",
        f"exp_root_dir={env.tmp / 'direct'}",
        *extra,
    ]
    return subprocess.run(cmd, cwd=env.root, capture_output=True, text=True, timeout=timeout)


def test_standin_names_checkpoints_like_lightning_and_runner_finds_this_attempts(env):
    """A second training in a folder holding last.ckpt writes last-v1.ckpt (Lightning >= 1.7); a resumed
    one overwrites its own last.ckpt; `written_checkpoint` picks this attempt's file in both cases."""
    from dreamdist.batch import attempts

    ckpts = env.tmp / "direct" / "dreamdist-mvdream" / "t" / "ckpts"
    assert standin(env, "train", "trainer.max_steps=100").returncode == 0
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=100.ckpt", "last.ckpt"]
    first = ckpt_run(ckpts / "last.ckpt")
    before = attempts.snapshot(ckpts)
    assert standin(env, "train", "trainer.max_steps=100").returncode == 0  # a retry into the stale folder
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "epoch=0-step=100-v1.ckpt",
        "epoch=0-step=100.ckpt",
        "last-v1.ckpt",
        "last.ckpt",
    ]
    assert ckpt_run(ckpts / "last.ckpt") == first  # untouched: exporting "last.ckpt" would be stale
    assert attempts.written_checkpoint(ckpts, before) == ckpts / "last-v1.ckpt"
    assert ckpt_run(ckpts / "last-v1.ckpt") != first

    # resume from a mid-training checkpoint: the run goes on and overwrites its own last.ckpt
    shutil.rmtree(ckpts.parent)
    over = ("checkpoint.every_n_train_steps=20", "checkpoint.save_top_k=1")
    assert standin(env, "train", "trainer.max_steps=50", *over).returncode == 0
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=40.ckpt", "last.ckpt"]
    before = attempts.snapshot(ckpts)
    assert standin(env, "train", "trainer.max_steps=100", *over, f"resume={ckpts / 'last.ckpt'}").returncode == 0
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=100.ckpt", "last.ckpt"]
    assert attempts.written_checkpoint(ckpts, before) == ckpts / "last.ckpt"
    # resumed at its last step: nothing to train, nothing re-saved (the runner then exports the resumed file)
    before = attempts.snapshot(ckpts)
    assert standin(env, "train", "trainer.max_steps=100", f"resume={ckpts / 'last.ckpt'}").returncode == 0
    assert attempts.written_checkpoint(ckpts, before) is None


def test_resume_only_from_a_complete_checkpoint_of_an_interrupted_attempt_with_same_settings(tmp_path):
    from dreamdist.batch import attempts

    ckpts = tmp_path / "trial" / "ckpts"
    ckpts.mkdir(parents=True)
    good = ckpts / "last.ckpt"
    with zipfile.ZipFile(good, "w") as zf:  # torch.save's format
        zf.writestr("archive/data.pkl", b"x" * 1000)
    torn = ckpts / "last-v1.ckpt"  # newer, but its writer was killed mid-write (Lightning writes in place)
    torn.write_bytes(good.read_bytes()[:500])
    os.utime(torn, ns=(good.stat().st_mtime_ns + 10**9,) * 2)
    state = {"state": "training", "fingerprint": "f"}  # the runner died while it trained
    assert attempts.resumable_checkpoint(state, "f", ckpts.parent) == good
    assert attempts.resumable_checkpoint({**state, "state": "interrupted"}, "f", ckpts.parent) == good
    assert attempts.resumable_checkpoint(state, "other settings", ckpts.parent) is None
    assert attempts.resumable_checkpoint({**state, "state": "failed"}, "f", ckpts.parent) is None
    assert attempts.resumable_checkpoint(None, "f", ckpts.parent) is None
    good.unlink()
    assert attempts.resumable_checkpoint(state, "f", ckpts.parent) is None


def test_standin_swallows_sigterm_during_export_like_lightning(env, monkeypatch):
    assert standin(env, "train", "trainer.max_steps=10").returncode == 0
    trial = env.tmp / "direct" / "dreamdist-mvdream" / "t"
    monkeypatch.setenv("STANDIN_LAUNCH_EXPORT_SECONDS", "1.0")
    cmd = [
        sys.executable,
        "launch.py",
        "--config",
        str(trial / "configs" / "parsed.yaml"),
        "--export",
        f"resume={trial / 'ckpts' / 'last.ckpt'}",
        "system.exporter_type=mesh-exporter",
    ]
    proc = subprocess.Popen(cmd, cwd=env.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: launches(env, "start", "export"), 30, "the export to start")
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0 and "Received SIGTERM" in out  # ... and ran to its end
    assert (trial / "save" / "it10-export" / "model.obj").is_file()


# ----------------------------------------------------------- the stand-in against real Lightning

# Runs under an interpreter with real pytorch_lightning (threestudio imports that name): what
# ModelCheckpoint(dirpath=TRIAL/ckpts, **cfg.checkpoint) does with dreamdist's configs' checkpoint
# settings, and what SIGTERM does to trainer.predict (launch.py --export).
LIGHTNING_PROBE = r"""
import json, os, sys, time
import torch
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

class Model(pl.LightningModule):
    def __init__(self, export_s=0.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.export_s = export_s
    def training_step(self, batch, i):
        return (self.w - 1).pow(2).sum()
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
    def train_dataloader(self):
        return DataLoader(torch.zeros(1000, 1), batch_size=1)
    def predict_dataloader(self):
        return DataLoader(torch.zeros(1, 1), batch_size=1)
    def predict_step(self, batch, i):
        return batch
    def on_predict_epoch_end(self):  # where threestudio's exporter runs
        print("exporting", flush=True)
        time.sleep(self.export_s)

quiet = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
mode, folder = sys.argv[1], sys.argv[2]
if mode == "fit":
    max_steps, every_n, resume = int(sys.argv[3]), int(sys.argv[4]), (sys.argv[5] if len(sys.argv) > 5 else None)
    cb = ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=-1, every_n_train_steps=every_n)
    pl.Trainer(max_steps=max_steps, callbacks=[cb], **quiet).fit(Model(), ckpt_path=resume)
else:
    pl.Trainer(**quiet).predict(Model(export_s=float(sys.argv[3])))
    open(os.path.join(folder, "export-finished"), "w").close()
"""


def _lightning_pythons() -> list[str]:
    """Interpreters with real pytorch_lightning: this one if it has it, and DREAMDIST_LIGHTNING_PYTHONS
    (os.pathsep-separated; e.g. threestudio's pinned 2.0.0 stack and a current 2.6)."""
    found = [p for p in os.environ.get("DREAMDIST_LIGHTNING_PYTHONS", "").split(os.pathsep) if p]
    try:
        import pytorch_lightning  # noqa: F401

        found.insert(0, sys.executable)
    except ImportError:
        pass
    return found


# (max_steps, checkpoint.every_n_train_steps, resume from the first run's last.ckpt?)
FIT_SEQUENCE = {
    "fresh": (4, 2, False),
    "again into the same folder": (4, 2, False),
    "resume, same checkpoint settings": (8, 2, True),
    "resume, other checkpoint settings": (12, 3, True),  # dreamdist configs: every_n_train_steps=max_steps
}


def _fit_sequence(run, ckpts: Path) -> list[tuple[list[str], list[str]]]:
    """Per step: (files in ckpts/ after it, files it wrote or changed)."""
    from dreamdist.batch import attempts

    out = []
    for max_steps, every_n, resume in FIT_SEQUENCE.values():
        before = attempts.snapshot(ckpts)
        run(max_steps, every_n, ckpts / "last.ckpt" if resume else None)
        after = attempts.snapshot(ckpts)
        out.append((sorted(after), sorted(n for n in after if before.get(n) != after[n])))
    return out


@pytest.mark.skipif(not _lightning_pythons(), reason="no real pytorch_lightning here (set DREAMDIST_LIGHTNING_PYTHONS)")
@pytest.mark.parametrize("python", _lightning_pythons() or ["-"])
def test_standin_checkpoints_and_sigterm_match_real_lightning(env, tmp_path, python):
    probe = tmp_path / "probe.py"
    probe.write_text(LIGHTNING_PROBE)
    real = tmp_path / "real"
    real.mkdir()
    penv = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def real_run(max_steps: int, every_n: int, resume: Path | None) -> None:
        done = subprocess.run(
            [python, str(probe), "fit", str(real), str(max_steps), str(every_n), *([str(resume)] if resume else [])],
            capture_output=True,
            text=True,
            timeout=300,
            env=penv,
        )
        assert done.returncode == 0, done.stderr[-2000:]

    def standin_run(max_steps: int, every_n: int, resume: Path | None) -> None:
        assert (
            standin(
                env,
                "train",
                f"trainer.max_steps={max_steps}",
                f"checkpoint.every_n_train_steps={every_n}",
                *([f"resume={resume}"] if resume else []),
            ).returncode
            == 0
        )

    seen = _fit_sequence(real_run, real)
    assert seen == _fit_sequence(standin_run, env.tmp / "direct" / "dreamdist-mvdream" / "t" / "ckpts")
    steps = dict(zip(FIT_SEQUENCE, seen))
    assert "last-v1.ckpt" in steps["again into the same folder"][1]  # the stale last.ckpt is left alone
    assert "last.ckpt" in steps["resume, same checkpoint settings"][1]  # a resumed run rewrites its own
    assert "last.ckpt" not in steps["resume, other checkpoint settings"][1]

    # SIGTERM during trainer.predict: Lightning's handler only sets a flag; the export runs to its end
    proc = subprocess.Popen(
        [python, str(probe), "predict", str(real), "1.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=penv,
    )
    for line in proc.stdout:
        if "exporting" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0 and (real / "export-finished").is_file(), rest[-2000:]


def _wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _start_runner(env, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dreamdist.batch", *base_args(env, *args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _kill_runner(env, runner: subprocess.Popen, sig: int) -> tuple[float, set[tuple]]:
    """Signal the runner; return (seconds until every launch.py and worker it started is gone, their keys)."""
    ended = {key(r) for r in launches(env, "end")}
    started = [r for r in launches(env, "start") if key(r) not in ended]
    pids = {r["pid"] for r in started} | {r["worker_pid"] for r in started if r.get("worker_pid")}
    assert pids and all(_alive(p) for p in pids)
    t0 = time.monotonic()
    runner.send_signal(sig)
    _wait_for(lambda: not any(_alive(p) for p in pids), 15, "the runner's launch.py processes to die")
    latency = time.monotonic() - t0
    runner.communicate(timeout=60)
    return latency, {key(r) for r in started}


KILL_CASES = {
    # (signal, stage to kill in, extra runner flags)
    "sigkill-in-test-phase-resume": (signal.SIGKILL, "test", ()),  # the case: last.ckpt already saved
    "sigkill-in-test-phase-no-resume": (signal.SIGKILL, "test", ("--no-resume",)),
    # Lightning 2.0-2.5 save last.ckpt at each validation: a killed training leaves a recent one
    "sigkill-mid-training-resume": (signal.SIGKILL, "train", ("trainer.val_check_interval=10",)),
    "sigkill-in-export": (signal.SIGKILL, "export", ()),
    "sigterm-in-export": (signal.SIGTERM, "export", ()),
}


@pytest.mark.parametrize("case", list(KILL_CASES))
def test_killed_runner_leaves_no_live_jobs_and_rerun_exports_this_attempts_checkpoint(env, monkeypatch, case):
    sig, stage, flags = KILL_CASES[case]
    long = "60"
    monkeypatch.setenv("STANDIN_LAUNCH_WORKER", "1")
    monkeypatch.setenv("STANDIN_LAUNCH_SECONDS", "8" if stage == "train" else "0.2")  # 1st checkpoint at 0.8 s
    monkeypatch.setenv("STANDIN_LAUNCH_TEST_SECONDS", long if stage == "test" else "0.02")
    monkeypatch.setenv("STANDIN_LAUNCH_EXPORT_SECONDS", long if stage == "export" else "0.02")
    args = ("--seeds", "3", "--gpus", "0", "--export", "trainer.max_steps=100", *flags)
    trial = env.out / "threestudio" / "dreamdist-mvdream" / "cats-seed3"
    runner = _start_runner(env, *args)
    if stage == "test":  # fit is over and saved last.ckpt; trainer.test runs
        _wait_for(lambda: (trial / "save" / "it100-test").is_dir(), 60, "the test phase")
    elif stage == "train":
        _wait_for(lambda: (trial / "ckpts" / "last.ckpt").is_file(), 60, "a mid-training checkpoint")
    else:
        _wait_for(lambda: launches(env, "start", "export"), 60, "the export")
    assert runner.poll() is None, runner.communicate()[0]
    latency, killed = _kill_runner(env, runner, sig)
    print(f"\n{case}: every launch.py + worker gone {latency * 1000:.0f} ms after the runner's {sig.name}")
    assert latency < 5.0

    monkeypatch.setenv("STANDIN_LAUNCH_SECONDS", "0.2")
    monkeypatch.setenv("STANDIN_LAUNCH_TEST_SECONDS", "0.02")
    monkeypatch.setenv("STANDIN_LAUNCH_EXPORT_SECONDS", "0.02")
    n_before = len(launches(env, "start"))
    assert main(["batch", *base_args(env, *args)]) == 0
    rerun = launches(env, "start")[n_before:]
    assert not {key(r) for r in launches(env, "end")} & killed  # no killed launch.py ever finished

    rec = final_status(env)[3]
    assert rec["status"] == "done" and rec["attempt"] == 2
    ckpt = Path(rec["checkpoint"])
    assert ckpt.parent == trial / "ckpts" and ckpt.is_file()
    exports = [r for r in launches(env, "end", "export") if key(r) not in killed]
    assert len(exports) == 1 and exports[-1]["resume"] == str(ckpt)  # the GLB's export read that checkpoint
    assert exports[-1]["checkpoint_run"] == ckpt_run(ckpt)
    assert Path(rec["mesh"]).parent.name == "it100-export" and Path(rec["mesh"]).is_file()
    assert Path(rec["glb"]).stat().st_mtime >= exports[-1]["end"]
    assert rec["checkpoint_bytes"] == ckpt.stat().st_size and rec["checkpoint_mtime"]
    trains = [r for r in rerun if r["mode"] == "train"]
    if stage == "export":  # training had finished: export only, from the checkpoint that training wrote
        assert trains == [] and rec["resumed_from"] is None
        first = launches(env, "end", "train")
        assert len(first) == 1 and ckpt_run(ckpt) == {"pid": first[0]["pid"], "start": first[0]["start"]}
    elif "--no-resume" in flags:  # a clean trial folder: Lightning writes last.ckpt again, not last-v1.ckpt
        assert len(trains) == 1 and trains[0]["resume"] is None and rec["resumed_from"] is None
        assert ckpt.name == "last.ckpt" and ckpt_run(ckpt) == {"pid": trains[0]["pid"], "start": trains[0]["start"]}
        assert sorted(p.name for p in ckpt.parent.iterdir()) == ["epoch=0-step=100.ckpt", "last.ckpt"]
    else:  # resumed on purpose from the interrupted attempt's last.ckpt
        assert len(trains) == 1 and trains[0]["resume"] == str(trial / "ckpts" / "last.ckpt")
        assert rec["resumed_from"] == str(trial / "ckpts" / "last.ckpt")
        if stage == "test":  # it was saved at the last step: nothing left to train, that file is the result
            assert ckpt_run(ckpt)["pid"] in {pid for pid, _ in killed}
        else:  # training went on and overwrote its own last.ckpt
            assert ckpt_run(ckpt) == {"pid": trains[0]["pid"], "start": trains[0]["start"]}
    from dreamdist.batch import attempts  # the seed's lock is free again

    lock = attempts.SeedLock(env.out / "seeds" / "cats-seed3.lock")
    assert lock.acquire(0.0)
    lock.close()


def test_training_stopped_by_someone_elses_sigterm_is_not_taken_as_finished(env, monkeypatch):
    """Lightning 2.0 exits 0 after a SIGTERM, leaving a mid-training last.ckpt (saved at validation):
    the runner must not export it as the finished asset; the retry resumes it."""
    monkeypatch.setenv("STANDIN_LAUNCH_SECONDS", "2")
    args = (
        "--seeds",
        "5",
        "--gpus",
        "0",
        "--export",
        "--retries",
        "1",
        "trainer.max_steps=100",
        "trainer.val_check_interval=10",
    )
    trial = env.out / "threestudio" / "dreamdist-mvdream" / "cats-seed5"
    runner = _start_runner(env, *args)
    _wait_for(lambda: (trial / "ckpts" / "last.ckpt").is_file(), 60, "a mid-training checkpoint")
    os.kill(launches(env, "start", "train")[0]["pid"], signal.SIGTERM)
    out = runner.communicate(timeout=120)[0]
    assert runner.returncode == 0, out
    recs = [r for r in manifest(env) if r.get("seed") == 5 and r["status"] in ("failed", "done")]
    assert [r["status"] for r in recs] == ["failed", "done"] and recs[0]["exit_code"] == 0
    assert "SIGTERM" in recs[0]["error"] and recs[0]["retry"] is True
    assert recs[1]["resumed_from"] == str(trial / "ckpts" / "last.ckpt")
    train_end = launches(env, "end", "train")
    assert len(train_end) == 1 and ckpt_run(recs[1]["checkpoint"]) == {
        "pid": train_end[0]["pid"],
        "start": train_end[0]["start"],
    }
    assert train_end[0]["global_step"] == 100


def test_two_runners_never_run_one_seed_at_once(env, monkeypatch):
    from dreamdist.batch import jobs

    monkeypatch.setenv("STANDIN_LAUNCH_SECONDS", "60")
    monkeypatch.setenv("STANDIN_LAUNCH_WORKER", "1")
    runner = _start_runner(env, "--seeds", "0", "--gpus", "0")
    _wait_for(lambda: launches(env, "start", "train"), 60, "runner A's training")
    monkeypatch.setenv("STANDIN_LAUNCH_SECONDS", "0.1")
    monkeypatch.setattr(jobs, "LOCK_WAIT_S", 0.5)
    assert main(["batch", *base_args(env, "--seeds", "0-1", "--gpus", "0", "--retries", "2")]) == 1
    recs = [r for r in manifest(env) if r.get("seed") == 0 and r["status"] == "failed"]
    assert len(recs) == 1 and recs[0]["stage"] == "lock" and "another attempt" in recs[0]["error"]
    assert "retry" not in recs[0]
    assert [r["seed"] for r in launches(env, "start", "train")] == [0, 1]  # seed 0 was not started twice
    assert final_status(env)[1]["status"] == "done"

    latency, _ = _kill_runner(env, runner, signal.SIGKILL)
    assert main(["batch", *base_args(env, "--seeds", "0-1", "--gpus", "0")]) == 0  # the lock is free at once
    assert final_status(env)[0]["status"] == "done"


def test_seed_lock_is_held_until_the_jobs_last_process_is_gone(tmp_path):
    """The lock's descriptor is inherited by the guard and launch.py: a runner's death does not free it
    while any of them lives."""
    from dreamdist.batch import attempts
    from dreamdist.batch.process import guarded

    lock = attempts.SeedLock(tmp_path / "s.lock")
    assert lock.acquire(0.0)
    child = subprocess.Popen(
        guarded([sys.executable, "-c", "import time; time.sleep(60)"]), start_new_session=True, pass_fds=(lock.fd,)
    )
    lock.close()  # as if the runner were gone; its job is still alive
    other = attempts.SeedLock(tmp_path / "s.lock")
    with pytest.raises(attempts.SeedBusy, match="another attempt"):
        other.acquire(0.3)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert other.acquire(5.0)
    other.close()


def test_stale_trial_folder_without_state_is_cleaned_not_exported(env):
    """A trial folder left by something else (e.g. an older dreamdist) is never trusted."""
    trial = env.out / "threestudio" / "dreamdist-mvdream" / "cats-seed1"
    stale = standin(env, "train", "trainer.max_steps=777", tag="cats-seed1")
    assert stale.returncode == 0
    shutil.copytree(env.tmp / "direct" / "dreamdist-mvdream" / "cats-seed1", trial)
    assert batch(env, "--seeds", "1", "--gpus", "0", "--export", "trainer.max_steps=50") == 0
    rec = final_status(env)[1]
    assert Path(rec["checkpoint"]) == trial / "ckpts" / "last.ckpt"
    assert sorted(p.name for p in (trial / "ckpts").iterdir()) == ["epoch=0-step=50.ckpt", "last.ckpt"]
    assert [p.name for p in (trial / "save").glob("it*-export")] == ["it50-export"]
    assert Path(rec["mesh"]).parent.name == "it50-export"


# --------------------------------------------------------------------------------- dry run/refusals


def test_dry_run_prints_exact_commands_and_writes_nothing(env, capsys):
    assert batch(env, "--seeds", "0-2", "--gpus", "0,1", "--export", "--dry-run", "trainer.max_steps=500") == 0
    out = capsys.readouterr().out
    trial = env.out.resolve() / "threestudio" / "dreamdist-mvdream" / "cats-seed2"
    train = (
        f"cd {env.root} && CUDA_VISIBLE_DEVICES=0 {sys.executable} launch.py --config {CONFIG} --train --gpu 0 "
        f"system.prompt_processor.distribution={env.dist} seed=2 tag=cats-seed2 use_timestamp=false "
        f"exp_root_dir={env.out.resolve() / 'threestudio'} trainer.max_steps=500"
    )
    assert train in out
    # the checkpoint is found after training (never a name guessed in advance): a placeholder here
    export = (
        f"CUDA_VISIBLE_DEVICES=0 {sys.executable} launch.py --config {trial}/configs/parsed.yaml --export "
        f"--gpu 0 'resume={trial}/ckpts/<checkpoint-written-by-the-training>.ckpt' "
        "system.exporter_type=mesh-exporter"
    )
    assert export in out
    assert "CUDA_VISIBLE_DEVICES=1" in out
    assert f"dreamdist export-mesh '{trial}/save/it<N>-export/model.obj' {env.out.resolve()}/glb/cats-seed2.glb" in out
    assert not env.out.exists() and not env.launches.exists()


@pytest.mark.parametrize(
    "change,needle",
    [
        (("--threestudio", "{tmp}/nowhere"), "no such folder"),
        (("--threestudio", "{tmp}"), "no launch.py"),
        (("--config", "configs/nope.yaml"), "--config configs/nope.yaml: no such file"),
        (("--seeds", "5-2"), "runs backwards"),
        (("--gpus", ""), "--gpus is empty"),
        (("--distribution", "{tmp}/missing.safetensors"), "no such file"),
        (("seed=3",), "use --seeds"),
        (("max_steps",), "not KEY=VALUE"),
        (("--up", "sideways", "--export"), "--up"),
        (("--backend", "ray"), "--address"),
    ],
)
def test_bad_input_is_refused_before_any_job(env, capsys, change, needle):
    args = base_args(env, "--seeds", "0-1", "--gpus", "0,1")
    change = [c.replace("{tmp}", str(env.tmp)) for c in change]
    if change[0].startswith("--") and change[0] in args:
        i = args.index(change[0])
        args[i + 1] = change[1]
        change = change[2:]
    rc = main(["batch", *args, *change])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("dreamdist batch: error:"), err
    assert needle in err
    assert not env.out.exists() and not env.launches.exists()


def test_resuming_with_other_settings_is_refused(env, capsys, tmp_path):
    assert batch(env, "--seeds", "0", "--gpus", "0") == 0
    other = tmp_path / "dogs.safetensors"
    other.write_bytes(b"x")
    rc = main(
        [
            "batch",
            "--threestudio",
            str(env.root),
            "--config",
            str(CONFIG),
            "--distribution",
            str(other),
            "--out",
            str(env.out),
            "--seeds",
            "0-1",
            "--no-progress",
        ]
    )
    assert rc == 2 and "other settings" in capsys.readouterr().err


def test_torn_manifest_tail_is_skipped_and_closed(env):
    assert batch(env, "--seeds", "0", "--gpus", "0") == 0
    path = env.out / "manifest.jsonl"
    with open(path, "a") as fh:
        fh.write('{"seed": 1, "status": "runn')  # a crash mid-write
    assert batch(env, "--seeds", "0-1", "--gpus", "0") == 0
    lines = path.read_text().splitlines()
    assert sum(1 for line in lines if line.startswith('{"seed": 1, "status": "runn') and not line.endswith("}")) == 1
    assert final_status(env)[1]["status"] == "done"


# ------------------------------------------------------------------------------------------ ray


def test_ray_backend_runs_the_same_batch(env, capsys):
    pytest.importorskip("ray")
    rc = batch(
        env,
        "--seeds",
        "0-5",
        "--backend",
        "ray",
        "--address",
        "local",
        "--ray-gpus-per-task",
        "0",
        "--ray-cpus-per-task",
        "1",
        "--export",
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    final = final_status(env)
    assert {s: r["status"] for s, r in final.items()} == {s: "done" for s in range(6)}
    assert all(Path(r["glb"]).is_file() for r in final.values())
    assert {r["status"] for r in manifest(env) if "seed" in r and r["status"] != "done"} == {"submitted"}
    assert sorted(r["seed"] for r in launches(env, mode="train")) == list(range(6))
    assert "ray at local" in out
