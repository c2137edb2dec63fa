"""The model registry: versioned adapters under <kb_dir>/models/, and which one is active.

    models/<name>/            adapter_config.json + adapter_model.safetensors (loads with plain peft),
                              train_config.yaml (resolved), meta.json (method, base model, data hash,
                              metrics, gate decision), curve.jsonl (training log)
    models/active.json        {"active": "<name>" | null}
    models/.runs/<name>/      checkpoints of a run in progress (for --resume); run.lock is held
                              (flock) while it trains

An adapter appears under models/ only once complete (built in .runs/, renamed in), so a crash
mid-training never leaves a half-written adapter in the list.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kb.errors import ModelError
from kb.store.manifest import atomic_write_text

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class AdapterInfo:
    name: str
    path: Path
    method: str = ""
    base_model: str = ""
    created: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    active: bool = False


class Registry:
    def __init__(self, kb_dir: str | Path):
        self.root = Path(kb_dir) / "models"

    def _meta(self, path: Path) -> dict[str, Any]:
        f = path / "meta.json"
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}

    def list(self) -> list[AdapterInfo]:
        if not self.root.is_dir():
            return []
        active = self.active_name()
        out = []
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and not p.name.startswith(".") and (p / "adapter_config.json").is_file():
                m = self._meta(p)
                out.append(
                    AdapterInfo(
                        p.name,
                        p,
                        m.get("method", ""),
                        m.get("base_model", ""),
                        m.get("created", 0.0),
                        m.get("metrics", {}),
                        m.get("gate", {}),
                        p.name == active,
                    )
                )
        return sorted(out, key=lambda a: (a.created, a.name))

    def get(self, name: str) -> AdapterInfo:
        for a in self.list():
            if a.name == name:
                return a
        known = ", ".join(a.name for a in self.list()) or "none"
        raise ModelError(f"no adapter named {name!r} in {self.root} (known: {known})")

    def active_name(self) -> str | None:
        f = self.root / "active.json"
        return json.loads(f.read_text(encoding="utf-8")).get("active") if f.is_file() else None

    def active(self) -> AdapterInfo | None:
        name = self.active_name()
        return self.get(name) if name else None

    def activate(self, name: str | None) -> None:
        """Make `name` the adapter answers use (None: the base model)."""
        if name is not None:
            self.get(name)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / "active.json", json.dumps({"active": name, "at": time.time()}))

    def next_name(self, method: str) -> str:
        """<method>-v<N> with N one past the highest version of that method, finished or in progress."""
        pattern = re.compile(rf"^{re.escape(method)}-v(\d+)$")
        used = [0]
        for base in (self.root, self.root / ".runs"):
            if base.is_dir():
                used += [int(m.group(1)) for p in base.iterdir() if (m := pattern.match(p.name))]
        return f"{method}-v{max(used) + 1}"

    def run_dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ModelError(f"adapter name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
        return self.root / ".runs" / name

    def latest_run(self) -> str | None:
        """The most recently started run that has not been published (for --resume)."""
        runs = self.root / ".runs"
        if not runs.is_dir():
            return None
        cands = [p for p in runs.iterdir() if p.is_dir() and not (self.root / p.name).exists()]
        return max(cands, key=lambda p: p.stat().st_mtime).name if cands else None

    def prune_runs(self, keep: int, current: str = "") -> list[str]:
        """Remove what crashed runs left in .runs/: folders of runs already published (a crash after
        the rename), and unfinished runs beyond the `keep` most recent. Runs that are training (their
        run.lock is held) and `current` are never touched. Returns the names removed."""
        runs = self.root / ".runs"
        if not runs.is_dir():
            return []
        removed, unfinished = [], []
        for p in runs.iterdir():
            if not p.is_dir() or p.name == current or _training(p):
                continue
            if (self.root / p.name).exists():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
            else:
                unfinished.append(p)
        unfinished.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for p in unfinished[max(keep, 0) :]:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
        return removed

    def publish(self, name: str, adapter_dir: Path, meta: dict[str, Any]) -> AdapterInfo:
        """Move a finished adapter directory into the registry under `name`."""
        final = self.root / name
        if final.exists():
            raise ModelError(f"adapter {name!r} already exists in {self.root}")
        (adapter_dir / "meta.json").write_text(
            json.dumps({"name": name, "created": time.time(), **meta}, ensure_ascii=False, indent=2),
            encoding="utf-8",
        )
        adapter_dir.rename(final)
        return self.get(name)

    def update_meta(self, name: str, **changes: Any) -> None:
        a = self.get(name)
        meta = {**self._meta(a.path), **changes}
        atomic_write_text(a.path / "meta.json", json.dumps(meta, ensure_ascii=False, indent=2))


def _training(run_dir: Path) -> bool:
    """True while a `kb finetune` process holds the run's lock."""
    lock = run_dir / "run.lock"
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False
