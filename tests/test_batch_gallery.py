"""OUT/gallery.html of `dreamdist batch`, against the stand-in of threestudio's launch.py: written at
start with pending tiles, updated as seeds start and finish, statuses from the manifest, links that
resolve, regenerate commands that remake the seed, no network; then loaded in a real headless
Chromium from disk (tests/browser.py)."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import types
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser import browser_missing, open_page

from dreamdist.batch import gallery
from dreamdist.batch.jobs import build_spec
from dreamdist.batch.manifest import Manifest
from dreamdist.cli import main

REPO = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).parent / "standin_threestudio_launch"
CONFIG = REPO / "configs" / "dreamdist-mvdream.yaml"
STANDIN_VARS = (
    "STANDIN_LAUNCH_FAIL_SEEDS",
    "STANDIN_LAUNCH_FAIL_ONCE_SEEDS",
    "STANDIN_LAUNCH_EMPTY_MESH",
    "STANDIN_LAUNCH_TEST_SECONDS",
    "STANDIN_LAUNCH_WORKER",
    "STANDIN_LAUNCH_LOG",
)
SEEDS, FAILING = [0, 1, 2], 1


class Tiles(HTMLParser):
    """seed -> {status, classes of links -> href, img/video src, text, regenerate commands}."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tiles: dict[int, dict] = {}
        self.urls: list[str] = []  # every href and src on the page
        self.refresh = False
        self._tile: dict | None = None
        self._code = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "meta" and a.get("http-equiv") == "refresh":
            self.refresh = True
        for key in ("href", "src"):
            if key in a:
                self.urls.append(a[key])
        if tag == "article":
            self._tile = {
                "status": a["data-status"],
                "links": {},
                "img": None,
                "video": None,
                "text": "",
                "commands": "",
            }
            self.tiles[int(a["data-seed"])] = self._tile
        elif self._tile is not None:
            if tag == "a" and "class" in a:
                self._tile["links"][a["class"]] = a["href"]
            elif tag in ("img", "video"):
                self._tile[tag] = a["src"]
            elif tag == "code":
                self._code = True

    def handle_endtag(self, tag):
        if tag == "article":
            self._tile = None
        elif tag == "code":
            self._code = False

    def handle_data(self, data):
        if self._tile is not None:
            self._tile["commands" if self._code else "text"] += data


def statuses(text: str) -> dict[int, str]:
    return {seed: t["status"] for seed, t in Tiles(text).tiles.items()}


def on_disk(out: Path, url: str) -> Path:
    """A page URL as the file it names; it must be relative (no scheme, no absolute path)."""
    parsed = urlparse(url)
    assert not parsed.scheme and not parsed.netloc and not url.startswith("/"), url
    return out / unquote(parsed.path)


def make_env(root_dir: Path, mp) -> types.SimpleNamespace:
    """A threestudio-shaped folder holding the stand-in launch.py, a distribution file, and an --out."""
    root = root_dir / "threestudio"
    (root / "custom").mkdir(parents=True)
    for name in ("launch.py", "mesh_exporter.py"):
        shutil.copy(STANDIN / name, root / name)
    dist = root_dir / "cats.safetensors"
    dist.write_bytes(b"stand-in distribution")
    for var in STANDIN_VARS:
        mp.delenv(var, raising=False)
    mp.setenv("STANDIN_LAUNCH_SECONDS", "0.1")
    mp.setenv("STANDIN_LAUNCH_EXPORT_SECONDS", "0.02")
    mp.setenv("STANDIN_LAUNCH_LOG", str(root_dir / "launches.jsonl"))
    return types.SimpleNamespace(root=root, dist=dist, out=root_dir / "out", launches=root_dir / "launches.jsonl")


