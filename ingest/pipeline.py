"""Incremental ingest: scan → hash → load/clean/chunk what changed → embed → new generation → switch.

Unchanged files (same sha256 as in the live generation) are never loaded or embedded again.
A file that fails to load is reported and skipped; if an earlier version of it is in the knowledge
base, that version stays (nothing is lost to a bad upload). Files left out on purpose (over an
ingest.max_* limit, empty, scans without text, password-protected PDFs, symbolic links) are
`skipped`; files that are broken (corrupt, binary, undecodable) are `failed`. Both carry the reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kb.config import Config
from kb.embed.base import Embedder
from kb.errors import FileSkipped, LoadError
from kb.keyword import tokenize
from kb.schema import Chunk
from kb.store import FileRecord, Writer
from kb.store.manifest import read_manifest


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    relabelled: int = 0  # unchanged documents whose department tags changed (no re-embedding)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason): broken files
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason): left out on purpose
    chunks: int = 0  # chunks in the knowledge base after this ingest
    embedded: int = 0  # chunks embedded by this ingest
    seconds: float = 0.0
    generation: int | None = None

    def to_json(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "relabelled": self.relabelled,
            "failed": len(self.failed),
            "skipped": len(self.skipped),
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        return (
            f"ingest: {self.added} added, {self.updated} updated, {self.deleted} deleted, "
            f"{self.unchanged} unchanged, {self.relabelled} relabelled, {len(self.skipped)} skipped, {len(self.failed)} failed; {self.chunks} chunks "
            f"({self.embedded} embedded) in {self.seconds:.1f}s, generation {self.generation}"
        )


def embed_text(chunk: Chunk) -> str:
    """What the embedder and BM25 see: the heading path, then the chunk, so a chunk under
    '年假' matches questions about 年假 even when its own sentences do not repeat the word."""
    head = " > ".join(chunk.headings)
    body = chunk.text.lstrip("#").lstrip()  # the first chunk of a section starts with its heading line
    return f"{head}\n{chunk.text}" if head and not body.startswith(chunk.headings[-1]) else chunk.text


def _ignore_patterns(root: Path) -> list[str]:
    f = root / ".kbignore"
    if not f.is_file():
        return []
    return [
        ln.strip()
        for ln in f.read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]


def scan(paths: list[Path], cfg: Config) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """Files to ingest as (path, source) with source relative to its root, and skipped (source, reason)."""
    found: dict[str, Path] = {}
    skipped: list[tuple[str, str]] = []
    suffixes = {s.lower() for s in cfg.ingest.suffixes}
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise LoadError(str(root), "no such file or directory")
        if root.is_file():
            candidates, base, patterns = [root], root.parent, []
        else:
            candidates = sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
            base, patterns = root, _ignore_patterns(root)
        real_base = base.resolve()
        for p in candidates:
            source = p.relative_to(base).as_posix()
            parts = source.split("/")
            if any(part.startswith(".") for part in parts) or p.suffix.lower() not in suffixes:
                continue
            if any(fnmatch.fnmatch(source, pat) or fnmatch.fnmatch(p.name, pat) for pat in patterns):
                continue
            if p.is_symlink() and (
                not cfg.ingest.follow_symlinks or not p.resolve().is_relative_to(real_base)
            ):
                skipped.append(
                    (
                        source,
                        "symbolic link; not followed (ingest.follow_symlinks, or it points outside the root)",
                    )
                )
                continue
            if source in found and found[source] != p:
                raise LoadError(
                    str(p), f"two files map to the same source {source!r}; ingest them separately"
                )
            found[source] = p
    return sorted(((p, s) for s, p in found.items()), key=lambda x: x[1]), skipped


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ingest(
    paths: list[Path],
    cfg: Config,
    embedder: Embedder | Callable[[], Embedder],
    *,
    delete_missing: bool = True,
    progress: bool = True,
) -> IngestReport:
    """Bring the knowledge base in line with `paths`. `embedder` may be a factory: it is then only
    called when something needs embedding, so an unchanged re-ingest never loads the model."""
    from ingest.access import DepartmentLabels
    from ingest.chunk import chunk_documents
    from ingest.loaders import load

    t0 = time.perf_counter()
    report = IngestReport()
    files, skipped = scan(paths, cfg)
    report.skipped.extend(skipped)
    kb_dir = Path(cfg.kb_dir)
    old = read_manifest(kb_dir)
    # What decides the vectors; kb.service.query_embedder_config reads it back to search at the same precision.
    chosen = {"name": cfg.embedder.name, "model": cfg.embedder.model, "quantize": cfg.embedder.quantize}
    instance: Embedder | None = embedder if isinstance(embedder, Embedder) else None
    if instance is None and old and old.get("embedder_config") == chosen:
        # Same configured embedder as last time: its name and dim are in the manifest, no need to load it.
        settings = {"embedder": old["embedder"], "chunk": vars(cfg.chunk).copy()}
    else:
        instance = instance or embedder()
        settings = {"embedder": {"name": instance.name, "dim": instance.dim}, "chunk": vars(cfg.chunk).copy()}
    fresh = bool(old) and any(old.get(k) != v for k, v in settings.items())
    if fresh and progress:
        changed = ", ".join(
            f"{k} {old.get(k)} -> {v}" for k, v in settings.items() if old and old.get(k) != v
        )
        print(f"changed since the last ingest: {changed}; re-embedding every file", file=sys.stderr)

    with Writer(kb_dir, fresh=fresh, store=cfg.store) as writer:
        pending: list[tuple[FileRecord, list[Chunk], bool]] = []
        seen: set[str] = set()
        limit = cfg.ingest.max_file_mb * 1024 * 1024
        labels = DepartmentLabels(cfg.access)
        for path, source in tqdm(files, desc="reading", unit="file", disable=not progress, file=sys.stderr):
            seen.add(source)
            try:
                departments = labels.departments(path, source)
                size = path.stat().st_size
                if size > limit:
                    raise FileSkipped(
                        source, f"{size / 2**20:.1f} MB is over ingest.max_file_mb={cfg.ingest.max_file_mb}"
                    )
                sha = _sha256(path)
                previous = writer.file_record(source)
                if previous is not None and previous.sha256 == sha:
                    report.unchanged += 1
                    if writer.departments(source) not in (None, departments):
                        writer.set_departments(source, departments)
                        report.relabelled += 1
                    continue
                chunks = chunk_documents(load(path, source, cfg.ingest), cfg.chunk)
                for c in chunks:
                    c.departments = list(departments)
                if not chunks:
                    raise LoadError(source, "no text found")
            except FileSkipped as e:
                report.skipped.append((source, e.reason))
                continue
            except LoadError as e:
                report.failed.append((source, e.reason))
                continue
            except OSError as e:
                report.failed.append((source, f"cannot read: {e.strerror or e}"))
                continue
            except Exception as e:  # noqa: BLE001 - a loader bug must not stop the rest; it is reported
                report.failed.append((source, f"{type(e).__name__}: {e}"))
                continue
            record = FileRecord(source, sha, size, len(chunks), time.time())
            pending.append((record, chunks, previous is not None))

        removed = sorted(writer.sources() - seen) if delete_missing else []
        texts = [embed_text(c) for _, chunks, _ in pending for c in chunks]
        if texts and instance is None:
            instance = embedder()
        vectors = _embed_all(instance, texts, settings["embedder"]["dim"], progress)
        offset = 0
        for record, chunks, existed in pending:
            n = len(chunks)
            writer.put_file(
                record,
                chunks,
                vectors[offset : offset + n],
                [tokenize(t) for t in texts[offset : offset + n]],
            )
            offset += n
            report.updated += existed
            report.added += not existed
        for source in removed:
            writer.delete_file(source)
        report.deleted = len(removed)
        report.embedded = len(texts)
        if pending or removed or report.relabelled or fresh or old is None:
            manifest = {
                **settings,
                "embedder_config": chosen,
                "versions": _versions(),
                "roots": [str(Path(p).resolve()) for p in paths],
            }
            report.generation = writer.commit(manifest, keep=cfg.ingest.keep_generations, index=cfg.index)
        else:
            writer.abort()  # nothing changed: no new generation, the live one stays
            report.generation = old.get("live") if old else None
    final = read_manifest(kb_dir) or {}
    report.chunks = final.get("stats", {}).get("chunks", 0)
    report.seconds = time.perf_counter() - t0
    return report


# Texts per embed_batch call: the embedder sorts each call's texts by length before batching them, so
# larger calls pad less; the progress bar moves once per call.
EMBED_CALL = 256


def _embed_all(embedder: Embedder | None, texts: list[str], dim: int, progress: bool) -> np.ndarray:
    if not texts or embedder is None:
        return np.zeros((0, dim), np.float32)
    out = []
    with tqdm(total=len(texts), desc="embedding", unit="chunk", disable=not progress, file=sys.stderr) as bar:
        for i in range(0, len(texts), EMBED_CALL):
            out.append(embedder.embed_batch(texts[i : i + EMBED_CALL]))
            bar.update(min(EMBED_CALL, len(texts) - i))
    return np.vstack(out).astype(np.float32)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("kb", "faiss-cpu", "pymilvus", "jieba", "torch", "transformers", "sentence-transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
