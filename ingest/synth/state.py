"""What synthesis remembers between runs, in `<kb_dir>/synth/`:

    state.json    {"format": 1, "chunks": {chunk_id: {"hash", "source", "generators": [names]}}}
                  — the chunks each question generator has already seen (and their text hash then)
    pairs.jsonl   every kept pair with its metadata (one JSON object a line)
    synth.lock    flock held by the one running synthesis

Both data files are replaced atomically (write to a temporary file, fsync, os.replace), so a crash
leaves the previous state; a pair is only recorded together with its chunk's entry, so a run stopped
half-way resumes where it stopped. Pairs are written before the chunk list, and `load` keeps only the
pairs of chunks the chunk list marks done: a crash between the two writes regenerates those chunks from
scratch, exactly as the interrupted run would have, instead of deduplicating against their stale pairs.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from kb.errors import StoreError
from kb.store.manifest import atomic_write_text

FORMAT = 1


class SynthState:
    def __init__(self, kb_dir: str | os.PathLike):
        self.dir = Path(kb_dir) / "synth"
        self.chunks: dict[str, dict[str, Any]] = {}
        self.pairs: list[dict[str, Any]] = []
        self._lock = None

    def __enter__(self) -> SynthState:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / "synth.lock", "a+")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StoreError(f"another synthesis is running on {self.dir.parent}; wait for it") from None
        for tmp in self.dir.glob(".*.tmp"):  # temporaries of a run killed mid-write (we hold the lock)
            tmp.unlink(missing_ok=True)
        self.load()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def load(self) -> None:
        state_path, pairs_path = self.dir / "state.json", self.dir / "pairs.jsonl"
        try:
            if state_path.exists():
                data = json.loads(state_path.read_text(encoding="utf-8"))
                if data.get("format") != FORMAT:
                    raise StoreError(
                        f"{state_path}: unknown format {data.get('format')!r}; delete {self.dir}"
                    )
                self.chunks = data.get("chunks", {})
            if pairs_path.exists():
                lines = pairs_path.read_text(encoding="utf-8").splitlines()
                pairs = [json.loads(line) for line in lines if line.strip()]
                self.pairs = [p for p in pairs if self.done(p["chunk_id"], p["chunk_hash"], p["generator"])]
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
            raise StoreError(
                f"{self.dir}: synthesis state is damaged ({e}); delete the folder to start over"
            ) from None

    def save(self) -> None:
        """Pairs first, then the chunk list: a crash between the two leaves pairs whose chunks are not
        marked done, and `load` drops them (their chunks are generated again)."""
        text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in self.pairs)
        atomic_write_text(self.dir / "pairs.jsonl", text)
        state = {"format": FORMAT, "chunks": self.chunks}
        atomic_write_text(self.dir / "state.json", json.dumps(state, ensure_ascii=False, indent=1))

    def done(self, chunk_id: str, chunk_hash: str, generator: str) -> bool:
        entry = self.chunks.get(chunk_id)
        return bool(entry) and entry["hash"] == chunk_hash and generator in entry["generators"]

    def mark(self, chunk_id: str, chunk_hash: str, source: str, generator: str) -> None:
        entry = self.chunks.get(chunk_id)
        if not entry or entry["hash"] != chunk_hash:
            entry = self.chunks[chunk_id] = {"hash": chunk_hash, "source": source, "generators": []}
        if generator not in entry["generators"]:
            entry["generators"].append(generator)

    def prune(self, live: set[tuple[str, str]]) -> int:
        """Forget chunks and drop pairs whose (chunk id, hash) is no longer in the store; returns the
        number of pairs dropped."""
        self.chunks = {cid: e for cid, e in self.chunks.items() if (cid, e["hash"]) in live}
        before = len(self.pairs)
        self.pairs = [p for p in self.pairs if (p["chunk_id"], p["chunk_hash"]) in live]
        return before - len(self.pairs)
