"""The batch loop: read the manifest, queue what is left, run it on a backend, retry failures,
record every state change (manifest.jsonl; OUT/gallery.html follows it, see gallery.py), show progress,
and stop cleanly on Ctrl-C.

Resume rules (the manifest's last record per seed decides whether a seed runs; the seed's state
file OUT/seeds/<tag>.json decides how, see attempts.py):
  done         skipped (re-run with --export after a run without: export only, no retraining)
  failed       run again, up to 1 + --retries attempts in this invocation; if training had finished
               (the failure was in the export or GLB step), only the export is redone
  interrupted, running, submitted (the runner died mid-job)   run again: export only if its training
               had finished, else training resumes the interrupted attempt's checkpoint (same
               settings; --no-resume: from an empty trial folder)
  lock         another runner holds the seed: reported failed, not retried
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
import sys
import time
from typing import Any, Callable, TextIO

from dreamdist.batch.gallery import GalleryUpdater
from dreamdist.batch.jobs import BatchSpec, JobResult, plan_training
from dreamdist.batch.manifest import ACTIVE, Manifest, check_same_batch
from dreamdist.batch.process import shell_line
from dreamdist.batch.seeds import format_seeds
from dreamdist.utils.stop import StopRequest


@dataclasses.dataclass
class Plan:
    todo: list[int]
    skip_train: dict[int, bool]
    already_done: list[int]
    next_attempt: dict[int, int]


def plan(spec: BatchSpec, seeds: list[int], records: list[dict[str, Any]]) -> Plan:
    latest: dict[int, dict[str, Any]] = {}
    attempts: collections.Counter[int] = collections.Counter()
    for rec in records:
        if "seed" not in rec:
            continue
        seed = int(rec["seed"])
        latest[seed] = rec
        if rec.get("status") in ACTIVE:
            attempts[seed] += 1
    todo, done, skip = [], [], {}
    for seed in seeds:
        rec = latest.get(seed)
        if rec is not None and rec.get("status") == "done" and (not spec.export or rec.get("glb")):
            done.append(seed)
            continue
        todo.append(seed)
        # finished training is trusted from the seed's state file (checkpoint unchanged, same settings)
        skip[seed] = plan_training(spec, seed)[0] is not None
    return Plan(todo=todo, skip_train=skip, already_done=done, next_attempt={s: attempts[s] + 1 for s in seeds})


@dataclasses.dataclass
class Summary:
    requested: int
    already_done: int
    done: list[JobResult]
    failed: dict[int, JobResult]
    interrupted: list[int]
    not_run: list[int]
    wall_s: float
    backend: str
    manifest: str
    was_interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.was_interrupted:
            return 130
        return 1 if self.failed or self.not_run or self.interrupted else 0

    def table(self) -> str:
        times = [r.wall_s for r in self.done]
        rows = [
            (
                "done",
                str(len(self.done) + self.already_done),
                f"{len(self.done)} this run, {self.already_done} from earlier runs",
            ),
            ("failed", str(len(self.failed)), format_seeds(list(self.failed))),
            ("interrupted", str(len(self.interrupted)), format_seeds(self.interrupted)),
            ("not run", str(len(self.not_run)), format_seeds(self.not_run)),
        ]
        lines = [f"batch summary: {self.requested} seed(s), {self.backend}", f"  {'status':<12} {'seeds':>6}  detail"]
        lines += [f"  {a:<12} {b:>6}  {c}".rstrip() for a, b, c in rows]
        if times:
            rate = len(times) / self.wall_s * 60 if self.wall_s > 0 else float("nan")
            lines.append(
                f"  time per asset: mean {statistics.mean(times):.1f} s, "
                f"median {statistics.median(times):.1f} s, "
                f"max {max(times):.1f} s; wall {self.wall_s:.1f} s ({rate:.2f} assets/min)"
            )
        for seed, res in sorted(self.failed.items()):
            lines.append(f"  seed {seed} failed after attempt {res.attempt}: {res.error} (log: {res.log})")
        lines.append(f"  manifest: {self.manifest}")
        return "\n".join(lines)


def dry_run(spec: BatchSpec, seeds: list[int], gpus: list[str] | None, out: TextIO | None = None) -> int:
    """Print the exact commands each pending seed would run; write nothing."""
    out = out or sys.stdout
    manifest = Manifest(spec.manifest_path)
    records = manifest.records()
    check_same_batch(manifest, spec.settings(), records)
    p = plan(spec, seeds, records)
    print(
        f"# dry run: {len(p.todo)} of {len(seeds)} seed(s) to run, {len(p.already_done)} already done "
        f"({format_seeds(p.already_done) or '-'}); manifest {spec.manifest_path}",
        file=out,
    )
    if gpus:
        print("# GPUs shown in start order; at run time each job takes the next free GPU", file=out)
    for i, seed in enumerate(p.todo):
        env = {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else {}
        trained, resume = plan_training(spec, seed)
        print(f"\n# seed {seed}: trial {spec.trial_dir(seed)}", file=out)
        if trained is not None:
            print(f"# training finished earlier: export only, from {trained.path}", file=out)
        else:
            if resume is not None:
                print(f"# resumes the interrupted attempt from {resume}", file=out)
            elif spec.trial_dir(seed).exists():
                print("# fresh start: the trial folder left by an earlier attempt is removed first", file=out)
            print(shell_line(spec.train_command(seed, resume), spec.threestudio, env), file=out)
        if spec.export:
            print(
                shell_line(spec.export_command(seed, trained.path if trained else None), spec.threestudio, env),
                file=out,
            )
            print(shell_line(spec.glb_command(seed)), file=out)
    return 0


def run_batch(
    spec: BatchSpec,
    seeds: list[int],
    make_backend: Callable[[], Any],
    retries: int = 2,
    progress: bool | None = None,
    out: TextIO | None = None,
) -> Summary:
    """Run every seed not yet done; return the summary (its exit_code is the command's).

    progress: True/False forces the bar on/off; None shows it when stderr is a terminal.
    """
    out = out or sys.stdout
    from tqdm.auto import tqdm

    manifest = Manifest(spec.manifest_path)
    records = manifest.records()
    check_same_batch(manifest, spec.settings(), records)
    p = plan(spec, seeds, records)
    spec.out.mkdir(parents=True, exist_ok=True)
    manifest.repair_torn_tail()
    backend = make_backend()
    manifest.append(
        {
            "event": "batch",
            "settings": spec.settings(),
            "seeds": format_seeds(seeds),
            "todo": format_seeds(p.todo),
            "export": spec.export,
            "backend": backend.description,
            "retries": retries,
        }
    )

    queue = collections.deque(p.todo)
    skip_train = dict(p.skip_train)
    next_attempt = dict(p.next_attempt)
    tries: collections.Counter[int] = collections.Counter()
    done: list[JobResult] = []
    failed: dict[int, JobResult] = {}
    interrupted: list[int] = []
    in_flight: set[int] = set()
    was_interrupted = False
    start = time.monotonic()
    bar = tqdm(
        total=len(seeds),
        initial=len(p.already_done),
        unit="asset",
        desc="batch",
        dynamic_ncols=True,
        disable=(None if progress is None else not progress),
        file=sys.stderr,
    )
    say = lambda msg: tqdm.write(msg, file=out)  # noqa: E731 - prints above the bar
    say(f"dreamdist batch: {len(p.todo)} to run, {len(p.already_done)} already done; {backend.description}")
    gallery = GalleryUpdater(spec, seeds, out)  # OUT/gallery.html, rewritten at each state change
    gallery()

    def handle(res: JobResult, stopping: bool) -> None:
        in_flight.discard(res.seed)
        will_retry = res.status == "failed" and res.stage != "lock" and not stopping and tries[res.seed] < 1 + retries
        manifest.append({**res.record(), **({"retry": True} if will_retry else {})})
        if res.status == "done":
            done.append(res)
            failed.pop(res.seed, None)
            bar.update(1)
            say(f"seed {res.seed}: done in {res.wall_s:.1f} s" + (f" -> {res.glb}" if res.glb else ""))
        elif res.status == "failed":
            if will_retry:
                skip_train[res.seed] = res.trained
                queue.append(res.seed)
                say(f"seed {res.seed}: attempt {res.attempt} failed ({res.error}); retrying (log: {res.log})")
            else:
                failed[res.seed] = res
                bar.update(1)
                say(f"seed {res.seed}: FAILED after attempt {res.attempt}: {res.error} (log: {res.log})")
        else:
            interrupted.append(res.seed)
        gallery()

    # the first Ctrl-C / SIGTERM (cluster pre-emption, `kill`) stops the loop; later ones are ignored so the
    # clean-up of running jobs is never cut short
    stop = StopRequest(lambda name: say(f"{name}: stopping after the current poll"), second_sigint_aborts=False)
    try:
        with stop.installed():
            while (queue or in_flight) and not stop.requested:
                running = len(in_flight)
                while queue and backend.capacity() > 0:
                    seed = queue.popleft()
                    attempt = next_attempt[seed]
                    next_attempt[seed] += 1
                    tries[seed] += 1
                    info = backend.submit(seed, attempt)
                    in_flight.add(seed)
                    manifest.append(
                        {
                            "seed": seed,
                            "status": info["status"],
                            "attempt": attempt,
                            "gpu": info["gpu"],
                            "trial_dir": str(spec.trial_dir(seed)),
                            "log": str(spec.log_path(seed, attempt)),
                            "export_only": skip_train.get(seed, False),
                        }
                    )
                if len(in_flight) != running:  # jobs started
                    gallery()
                for res in backend.wait(0.5):
                    handle(res, stopping=False)
            if stop.requested:
                was_interrupted = True
                say(f"stopping: interrupting {len(in_flight)} running job(s); completed records are kept")
                for res in backend.stop():
                    handle(res, stopping=True)
                for seed in list(in_flight):  # no result came back (should not happen): still record it
                    attempt = next_attempt[seed] - 1
                    handle(
                        JobResult(
                            seed=seed,
                            attempt=attempt,
                            status="interrupted",
                            wall_s=0.0,
                            trial_dir=str(spec.trial_dir(seed)),
                            log=str(spec.log_path(seed, attempt)),
                        ),
                        stopping=True,
                    )
    finally:
        backend.close()
        bar.close()
        gallery(live=False)
    ran = {r.seed for r in done} | set(failed) | set(interrupted)
    not_run = [s for s in p.todo if s not in ran]
    return Summary(
        requested=len(seeds),
        already_done=len(p.already_done),
        done=done,
        failed=failed,
        interrupted=sorted(interrupted),
        not_run=not_run,
        wall_s=round(time.monotonic() - start, 3),
        backend=backend.description,
        manifest=str(spec.manifest_path),
        was_interrupted=was_interrupted,
    )
