"""Store (reader of the live generation) and Writer (builder of the next one).

Layout of a knowledge base directory:
    manifest.json            live generation, embedder, chunk settings, versions, stats
    ingest.lock              flock held by the one writer
    generations/<n>/         chunks.sqlite (text, metadata, vectors as float32 blobs, tokens),
                             index.faiss (vectors by chunk row), bm25_*.npy/json
    generations/.<n>.tmp-*/  a generation being built; deleted if a crash left it behind
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb.access import Departments
from kb.errors import EmptyKnowledgeBase, IngestLocked, StoreError
from kb.keyword import BM25Index
from kb.schema import Chunk
from kb.store.acl import RowAccess
from kb.store.manifest import fsync_dir, read_manifest, write_manifest

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    source TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    n_chunks INTEGER NOT NULL, ingested_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    row INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, source TEXT NOT NULL, page INTEGER,
    headings TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, hash TEXT NOT NULL,
    text TEXT NOT NULL, tokens TEXT NOT NULL, vector BLOB NOT NULL,
    departments TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE INDEX IF NOT EXISTS chunks_id ON chunks(id);
"""


@dataclass
class FileRecord:
    source: str
    sha256: str
    size: int
    n_chunks: int
    ingested_at: float


def _row_to_chunk(r: tuple) -> Chunk:
    _, cid, source, page, headings, start, end, h, text, departments = r
    return Chunk(
        id=cid,
        text=text,
        source=source,
        page=page,
        headings=json.loads(headings),
        start=start,
        end=end,
        hash=h,
        departments=json.loads(departments),
    )


_BASE_COLS = 'row, id, source, page, headings, start, "end", hash, text'
_CHUNK_COLS = _BASE_COLS + ", departments"
# A knowledge base written before access control has no departments column: all of it is public.
_LEGACY_COLS = _BASE_COLS + ", '[]'"


def _has_departments(db: sqlite3.Connection) -> bool:
    return any(r[1] == "departments" for r in db.execute("PRAGMA table_info(chunks)"))


