"""`dreamdist batch` against the stand-in of threestudio's launch.py (tests/standin_threestudio_launch),
never a real threestudio: completion on fake GPUs, retries, kill-and-resume, dry run, refusals, Ray."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamdist.batch.seeds import format_seeds, parse_gpus, parse_seeds
from dreamdist.cli import main
from dreamdist.errors import InputError

REPO = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).parent / "standin_threestudio_launch" / "launch.py"
CONFIG = REPO / "configs" / "dreamdist-mvdream.yaml"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A threestudio-shaped folder holding the stand-in launch.py, a distribution file, and an --out."""
    root = tmp_path / "threestudio"
    (root / "custom").mkdir(parents=True)
    shutil.copy(STANDIN, root / "launch.py")
    dist = tmp_path / "cats.safetensors"
    dist.write_bytes(b"stand-in distribution")
    launches = tmp_path / "launches.jsonl"
    monkeypatch.setenv("STANDIN_LAUNCH_LOG", str(launches))
    monkeypatch.setenv("STANDIN_LAUNCH_SECONDS", "0.1")
    monkeypatch.setenv("STANDIN_LAUNCH_EXPORT_SECONDS", "0.02")
    for var in ("STANDIN_LAUNCH_FAIL_SEEDS", "STANDIN_LAUNCH_FAIL_ONCE_SEEDS", "STANDIN_LAUNCH_EMPTY_MESH"):
        monkeypatch.delenv(var, raising=False)
    return type("Env", (), {"root": root, "dist": dist, "out": tmp_path / "out", "launches": launches,
                            "tmp": tmp_path})


def base_args(env, *extra: str) -> list[str]:
    return ["--threestudio", str(env.root), "--config", str(CONFIG), "--distribution", str(env.dist),
            "--out", str(env.out), "--no-progress", *extra]


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
    assert batch(env, "--seeds", "0-5", "--gpus", "0,1", "--export", "--height", "1.5", "--max-faces", "800",
                 "trainer.max_steps=1234") == 0
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
    assert batch(env, "--seeds", "0-5", "--gpus", "0,1", "--export", "--height", "1.5", "--max-faces", "800",
                 "trainer.max_steps=1234") == 0
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
    runner = subprocess.Popen([sys.executable, "-m", "dreamdist.batch", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
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


# --------------------------------------------------------------------------------- dry run/refusals


def test_dry_run_prints_exact_commands_and_writes_nothing(env, capsys):
    assert batch(env, "--seeds", "0-2", "--gpus", "0,1", "--export", "--dry-run", "trainer.max_steps=500") == 0
    out = capsys.readouterr().out
    trial = env.out.resolve() / "threestudio" / "dreamdist-mvdream" / "cats-seed2"
    train = (f"cd {env.root} && CUDA_VISIBLE_DEVICES=0 {sys.executable} launch.py --config {CONFIG} --train --gpu 0 "
             f"system.prompt_processor.distribution={env.dist} seed=2 tag=cats-seed2 use_timestamp=false "
             f"exp_root_dir={env.out.resolve() / 'threestudio'} trainer.max_steps=500")
    assert train in out
    export = (f"CUDA_VISIBLE_DEVICES=0 {sys.executable} launch.py --config {trial}/configs/parsed.yaml --export "
              f"--gpu 0 resume={trial}/ckpts/last.ckpt system.exporter_type=mesh-exporter")
    assert export in out
    assert "CUDA_VISIBLE_DEVICES=1" in out
    assert f"dreamdist export-mesh '{trial}/save/it<N>-export/model.obj' {env.out.resolve()}/glb/cats-seed2.glb" in out
    assert not env.out.exists() and not env.launches.exists()


@pytest.mark.parametrize("change,needle", [
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
])
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
    rc = main(["batch", "--threestudio", str(env.root), "--config", str(CONFIG), "--distribution", str(other),
               "--out", str(env.out), "--seeds", "0-1", "--no-progress"])
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
    rc = batch(env, "--seeds", "0-5", "--backend", "ray", "--address", "local", "--ray-gpus-per-task", "0",
               "--ray-cpus-per-task", "1", "--export")
    out = capsys.readouterr().out
    assert rc == 0, out
    final = final_status(env)
    assert {s: r["status"] for s, r in final.items()} == {s: "done" for s in range(6)}
    assert all(Path(r["glb"]).is_file() for r in final.values())
    assert {r["status"] for r in manifest(env) if "seed" in r and r["status"] != "done"} == {"submitted"}
    assert sorted(r["seed"] for r in launches(env, mode="train")) == list(range(6))
    assert "ray at local" in out
