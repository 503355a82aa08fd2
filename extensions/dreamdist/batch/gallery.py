"""OUT/gallery.html: one page showing every seed of a batch, kept up to date while the batch runs.

One tile per seed: its status (pending / running / done / failed / interrupted), wall time, threestudio's
test renders (a still and the turntable), the GLB and log links, and the exact commands that made it.
The page is a pure function of the out folder (the manifest, the trial folders) and the batch settings:
the runner rewrites it atomically at start, as jobs start and finish, and at the end;
`dreamdist batch ... --gallery-only` rewrites it without running anything.

It opens from disk (file://) with no server: every link is relative to OUT, the CSS is inline, there is
no script, no font, nothing from the network. While the runner is live the page reloads itself every
REFRESH_S seconds (a meta refresh), the final page does not.

What threestudio writes for the tiles (v0.2.3, read from its code): `launch.py --train` runs
trainer.test after fitting, and `--test` runs it on a checkpoint. The system's test_step saves one
image per test view, TRIAL/save/it{step}-test/{index}.png, index 0..data.n_test_views-1 (120 by
default; save_image_grid: comp_rgb | comp_normal (when the renderer gives one) | opacity side by side,
each eval_height x eval_width); view 0 is azimuth 0, threestudio's front view.
on_test_epoch_end writes TRIAL/save/it{step}-test.mp4 (save_img_sequence: imageio.mimsave, fps 30,
H.264). The still is frame 0 of the newest it{step}-test folder, shown cropped to its left (comp_rgb)
panel; it links to the full frame. The video gets the same crop and covers the still while it plays;
where it cannot play, the still shows through.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import os
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, TextIO

from dreamdist.batch.jobs import BatchSpec
from dreamdist.batch.manifest import ACTIVE, Manifest
from dreamdist.batch.process import shell_line
from dreamdist.batch.seeds import format_seeds, parse_seeds
from dreamdist.utils.atomic import atomic_write_text

GALLERY_NAME = "gallery.html"
REFRESH_S = 30
STATUSES = ("done", "failed", "running", "interrupted", "pending")
_TEST_DIR = re.compile(r"^it(\d+)-test$")
_FRAME = re.compile(r"^(\d+)\.png$")


def gallery_path(out: str | os.PathLike) -> Path:
    return Path(out) / GALLERY_NAME


@dataclasses.dataclass
class Tile:
    seed: int
    status: str
    detail: str = ""  # e.g. "attempt 2, GPU 1"
    wall_s: float | None = None
    since: str | None = None  # when the current status began (manifest time)
    error: str | None = None
    still: Path | None = None  # test render, view 0
    frame_count: int = 0
    video: Path | None = None
    glb: Path | None = None
    log: Path | None = None
    commands: tuple[str, ...] = ()


def find_test_renders(trial: Path) -> tuple[Path | None, int, Path | None]:
    """(still, number of frames, turntable video) from the newest TRIAL/save/it{N}-test folder."""
    save = trial / "save"
    try:
        folders = [(int(m.group(1)), save / name) for name in os.listdir(save) if (m := _TEST_DIR.match(name))]
    except OSError:
        return None, 0, None
    for step, folder in sorted(folders, reverse=True):
        try:
            frames = sorted((int(m.group(1)), name) for name in os.listdir(folder) if (m := _FRAME.match(name)))
        except OSError:
            continue
        if not frames:
            continue
        video = save / f"it{step}-test.mp4"
        return folder / frames[0][1], len(frames), video if video.is_file() else None
    return None, 0, None


def _file(path: Any) -> Path | None:
    return Path(path) if path and Path(path).is_file() else None


def _seeds_in(records: list[dict[str, Any]]) -> set[int]:
    seeds: set[int] = set()
    for rec in records:
        if "seed" in rec:
            seeds.add(int(rec["seed"]))
        elif rec.get("event") == "batch" and rec.get("seeds"):
            try:
                seeds.update(parse_seeds(str(rec["seeds"])))
            except Exception:  # noqa: BLE001 - a hand-edited record: its job records still count
                pass
    return seeds


def regenerate_commands(
    spec: BatchSpec, seed: int, rec: dict[str, Any] | None = None, export: bool | None = None
) -> tuple[str, ...]:
    """The commands that make this seed's asset from scratch, as the batch ran them (the same builders
    as --dry-run and the logs): train; with --export, export the checkpoint the training wrote and
    convert the OBJ to GLB (with the paths this seed's manifest record names, when it has them)."""
    rec = rec or {}
    cmds = [
        "# train (move an old trial folder away first: beside its last.ckpt Lightning writes last-v1.ckpt)",
        shell_line(spec.train_command(seed), spec.threestudio),
    ]
    if spec.export if export is None else export:
        cmds += [
            "# export the checkpoint that the training wrote, then convert the mesh to GLB",
            shell_line(spec.export_command(seed, rec.get("checkpoint")), spec.threestudio),
            shell_line(spec.glb_command(seed, rec.get("mesh"))),
        ]
    return tuple(cmds)


def collect_tiles(spec: BatchSpec, seeds: Iterable[int], records: list[dict[str, Any]]) -> list[Tile]:
    """One tile per seed (the given ones and every seed the manifest knows), status from the manifest:
    the last job record of a seed wins; a running/submitted record older than the last batch record was
    left by a runner that is gone: interrupted."""
    latest: dict[int, tuple[int, dict[str, Any]]] = {}
    last_batch, export = -1, spec.export
    for i, rec in enumerate(records):
        if "seed" in rec:
            latest[int(rec["seed"])] = (i, rec)
        elif rec.get("event") == "batch":
            last_batch, export = i, spec.export or bool(rec.get("export"))  # --gallery-only without --export
    tiles = []
    for seed in sorted(set(seeds) | _seeds_in(records)):
        i, rec = latest.get(seed, (-1, {}))
        status, error, detail = str(rec.get("status") or "pending"), rec.get("error"), ""
        attempt = rec.get("attempt")
        if status in ACTIVE:
            status = "running" if i > last_batch else "interrupted"
        elif status == "failed" and rec.get("retry"):
            status, detail = "pending", f"attempt {attempt} failed, retry queued"
        elif status not in STATUSES:
            status = "pending"
        if attempt and not detail:
            detail = f"attempt {attempt}" + (f", GPU {rec['gpu']}" if rec.get("gpu") not in (None, "") else "")
        if status == "failed" and rec.get("stage"):
            error = f"{rec['stage']}: {error or 'failed'}"
        elif status == "interrupted" and rec.get("stage"):
            error = f"interrupted during {rec['stage']}; the next run resumes it"
        trial = spec.trial_dir(seed)
        still, n_frames, video = find_test_renders(trial)
        glb = _file(rec.get("glb")) if status == "done" else None  # never a stale one from an earlier attempt
        tiles.append(
            Tile(
                seed=seed,
                status=status,
                detail=detail,
                wall_s=rec.get("wall_s") if status in ("done", "failed") else None,
                since=rec.get("time"),
                error=error,
                still=still,
                frame_count=n_frames,
                video=video,
                glb=glb,
                log=_file(rec.get("log")),
                commands=regenerate_commands(spec, seed, rec, export),
            )
        )
    return tiles


# ------------------------------------------------------------------------------------------ HTML

_CSS = """
:root { color-scheme: light dark; --bg: #f4f4f2; --card: #fff; --ink: #1d1d1f; --muted: #6b6b70; --line: #dcdcd8;
  --done: #1f7a3d; --failed: #b3261e; --running: #1d5fb8; --pending: #7a7a7a; --interrupted: #a05a00; }
@media (prefers-color-scheme: dark) { :root { --bg: #17181a; --card: #222326; --ink: #ececec; --muted: #a0a0a6;
  --line: #38393d; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 20px 40px; background: var(--bg); color: var(--ink);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
header h1 { font-size: 20px; margin: 0 0 4px; }
header p { margin: 2px 0; color: var(--muted); }
.counts span { margin-right: 14px; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 14px; margin-top: 16px; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 8px; overflow: hidden;
  display: flex; flex-direction: column; }
.tile.failed { border-color: var(--failed); }
.stage { position: relative; aspect-ratio: 1 / 1; background: #e9e9e6; display: block; overflow: hidden; }
/* the comp_rgb panel: the frame's left square (cover + left), 3% more to hide the seam to the normal panel */
.stage img, .stage video { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: cover;
  object-position: left center; display: block; transform: scale(1.03); transform-origin: 0 50%; }
.stage .empty { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
  color: #8a8a8a; font-size: 13px; text-align: center; padding: 12px; }
.meta { padding: 8px 10px 0; display: flex; gap: 8px; align-items: baseline; flex-wrap: wrap; }
.seed { font-weight: 600; }
.badge { font-size: 12px; padding: 1px 7px; border-radius: 10px; color: #fff; background: var(--pending); }
.badge.done { background: var(--done); } .badge.failed { background: var(--failed); }
.badge.running { background: var(--running); } .badge.interrupted { background: var(--interrupted); }
.time, .detail { color: var(--muted); font-size: 12px; }
.links { padding: 4px 10px 0; font-size: 13px; }
.links a { margin-right: 10px; }
.error { margin: 6px 10px 0; color: var(--failed); font-size: 12px; word-break: break-word; }
details { padding: 6px 10px 10px; margin-top: auto; font-size: 12px; }
summary { cursor: pointer; color: var(--muted); }
pre { white-space: pre-wrap; word-break: break-all; background: var(--bg); border: 1px solid var(--line);
  border-radius: 4px; padding: 6px; margin: 6px 0 0; font-size: 11px; }
"""


def _href(path: Path, out: Path) -> str:
    """A URL relative to the page (works from file://), escaped for an HTML attribute."""
    rel = Path(os.path.relpath(path, out)).as_posix()
    return html.escape(urllib.parse.quote(rel), quote=True)


def _seconds(wall: float) -> str:
    if wall < 120:
        return f"{wall:.1f} s"
    minutes, sec = divmod(int(round(wall)), 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {sec:02d} s"


def _clock(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return _dt.datetime.fromisoformat(iso).strftime("%H:%M:%S")
    except ValueError:
        return iso


def _tile_html(tile: Tile, out: Path) -> str:
    e = html.escape
    parts = [
        f'<article class="tile {tile.status}" id="seed-{tile.seed}" data-seed="{tile.seed}" '
        f'data-status="{tile.status}">'
    ]
    if tile.still is not None:
        frame = _href(tile.still, out)
        view = f"test view {tile.still.stem} of {tile.frame_count}"
        parts.append(
            f'<a class="stage" href="{frame}" title="{e(view)}: colour | normal | opacity">'
            f'<img src="{frame}" alt="seed {tile.seed}, {e(view)}" loading="lazy">'
        )
        if tile.video is not None:
            parts.append(
                f'<video src="{_href(tile.video, out)}" muted loop autoplay playsinline '
                f'preload="metadata" aria-label="seed {tile.seed} turntable"></video>'
            )
        parts.append("</a>")
    else:
        waiting = {"pending": "pending", "running": "running: renders when training ends"}
        parts.append(
            f'<div class="stage"><div class="empty">{e(waiting.get(tile.status, "no test renders"))}</div></div>'
        )
    timing = ""
    if tile.wall_s is not None:
        timing = _seconds(float(tile.wall_s))
    elif tile.status == "running" and tile.since:
        timing = f"since {_clock(tile.since)}"
    parts.append(
        f'<div class="meta"><span class="seed">seed {tile.seed}</span>'
        f'<span class="badge {tile.status}">{tile.status}</span>'
        + (f'<span class="time">{e(timing)}</span>' if timing else "")
        + (f'<span class="detail">{e(tile.detail)}</span>' if tile.detail else "")
        + "</div>"
    )
    links = []
    if tile.glb is not None:
        links.append(f'<a class="glb" href="{_href(tile.glb, out)}" download>GLB</a>')
    if tile.video is not None:
        links.append(f'<a class="turntable" href="{_href(tile.video, out)}">turntable</a>')
    if tile.log is not None:
        links.append(f'<a class="log" href="{_href(tile.log, out)}">log</a>')
    if links:
        parts.append(f'<div class="links">{"".join(links)}</div>')
    if tile.error:
        parts.append(f'<p class="error">{e(tile.error)}</p>')
    cmds = "\n".join(tile.commands)
    parts.append(
        f'<details><summary>regenerate</summary><pre><code class="regenerate">{e(cmds)}</code></pre>'
        "</details></article>"
    )
    return "".join(parts)


def render_gallery(spec: BatchSpec, tiles: list[Tile], live: bool = False, now: str | None = None) -> str:
    counts = {s: sum(t.status == s for t in tiles) for s in STATUSES}
    e = html.escape
    now = now or _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    refresh = live and (counts["pending"] or counts["running"])
    dists = ", ".join(p.name for p in spec.distributions)
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        *([f'<meta http-equiv="refresh" content="{REFRESH_S}">'] if refresh else []),
        f"<title>{e(spec.name)}: {e(dists)} (dreamdist batch)</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{e(spec.name)}: {e(dists)}</h1>",
        f"<p>config {e(str(spec.config))}"
        + (f"; overrides {e(' '.join(spec.overrides))}" if spec.overrides else "")
        + "</p>",
        '<p class="counts">'
        + "".join(
            f'<span class="count {s}">{s} {counts[s]}</span>' for s in STATUSES if counts[s] or s in ("done", "pending")
        )
        + "</p>",
        f"<p>{len(tiles)} seed(s) ({e(format_seeds([t.seed for t in tiles]) or '-')}); updated {e(now)}"
        + (f"; reloads every {REFRESH_S} s while the batch runs" if refresh else "")
        + "</p>",
        "</header>",
        "<main>",
    ]
    out = spec.out
    return "\n".join([*head, *(_tile_html(t, out) for t in tiles), "</main>", "</body>", "</html>", ""])


def write_gallery(spec: BatchSpec, seeds: Iterable[int] = (), live: bool = False) -> Path:
    """Rewrite OUT/gallery.html (atomically) from the manifest and the trial folders."""
    tiles = collect_tiles(spec, seeds, Manifest(spec.manifest_path).records())
    path = gallery_path(spec.out)
    atomic_write_text(path, render_gallery(spec, tiles, live=live))
    return path


class GalleryUpdater:
    """What the runner calls: a failed gallery write is reported once and never stops the batch."""

    def __init__(self, spec: BatchSpec, seeds: Iterable[int], out: TextIO | None = None) -> None:
        self.spec, self.seeds, self.out = spec, list(seeds), out
        self.warned = False

    def __call__(self, live: bool = True) -> None:
        try:
            write_gallery(self.spec, self.seeds, live=live)
        except Exception as exc:  # noqa: BLE001 - hours of GPU jobs must not die for a web page
            if not self.warned:
                self.warned = True
                print(f"warning: could not write {gallery_path(self.spec.out)}: {exc}", file=self.out or sys.stderr)