class Store:
    """Read-only view of one committed generation. Cheap to keep open; `refresh()` follows the live one."""

    def __init__(self, kb_dir: str | os.PathLike):
        self.dir = Path(kb_dir)
        self.generation: int | None = None
        self.manifest: dict[str, Any] = {}
        self._db: sqlite3.Connection | None = None
        self._index = None
        self.keyword: BM25Index | None = None
        self._cols = _CHUNK_COLS
        self._acl: RowAccess | None = None

    @classmethod
    def open(cls, kb_dir: str | os.PathLike) -> Store:
        store = cls(kb_dir)
        store.refresh()
        return store

    def refresh(self) -> bool:
        """Switch to the live generation if it changed; True when it did."""
        manifest = read_manifest(self.dir)
        if not manifest or manifest.get("live") is None:
            raise EmptyKnowledgeBase(f"no knowledge base at {self.dir}: run `kb ingest PATH` first")
        if manifest["live"] == self.generation:
            return False
        import faiss

        gen_dir = self.dir / "generations" / str(manifest["live"])
        if not gen_dir.is_dir():
            raise StoreError(f"{self.dir}: manifest names generation {manifest['live']}, which is missing")
        db = sqlite3.connect(f"file:{gen_dir / 'chunks.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        index = faiss.read_index(str(gen_dir / "index.faiss"))
        keyword = BM25Index.load(gen_dir)
        tagged = _has_departments(db)
        labels = db.execute("SELECT row, departments FROM chunks") if tagged else []
        acl = RowAccess([(row, json.loads(deps)) for row, deps in labels], keyword.rows)
        old = self._db
        # Everything of the new generation is loaded before any of it replaces the old one.
        self._index, self.keyword, self._acl, self._cols = (
            index,
            keyword,
            acl,
            _CHUNK_COLS if tagged else _LEGACY_COLS,
        )
        self._db, self.manifest, self.generation = db, manifest, manifest["live"]
        if old is not None:
            old.close()
        return True

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    def __len__(self) -> int:
        return int(self._index.ntotal) if self._index is not None else 0

    def search_vectors(
        self, query: np.ndarray, k: int, departments: Departments = None
    ) -> list[tuple[int, float]]:
        """Top-k chunk rows by inner product (= cosine, rows are unit norm) among the rows visible to
        `departments` (None = all; kb/access.py). query: (dim,). The filter is a FAISS ID selector
        inside the search, so k visible rows come back whenever k exist."""
        if len(self) == 0:
            return []
        allowed = self.visible_rows(departments)
        params, n = None, len(self)
        if allowed is not None:
            if allowed.size == 0:
                return []
            import faiss

            params, n = faiss.SearchParameters(sel=self._acl.selector_for(departments)), int(allowed.size)
        q = np.asarray(query, np.float32).reshape(1, -1)
        scores, ids = self._index.search(q, min(k, n), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def visible_rows(self, departments: Departments) -> np.ndarray | None:
        """Sorted int64 chunk rows visible to `departments`; None when every row is."""
        return self._acl.rows_for(departments) if self._acl is not None else None

    def keyword_mask(self, departments: Departments) -> np.ndarray | None:
        """Boolean mask over the keyword index's rows (BM25Index.search's `allowed`); None = all."""
        return self._acl.mask_for(departments) if self._acl is not None else None

    def search_keywords(self, query: str, k: int, departments: Departments = None) -> list[tuple[int, float]]:
        if self.keyword is None:
            return []
        return self.keyword.search(query, k, allowed=self.keyword_mask(departments))

    def chunks(self, rows: list[int]) -> dict[int, Chunk]:
        if not rows:
            return {}
        q = f"SELECT {self._cols} FROM chunks WHERE row IN ({','.join('?' * len(rows))})"
        return {r[0]: _row_to_chunk(r) for r in self.db.execute(q, rows)}

    def vectors(self, rows: list[int]) -> dict[int, np.ndarray]:
        if not rows:
            return {}
        q = f"SELECT row, vector FROM chunks WHERE row IN ({','.join('?' * len(rows))})"
        return {r: np.frombuffer(v, dtype=np.float32) for r, v in self.db.execute(q, rows)}

    def chunk_by_id(self, chunk_id: str) -> Chunk | None:
        r = self.db.execute(f"SELECT {self._cols} FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
        return _row_to_chunk(r) if r else None

    def iter_chunks(self, source: str | None = None) -> list[Chunk]:
        q = f"SELECT {self._cols} FROM chunks" + (" WHERE source = ?" if source else "") + " ORDER BY row"
        return [_row_to_chunk(r) for r in self.db.execute(q, (source,) if source else ())]

    def files(self) -> list[FileRecord]:
        return [FileRecord(*r) for r in self.db.execute("SELECT * FROM files ORDER BY source")]


class Writer:
    """Builds generation n+1 from the live one. Holds the knowledge base's write lock until
    commit() or abort(); use as a context manager so an exception aborts."""

    def __init__(self, kb_dir: str | os.PathLike, *, fresh: bool = False):
        self.dir = Path(kb_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "generations").mkdir(exist_ok=True)
        self._lock = open(self.dir / "ingest.lock", "a+")  # noqa: SIM115 - held for the writer's life
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "unknown"
            self._lock.close()
            raise IngestLocked(
                f"another ingest is running on {self.dir} (pid {holder}); wait for it"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        self._clean_stale()
        self.base = None if fresh else read_manifest(self.dir)
        live = self.base.get("live") if self.base else None
        existing = [int(p.name) for p in (self.dir / "generations").iterdir() if p.name.isdigit()]
        self.number = max(existing + [live or 0]) + 1
        self.tmp = self.dir / "generations" / f".{self.number}.tmp-{os.getpid()}"
        self.tmp.mkdir()
        db_path = self.tmp / "chunks.sqlite"
        if live is not None:
            src = sqlite3.connect(
                f"file:{self.dir / 'generations' / str(live) / 'chunks.sqlite'}?mode=ro", uri=True
            )
            self.db = sqlite3.connect(db_path)
            src.backup(self.db)
            src.close()
        else:
            self.db = sqlite3.connect(db_path)
        self.db.executescript(SCHEMA)
        if not _has_departments(self.db):  # built before access control: every chunk was public
            self.db.execute("ALTER TABLE chunks ADD COLUMN departments TEXT NOT NULL DEFAULT '[]'")
        self.closed = False

    def _clean_stale(self) -> None:
        for p in (self.dir / "generations").iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)

    def file_record(self, source: str) -> FileRecord | None:
        r = self.db.execute("SELECT * FROM files WHERE source = ?", (source,)).fetchone()
        return FileRecord(*r) if r else None

    def sources(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT source FROM files")}

    def delete_file(self, source: str) -> None:
        self.db.execute("DELETE FROM chunks WHERE source = ?", (source,))
        self.db.execute("DELETE FROM files WHERE source = ?", (source,))

    def put_file(
        self, record: FileRecord, chunks: list[Chunk], vectors: np.ndarray, tokens: list[list[str]]
    ) -> None:
        """Replace everything stored for record.source with these chunks. vectors: (len(chunks), dim)."""
        if len(chunks) != len(vectors) or len(chunks) != len(tokens):
            raise StoreError(
                f"{record.source}: {len(chunks)} chunks, {len(vectors)} vectors, {len(tokens)} token lists"
            )
        self.delete_file(record.source)
        self.db.executemany(
            'INSERT INTO chunks (id, source, page, headings, start, "end", hash, text, tokens, vector, '
            "departments) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    c.id,
                    c.source,
                    c.page,
                    json.dumps(c.headings, ensure_ascii=False),
                    c.start,
                    c.end,
                    c.hash,
                    c.text,
                    " ".join(t),
                    np.asarray(v, np.float32).tobytes(),
                    json.dumps(sorted(c.departments)),
                )
                for c, v, t in zip(chunks, vectors, tokens, strict=True)
            ],
        )
        self.db.execute(
            "INSERT INTO files VALUES (?,?,?,?,?)",
            (record.source, record.sha256, record.size, len(chunks), record.ingested_at),
        )

    def departments(self, source: str) -> list[str] | None:
        """The departments stored for a document's chunks (None when it has none)."""
        r = self.db.execute("SELECT departments FROM chunks WHERE source = ? LIMIT 1", (source,)).fetchone()
        return json.loads(r[0]) if r else None

    def set_departments(self, source: str, departments: list[str]) -> None:
        """Re-label a document's chunks; vectors and tokens stay (no re-embedding)."""
        self.db.execute(
            "UPDATE chunks SET departments = ? WHERE source = ?", (json.dumps(sorted(departments)), source)
        )

    def commit(self, manifest: dict[str, Any], keep: int = 2) -> int:
        """Build the indexes, make the generation durable, then switch the manifest to it."""
        import faiss

        self.db.commit()
        rows, vecs, toks = [], [], []
        for row, vec, tok in self.db.execute("SELECT row, vector, tokens FROM chunks ORDER BY row"):
            rows.append(row)
            vecs.append(np.frombuffer(vec, dtype=np.float32))
            toks.append(tok.split())
        self.db.execute("VACUUM")
        self.db.close()
        dim = int(manifest["embedder"]["dim"])
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if rows:
            index.add_with_ids(np.vstack(vecs).astype(np.float32), np.asarray(rows, np.int64))
        faiss.write_index(index, str(self.tmp / "index.faiss"))
        BM25Index.build(rows, toks).save(self.tmp)
        for p in self.tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        final = self.dir / "generations" / str(self.number)
        os.replace(self.tmp, final)
        fsync_dir(final.parent)
        with sqlite3.connect(f"file:{final / 'chunks.sqlite'}?mode=ro", uri=True) as db:
            n_files = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        write_manifest(
            self.dir,
            {
                **manifest,
                "live": self.number,
                "committed_at": time.time(),
                "stats": {"files": n_files, "chunks": len(rows)},
            },
        )
        self._prune(keep)
        self._release()
        return self.number

    def _prune(self, keep: int) -> None:
        gens = sorted(int(p.name) for p in (self.dir / "generations").iterdir() if p.name.isdigit())
        for n in gens[: max(0, len(gens) - max(keep, 1))]:
            shutil.rmtree(self.dir / "generations" / str(n), ignore_errors=True)

    def abort(self) -> None:
        if self.closed:
            return
        try:
            self.db.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._release()

    def _release(self) -> None:
        self.closed = True
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.closed:
            self.abort()
