"""manifest.json: what the knowledge base holds and which generation is live.

Written with write-to-temp + fsync + os.replace, so readers see the old or the new manifest, never a
half-written one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORMAT = 1


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(kb_dir: Path) -> dict[str, Any] | None:
    p = kb_dir / "manifest.json"
    if not p.exists():
        return None
    return json.loads(p.read_text(encoding="utf-8"))


def write_manifest(kb_dir: Path, manifest: dict[str, Any]) -> None:
    manifest = {"format": FORMAT, **manifest}
    atomic_write_text(kb_dir / "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2))
