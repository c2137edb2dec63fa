"""Files behind the knowledge base: where documents live, safe upload names, and source → file.

Everything here is plain Python (no Streamlit) so it can be tested on its own. The one rule: a path
handed to a user (download) or changed for a user (upload, delete) must lie inside one of the
knowledge base's ingest roots, after resolving symbolic links and '..'.
"""

from __future__ import annotations

import os
import sqlite3
import unicodedata
from contextlib import closing
from pathlib import Path

from kb.config import Config
from kb.store import FileRecord
from kb.store.manifest import read_manifest

UPLOADS = "uploads"
MAX_NAME = 120  # characters; long enough for real titles, short enough for every file system


def manifest_roots(kb_dir: str | os.PathLike) -> list[Path]:
    """The folders (or single files) the last `kb ingest` mirrored, as absolute paths. Relative roots
    were given relative to the working directory of that ingest, which `kb ui` shares."""
    manifest = read_manifest(Path(kb_dir)) or {}
    return [Path(r).resolve() for r in manifest.get("roots", [])]


def live_files(kb_dir: str | os.PathLike) -> list[FileRecord]:
    """Documents of the live generation, read straight from its database. The admin page does not
    use the shared Store: that one is refreshed under the answer lock, and the list must not wait
    for a question being answered."""
    for attempt in range(3):
        manifest = read_manifest(Path(kb_dir)) or {}
        if manifest.get("live") is None:
            return []
        db_path = Path(kb_dir) / "generations" / str(manifest["live"]) / "chunks.sqlite"
        try:
            with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
                return [FileRecord(*r) for r in db.execute("SELECT * FROM files ORDER BY source")]
        except sqlite3.OperationalError:
            # An ingest pruned this generation between reading the manifest and opening it.
            if attempt == 2:
                raise
    return []


def uploads_dir(cfg: Config) -> Path:
    """Uploads go into <first root>/uploads so that re-ingesting the roots picks them up; a
    knowledge base without a folder root keeps them in <kb_dir>/uploads."""
    dirs = [r for r in manifest_roots(cfg.kb_dir) if r.is_dir()]
    return dirs[0] / UPLOADS if dirs else Path(cfg.kb_dir).resolve() / UPLOADS


def ingest_paths(cfg: Config) -> list[Path]:
    """What a re-ingest mirrors: the manifest's roots, plus the uploads folder when it lies outside them."""
    roots = [r for r in manifest_roots(cfg.kb_dir) if r.exists()]
    up = uploads_dir(cfg)
    if up.is_dir() and not any(_inside(up, r) for r in roots if r.is_dir()):
        roots.append(up)
    return roots


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_source(roots: list[Path], source: str) -> Path | None:
    """The file a chunk's `source` was read from, or None when no root holds it. Sources are stored
    relative to their root; a result that escapes its root (.., symlinks) is never returned."""
    if not source or source.startswith("/") or "\\" in source or "\x00" in source:
        return None
    for root in roots:
        if root.is_file():
            # A single-file root is recorded with its name as the source, relative to its folder.
            if root.name == source:
                return root
            continue
        candidate = (root / source).resolve()
        if candidate.is_file() and candidate.is_relative_to(root.resolve()):
            return candidate
    return None


def check_upload_name(name: str, suffixes: list[str]) -> str | None:
    """Why an uploaded file name is refused, or None when it is fine to store as given.

    Names are refused rather than repaired: a name with a directory part or a leading dot is either
    a mistake or an attack, and silently storing it under another name would surprise the admin.
    """
    if not name or name != name.strip():
        return "empty name or surrounding spaces"
    if any(ch in name for ch in "/\\") or name in (".", ".."):
        return "names may not contain a folder part ('/', '\\' or '..')"
    if name.startswith("."):
        return "hidden names (starting with '.') are not allowed"
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return "control characters are not allowed"
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if Path(name).suffix.lower() not in {s.lower() for s in suffixes}:
        return f"only {', '.join(suffixes)} files are accepted"
    return None


def save_upload(folder: Path, name: str, data: bytes, cfg: Config) -> Path:
    """Write one uploaded file into `folder`; raises ValueError with the reason when refused."""
    name = unicodedata.normalize("NFC", name)
    reason = check_upload_name(name, cfg.ingest.suffixes)
    if reason:
        raise ValueError(reason)
    limit = cfg.ingest.max_file_mb * 1024 * 1024
    if len(data) > limit:
        raise ValueError(f"{len(data) / 2**20:.1f} MB is over the {cfg.ingest.max_file_mb:g} MB limit")
    if not data:
        raise ValueError("the file is empty")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    # Belt and braces: the checks above already exclude every way out of the folder.
    if target.resolve().parent != folder.resolve() or target.is_symlink():
        raise ValueError("the name would leave the uploads folder")
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, target)  # an ingest running meanwhile never reads half a file
    return target


def delete_source(roots: list[Path], source: str) -> Path:
    """Remove the file behind `source` from its root; raises ValueError when it is not under one."""
    path = resolve_source(roots, source)
    if path is None:
        raise ValueError("the file is not inside the knowledge base's folders")
    path.unlink()
    return path
