"""Open a local HTML page in a real headless Chromium and report what it did (a shared test helper).

    from browser import open_page, require_browser
    require_browser()                     # skips the test, with the reason, where there is no browser
                                          # (or @pytest.mark.skipif(bool(browser_missing()), reason=...))
    page = open_page(out / "gallery.html", screenshot=tmp_path / "gallery.png")
    assert page.outside(out) == []        # every request was a file:// URL under `out`
    assert page.broken_images == [] and page.console_errors == [] and page.page_errors == []

The browser is the system's Chromium (Debian: `apt-get install chromium`; scripts/setup.sh installs it
as root), driven by Playwright (PyPI `playwright`, in the `test` extra) through `executable_path`, so
Playwright never downloads a browser of its own. Override the binary with DREAMDIST_CHROMIUM=/path.
Each call launches a fresh browser with a fresh temporary profile (Playwright's launch() makes one) and
flags that keep Chromium itself off the network (no component updates, sync, background requests or
QUIC). Every request the page makes is recorded; any that is not file:// is aborted, never sent.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--autoplay-policy=no-user-gesture-required",
]

_REPORT_JS = """async (waitMs) => {
  // lazy images load only near the viewport: ask for all of them now, then wait for each to settle
  const imgs = Array.from(document.images);
  imgs.forEach(img => { img.loading = "eager"; });
  const settled = el => new Promise(done => {
    if (el.complete) return done();
    el.addEventListener("load", done, {once: true});
    el.addEventListener("error", done, {once: true});
  });
  const videos = Array.from(document.querySelectorAll("video"));
  const ready = v => new Promise(done => {
    if (v.readyState >= 2 || v.error) return done();
    v.addEventListener("loadeddata", done, {once: true});
    v.addEventListener("error", done, {once: true});
    v.load();
  });
  const timeout = new Promise(done => setTimeout(done, waitMs));
  await Promise.race([Promise.all([...imgs.map(settled), ...videos.map(ready)]), timeout]);
  return {
    title: document.title,
    images: imgs.map(i => ({src: i.currentSrc || i.src, naturalWidth: i.naturalWidth,
                            naturalHeight: i.naturalHeight, complete: i.complete})),
    videos: videos.map(v => ({src: v.currentSrc || v.src, readyState: v.readyState,
                              error: v.error ? v.error.code : null, videoWidth: v.videoWidth,
                              videoHeight: v.videoHeight, duration: v.duration})),
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
  };
}"""


def find_chromium() -> str | None:
    """DREAMDIST_CHROMIUM, else the first Chromium or Chrome on PATH."""
    env = os.environ.get("DREAMDIST_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_missing() -> str | None:
    """Why no browser test can run here, or None when one can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if find_chromium() is None:
        return (
            "no Chromium found (Debian: apt-get install chromium, which scripts/setup.sh does as root; "
            "or set DREAMDIST_CHROMIUM=/path/to/chromium)"
        )
    return None


def require_browser() -> None:
    """Skip the calling test, with the reason, where no browser test can run."""
    import pytest

    reason = browser_missing()
    if reason:
        pytest.skip(reason)


@dataclasses.dataclass
class PageReport:
    url: str
    title: str
    requests: list[str]  # every URL the page asked for, in order (the page itself first)
    failed_requests: list[str]  # "URL: reason" (aborted non-file requests among them)
    images: list[dict]  # every <img>: src, naturalWidth, naturalHeight, complete
    videos: list[dict]  # every <video>: src, readyState, error (MediaError code or None), videoWidth, ...
    links: list[str]  # every <a href>, resolved
    console_errors: list[str]
    page_errors: list[str]  # uncaught script exceptions
    screenshot: Path | None
    browser_version: str
    seconds: float

    @property
    def broken_images(self) -> list[str]:
        """<img> that did not load (naturalWidth 0)."""
        return [i["src"] for i in self.images if not i["naturalWidth"]]

    def outside(self, root: str | os.PathLike) -> list[str]:
        """Requests that are not file:// URLs of files under `root`."""
        base = os.path.realpath(root)
        bad = []
        for url in self.requests:
            parsed = urlparse(url)
            path = os.path.realpath(unquote(parsed.path)) if parsed.scheme == "file" else ""
            if parsed.scheme != "file" or os.path.commonpath([base, path]) != base:
                bad.append(url)
        return bad


def open_page(
    path: str | os.PathLike,
    screenshot: str | os.PathLike | None = None,
    wait_s: float = 10.0,
    viewport: tuple[int, int] = (1280, 900),
    full_page: bool = True,
) -> PageReport:
    """Load a local page from disk (file://), wait for its images and videos, and report.

    screenshot: a PNG path to write (the whole page when full_page). wait_s bounds the wait for media.
    """
    from playwright.sync_api import sync_playwright

    start = time.monotonic()
    url = Path(path).resolve().as_uri()
    requests: list[str] = []
    failed: list[str] = []
    console: list[str] = []
    errors: list[str] = []

    def route(route) -> None:  # never let anything but file:// leave the page
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            route.abort("blockedbyclient")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("request", lambda r: requests.append(r.url))
            page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", route)
            page.goto(url, wait_until="load")
            info = page.evaluate(_REPORT_JS, int(wait_s * 1000))
            shot = None
            if screenshot is not None:
                shot = Path(screenshot)
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot), full_page=full_page)
            version = browser.version
        finally:
            browser.close()
    return PageReport(
        url=url,
        title=info["title"],
        requests=requests,
        failed_requests=failed,
        images=info["images"],
        videos=info["videos"],
        links=info["links"],
        console_errors=console,
        page_errors=errors,
        screenshot=shot,
        browser_version=version,
        seconds=round(time.monotonic() - start, 2),
    )