def args(env, *extra: str) -> list[str]:
    return [
        "batch",
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


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One batch (seeds 0-2 on two fake GPUs, --export, seed 1 fails in training), every version of the
    gallery it wrote kept in order."""
    with pytest.MonkeyPatch.context() as mp:
        env = make_env(tmp_path_factory.mktemp("gallery"), mp)
        mp.setenv("STANDIN_LAUNCH_FAIL_SEEDS", str(FAILING))
        pages: list[tuple[str, bool]] = []
        render = gallery.render_gallery

        def keep(spec, tiles, live=False, now=None):
            pages.append((render(spec, tiles, live=live, now=now), live))
            return pages[-1][0]

        mp.setattr(gallery, "render_gallery", keep)
        batch_args = ("--seeds", "0-2", "--gpus", "0,1", "--export", "--retries", "0", "trainer.max_steps=100")
        code = main(args(env, *batch_args))
    spec = build_spec(env.root, str(CONFIG), [env.dist], env.out, ["trainer.max_steps=100"], export=True)
    final = Manifest(env.out / "manifest.jsonl").latest()
    return types.SimpleNamespace(env=env, pages=pages, code=code, spec=spec, final=final, batch_args=batch_args)


def test_gallery_is_written_at_start_and_follows_every_seed(run):
    assert run.code == 1 and {s: r["status"] for s, r in run.final.items()} == {0: "done", 1: "failed", 2: "done"}
    seen = [statuses(text) for text, _ in run.pages]
    assert seen[0] == {0: "pending", 1: "pending", 2: "pending"}  # before any job started
    assert Tiles(run.pages[0][0]).refresh and run.pages[0][1]  # the live page reloads itself
    assert seen[-1] == {0: "done", 1: "failed", 2: "done"} and not Tiles(run.pages[-1][0]).refresh
    order = {"pending": 0, "running": 1, "done": 2, "failed": 2}
    for seed in SEEDS:  # each seed goes pending -> running -> done/failed, and the page shows each step
        steps = [page[seed] for page in seen]
        assert [order[s] for s in steps] == sorted(order[s] for s in steps), steps
        assert "running" in steps
    # updated as seeds finish: a page where one seed is finished while seed 2 still waits or runs
    assert any(p[2] in ("pending", "running") and "done" in (p[0], p[1]) for p in seen)
    assert (run.env.out / "gallery.html").read_text() == run.pages[-1][0]


def test_tiles_show_renders_times_glbs_commands_and_failures(run):
    out, page = run.env.out, Tiles((run.env.out / "gallery.html").read_text())
    for seed in SEEDS:
        tile, rec = page.tiles[seed], run.final[seed]
        assert f"seed {seed}" in tile["text"] and f"{rec['wall_s']:.1f} s" in tile["text"]
        assert html.unescape(tile["commands"]) == "\n".join(gallery.regenerate_commands(run.spec, seed, rec))
        train = tile["commands"].splitlines()[1]
        assert f"launch.py --config {CONFIG} --train" in train and f"seed={seed} tag=cats-seed{seed}" in train
        assert on_disk(out, tile["links"]["log"]) == Path(rec["log"])
    for seed in (0, 2):
        tile, rec, trial = page.tiles[seed], run.final[seed], run.spec.trial_dir(seed)
        assert on_disk(out, tile["img"]) == trial / "save" / "it100-test" / "0.png"  # view 0: the front
        assert on_disk(out, tile["links"]["glb"]) == Path(rec["glb"]) == out / "glb" / f"cats-seed{seed}.glb"
        video = trial / "save" / "it100-test.mp4"  # written where imageio[ffmpeg] is installed, as threestudio
        assert (tile["video"] and on_disk(out, tile["video"])) == (video if video.is_file() else None)
        assert len(list((trial / "save" / "it100-test").glob("*.png"))) == 120  # data.n_test_views
        export = tile["commands"].splitlines()[3]
        assert f"--export --gpu 0 resume={rec['checkpoint']} system.exporter_type=mesh-exporter" in export
    failed = page.tiles[FAILING]
    assert failed["img"] is None and "glb" not in failed["links"] and "no test renders" in failed["text"]
    assert "train: launch.py --train exited with 1" in failed["text"]
    assert "simulated failure" in on_disk(out, failed["links"]["log"]).read_text()


def test_page_is_self_contained_and_every_link_resolves(run):
    out, text = run.env.out, (run.env.out / "gallery.html").read_text()
    page = Tiles(text)
    assert "http://" not in text and "https://" not in text  # nothing from the network
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text
    assert page.urls and all(on_disk(out, url).is_file() for url in page.urls)


def test_regenerate_commands_remake_the_seed(run):
    """The tile's commands, pasted into a shell as they are, train, export and convert seed 0 again."""
    page = Tiles((run.env.out / "gallery.html").read_text())
    script = "set -e\n" + html.unescape(page.tiles[0]["commands"])
    trial, glb = run.spec.trial_dir(0), Path(run.final[0]["glb"])
    shutil.rmtree(trial)
    glb.unlink()
    env = {k: v for k, v in os.environ.items() if k not in STANDIN_VARS}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the `dreamdist` command
    proc = subprocess.run(
        ["bash", "-c", script],
        env={**env, "STANDIN_LAUNCH_SECONDS": "0.05"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (trial / "save" / "it100-test" / "0.png").is_file() and (trial / "ckpts" / "last.ckpt").is_file()
    assert (trial / "save" / "it100-export" / "model.obj").is_file() and glb.is_file()


def test_gallery_only_rewrites_the_page_and_runs_nothing(run, capsys, monkeypatch):
    path = run.env.out / "gallery.html"
    path.unlink()
    starts = run.env.launches.read_text().count('"event": "start"')
    # without --export too: the manifest says the batch exported, so the export commands stay on the page
    assert main(args(run.env, "--seeds", "0-2", "--gallery-only", "trainer.max_steps=100")) == 0
    assert f"gallery: {path}" in capsys.readouterr().out
    assert run.env.launches.read_text().count('"event": "start"') == starts
    rewritten = Tiles(path.read_text())
    assert {s: t["status"] for s, t in rewritten.tiles.items()} == {0: "done", 1: "failed", 2: "done"}
    assert not rewritten.refresh and "--export" in rewritten.tiles[0]["commands"]

    empty = build_spec(run.env.root, str(CONFIG), [run.env.dist], run.env.out.parent / "nothing")
    assert (
        main(args(types.SimpleNamespace(**{**vars(run.env), "out": empty.out}), "--seeds", "0", "--gallery-only")) == 2
    )
    assert "no manifest.jsonl there" in capsys.readouterr().err and not empty.out.exists()


def test_statuses_come_from_the_manifest(tmp_path, monkeypatch):
    env = make_env(tmp_path, monkeypatch)
    spec = build_spec(env.root, str(CONFIG), [env.dist], env.out)
    glb = env.out / "glb" / "cats-seed3.glb"
    glb.parent.mkdir(parents=True)
    glb.write_bytes(b"glTF")
    old, new = spec.trial_dir(3) / "save" / "it3-test", spec.trial_dir(3) / "save" / "it7-test"
    for folder, names in ((old, ["0.png"]), (new, ["1.png", "0.png", "notes.txt"])):
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_bytes(b"png")
    (spec.trial_dir(3) / "save" / "it7-test.mp4").write_bytes(b"mp4")
    records = [
        {"event": "batch", "seeds": "0-5"},
        {"seed": 0, "status": "running", "attempt": 1},  # its runner died: a later run started
        {"event": "batch", "seeds": "0-4"},
        {"seed": 1, "status": "running", "attempt": 1, "gpu": "1", "time": "2026-01-02T03:04:05.000+00:00"},
        {"seed": 2, "status": "failed", "attempt": 1, "retry": True, "error": "boom", "stage": "train"},
        {"seed": 3, "status": "done", "attempt": 2, "wall_s": 3723.0, "glb": str(glb)},
        {"seed": 4, "status": "interrupted", "attempt": 1, "stage": "export"},
        {"seed": 6, "status": "failed", "attempt": 1, "stage": "lock", "error": "not run: busy", "wall_s": 0.1},
    ]
    tiles = {t.seed: t for t in gallery.collect_tiles(spec, [7], records)}
    assert {s: t.status for s, t in tiles.items()} == {
        0: "interrupted",
        1: "running",
        2: "pending",
        3: "done",
        4: "interrupted",
        5: "pending",
        6: "failed",
        7: "pending",
    }
    assert tiles[2].detail == "attempt 1 failed, retry queued" and tiles[1].detail == "attempt 1, GPU 1"
    assert tiles[3].still == new / "0.png" and tiles[3].frame_count == 2 and tiles[3].video.name == "it7-test.mp4"
    assert tiles[3].glb == glb and tiles[6].error == "lock: not run: busy" and "export" in tiles[4].error
    assert all(t.still is None and t.glb is None for s, t in tiles.items() if s != 3)
    text = gallery.render_gallery(spec, list(tiles.values()), live=True)
    assert Tiles(text).refresh and "1 h 02 min" in text and "since 03:04:05" in text
    assert not Tiles(gallery.render_gallery(spec, [tiles[3]], live=True)).refresh  # nothing left to wait for
    with open(env.out / "manifest.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    path = gallery.write_gallery(spec, [7])
    assert statuses(path.read_text()) == {s: t.status for s, t in tiles.items()}


@pytest.mark.skipif(bool(browser_missing()), reason=str(browser_missing()))
def test_gallery_loads_in_a_real_browser_from_disk(run, tmp_path):
    out = run.env.out
    report = open_page(out / "gallery.html", screenshot=tmp_path / "gallery.png")
    print(
        f"\nbrowser: Chromium {report.browser_version}, {len(report.requests)} requests, {report.seconds} s; "
        f"screenshot {report.screenshot}"
    )
    assert report.outside(out) == [] and report.failed_requests == []  # only file:// under OUT, all found
    assert report.console_errors == [] and report.page_errors == []
    assert report.broken_images == [] and len(report.images) == 2  # the still of every finished seed
    assert all(i["naturalWidth"] == 3 * i["naturalHeight"] for i in report.images)  # rgb | normal | opacity
    stills = {Path(unquote(urlparse(i["src"]).path)) for i in report.images}
    assert stills == {run.spec.trial_dir(s) / "save" / "it100-test" / "0.png" for s in (0, 2)}
    for video in report.videos:  # the turntables threestudio writes (H.264 mp4), where the stand-in made them
        assert video["error"] is None and video["readyState"] >= 2 and video["videoWidth"] > 0, video
    assert all(on_disk(out, os.path.relpath(unquote(urlparse(u).path), out)).is_file() for u in report.links)
    assert report.title.startswith("dreamdist-mvdream") and report.screenshot.stat().st_size > 0
