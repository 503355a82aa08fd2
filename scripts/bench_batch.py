#!/usr/bin/env python
"""Benchmark `dreamdist batch` scheduling: assets per minute on 1, 2 and 4 local slots.

Jobs are the threestudio launch.py STAND-IN (tests/standin_threestudio_launch) sleeping a fixed time
per training, so the numbers measure the runner (queue, subprocess start, manifest, logs), not a GPU.
Scaling efficiency = (assets/min on N slots) / (N x assets/min on 1 slot); the target is >= 0.9.
The slots are fake GPUs (CUDA_VISIBLE_DEVICES only), so N slots can exceed this machine's cores;
each stand-in still starts a Python interpreter, which is the overhead that shows up here.

    python scripts/bench_batch.py                 # 8 assets of 5 s each per slot count
    python scripts/bench_batch.py --seconds 5 --assets 16 --slots 1,2,4,8 --export
    python scripts/bench_batch.py --kill-latency 10   # runner SIGKILL -> its launch.py tree gone (ms)

--kill-latency N starts a real runner process N times per stage (training, export), SIGKILLs it while
the stand-in runs (with a worker child, like a DataLoader worker), and times until launch.py and its
worker are both gone (polling /proc every 0.5 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "standin_threestudio_launch" / "launch.py"
CONFIG = REPO / "configs" / "dreamdist-mvdream.yaml"


def standin_root(work: Path) -> Path:
    """A threestudio-shaped folder with the stand-in launch.py (and its exporter) and a distribution beside it."""
    root = work / "threestudio"
    if not root.exists():
        (root / "custom").mkdir(parents=True)
        for name in ("launch.py", "mesh_exporter.py"):
            shutil.copy(STANDIN.parent / name, root / name)
        (work / "bench.safetensors").write_bytes(b"stand-in")
    return root


def run_once(work: Path, slots: int, assets: int, export: bool) -> float:
    from dreamdist.cli import main

    root = standin_root(work)
    out = work / f"out-{slots}"
    args = [
        "batch",
        "--threestudio",
        str(root),
        "--config",
        str(CONFIG),
        "--distribution",
        str(work / "bench.safetensors"),
        "--seeds",
        f"0-{assets - 1}",
        "--gpus",
        ",".join(str(i) for i in range(slots)),
        "--out",
        str(out),
        "--no-progress",
        "--retries",
        "0",
    ]
    if export:
        args.append("--export")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # warm-up: imports and validation, not timed
        main(args + ["--dry-run"])
    start = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = main(args)
    wall = time.perf_counter() - start
    if rc != 0:
        sys.exit(f"batch failed with {rc}:\n{buf.getvalue()}")
    return wall


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"  # a zombie is dead for our purposes
    except OSError:
        return False


def kill_latency(work: Path, stage: str, runs: int) -> list[float]:
    """Seconds from the runner's SIGKILL until the stand-in launch.py and its worker are gone."""
    root = standin_root(work)
    out = []
    for i in range(runs):
        log = work / f"kill-{stage}-{i}.jsonl"
        env = {
            **os.environ,
            "STANDIN_LAUNCH_LOG": str(log),
            "STANDIN_LAUNCH_WORKER": "1",
            "STANDIN_LAUNCH_SECONDS": "60" if stage == "train" else "0.1",
            "STANDIN_LAUNCH_TEST_SECONDS": "0.01",
            "STANDIN_LAUNCH_EXPORT_SECONDS": "60",
        }
        args = [
            "--threestudio",
            str(root),
            "--config",
            str(CONFIG),
            "--distribution",
            str(work / "bench.safetensors"),
            "--seeds",
            "0",
            "--out",
            str(work / f"kill-{stage}-{i}"),
            "--no-progress",
            "--export",
        ]
        runner = subprocess.Popen(
            [sys.executable, "-m", "dreamdist.batch", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        rec = None
        while rec is None and time.monotonic() < deadline:
            lines = log.read_text().splitlines() if log.exists() else []
            recs = [json.loads(line) for line in lines if line.strip()]
            rec = next((r for r in recs if r["event"] == "start" and r["mode"] == stage), None)
            time.sleep(0.01)
        if rec is None:
            runner.kill()
            sys.exit(f"kill-latency: the {stage} stage never started")
        time.sleep(0.3)  # let it get going
        pids = [rec["pid"], rec["worker_pid"]]
        t0 = time.perf_counter()
        runner.send_signal(signal.SIGKILL)
        while any(_alive(p) for p in pids) and time.perf_counter() - t0 < 30:
            time.sleep(0.0005)
        out.append(time.perf_counter() - t0)
        runner.wait()
        if any(_alive(p) for p in pids):
            sys.exit(f"kill-latency: launch.py or its worker outlived the runner by 30 s ({pids})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="stand-in training time per asset")
    parser.add_argument("--assets", type=int, default=8, help="assets per slot count")
    parser.add_argument("--slots", default="1,2,4", help="slot counts to measure")
    parser.add_argument("--export", action="store_true", help="also run the export step and the GLB conversion")
    parser.add_argument(
        "--kill-latency",
        type=int,
        default=0,
        metavar="N",
        help="instead: time runner SIGKILL -> launch.py tree gone, N times per stage",
    )
    args = parser.parse_args()
    if args.kill_latency:
        with tempfile.TemporaryDirectory(prefix="dreamdist-bench-") as tmp:
            for stage in ("train", "export"):
                ms = [t * 1000 for t in kill_latency(Path(tmp), stage, args.kill_latency)]
                print(
                    f"runner SIGKILL during {stage:<6} -> launch.py + worker gone: "
                    f"median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms over {len(ms)} run(s)"
                )
        return
    os.environ["STANDIN_LAUNCH_SECONDS"] = str(args.seconds)
    os.environ.setdefault("STANDIN_LAUNCH_EXPORT_SECONDS", "0.1")
    slot_counts = [int(s) for s in args.slots.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dreamdist-bench-") as tmp:
        for slots in slot_counts:
            wall = run_once(Path(tmp), slots, args.assets, args.export)
            rows.append((slots, wall, args.assets / wall * 60))
            print(f"  {slots} slot(s): {wall:.1f} s", file=sys.stderr, flush=True)
    base = next((rate for slots, _, rate in rows if slots == 1), None)
    print(
        f"dreamdist batch, stand-in jobs of {args.seconds:g} s{' + export + GLB' if args.export else ''}, "
        f"{args.assets} assets per row, {os.cpu_count()} CPU core(s)"
    )
    print(f"{'slots':>5} {'wall s':>8} {'assets/min':>11} {'speed-up':>9} {'efficiency':>11} {'of ideal':>9}")
    for slots, wall, rate in rows:
        ideal_rate = 60 / args.seconds * slots  # zero overhead: every slot sleeping all the time
        speedup = rate / base if base else float("nan")
        eff = speedup / slots if base else float("nan")
        print(f"{slots:>5} {wall:>8.1f} {rate:>11.1f} {speedup:>9.2f} {eff:>11.2f} {rate / ideal_rate:>9.2f}")
    print("efficiency = speed-up / slots (linear scaling = 1.00); of ideal = assets/min / (slots x 60 / seconds)")
    overhead = [(wall * slots / args.assets) - args.seconds for slots, wall, _ in rows]
    parts = [f"{s} slot(s) {o:.2f}" for (s, _, _), o in zip(rows, overhead)]
    print("per-asset overhead over the sleep (s): " + ", ".join(parts))


if __name__ == "__main__":
    main()
