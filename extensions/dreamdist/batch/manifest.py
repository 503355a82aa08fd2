"""manifest.jsonl: the batch's source of truth, one JSON record per state change, append-only.

Why append-only JSON lines: each record is one O_APPEND write + fsync (dreamdist.atomic), so a crash
or Ctrl-C loses at most the record being written and never an earlier one, and a re-run rebuilds
every seed's state by reading the file top to bottom (the last record for a seed wins).

Records with a "seed" are job records (status running / submitted / done / failed / interrupted);
records with "event": "batch" open each run and hold the settings that define the assets, so a
re-run with a different config or distribution in the same --out is refused instead of silently
mixing two batches.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Iterable

from dreamdist.utils.atomic import append_line_atomic
from dreamdist.utils.errors import InputError

FINAL = ("done", "failed")
ACTIVE = ("running", "submitted")  # seen last => the runner died mid-job: restart it


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="milliseconds")


class Manifest:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.skipped_lines = 0

    def records(self) -> list[dict[str, Any]]:
        """All readable records; a torn last line (crash mid-write) is skipped and counted."""
        if not self.path.exists():
            return []
        out: list[dict[str, Any]] = []
        self.skipped_lines = 0
        with open(self.path, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    self.skipped_lines += 1
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def latest(self, records: Iterable[dict[str, Any]] | None = None) -> dict[int, dict[str, Any]]:
        """seed -> its last job record."""
        state: dict[int, dict[str, Any]] = {}
        for rec in self.records() if records is None else records:
            if "seed" in rec:
                state[int(rec["seed"])] = rec
        return state

    def last_settings(self, records: Iterable[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        found = None
        for rec in self.records() if records is None else records:
            if rec.get("event") == "batch":
                found = rec.get("settings")
        return found

    def repair_torn_tail(self) -> None:
        """If a crash left a last line without its newline, end it, so the next record starts on its
        own line instead of being glued to the torn one."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if last != b"\n":
            append_line_atomic(self.path, "")

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        record = {**record, "time": now()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_line_atomic(self.path, json.dumps(record, sort_keys=False))
        return record


def check_same_batch(manifest: Manifest, settings: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Refuse to resume a batch whose assets were made with other settings."""
    previous = manifest.last_settings(records)
    if previous is None:
        return
    changed = [k for k in settings if k in previous and previous[k] != settings[k]]
    if changed:
        detail = "; ".join(f"{k}: was {previous[k]!r}, now {settings[k]!r}" for k in changed)
        raise InputError(
            f"{manifest.path} belongs to a batch with other settings ({detail}); "
            "use a new --out, or run with the original settings to resume it"
        )
