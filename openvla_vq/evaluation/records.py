"""Append-only per-episode records: a rerun skips what is recorded; a killed run loses only unfinished episodes.

Each process appends one JSON line per finished episode to its own file (episodes/rank<r>.jsonl), flushed
and fsynced before the next episode starts. A line cut short by a kill is dropped when the file is reopened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_records(folder: Path) -> list[dict]:
    records = []
    for path in sorted(folder.glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill: that episode will run again
                continue
    return records


class EpisodeLog:
    def __init__(self, folder: Path, rank: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"rank{rank}.jsonl"
        if self.path.is_file():  # drop a partial last line so new records start on a line of their own
            data = self.path.read_bytes()
            keep = data[: data.rfind(b"\n") + 1]
            if keep != data:
                self.path.write_bytes(keep)
        self.file = open(self.path, "a")

    def append(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()
