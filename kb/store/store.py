"""The FAISS + SQLite backend: FaissStore (reader of the live generation) and FaissWriter (builder
of the next one). Everything lives on local disk in the knowledge base directory.

`Store` and `Writer`, imported here, are the interface (kb/store/base.py): `Store.open(kb_dir)` and
`Writer(kb_dir)` return this backend or the Milvus one, whichever the manifest names.

Layout of a knowledge base directory:
    manifest.json            live generation, embedder, chunk settings, versions, stats
    ingest.lock              flock held by the one writer
    generations/<n>/         chunks.sqlite (text, metadata, vectors as float32 blobs, tokens),
                             index.faiss (vectors by chunk row), bm25_*.npy/json
    generations/.<n>.tmp-*/  a generation being built; deleted if a crash left it behind
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kb.errors import EmptyKnowledgeBase, StoreError
from kb.keyword import BM25Index
from kb.schema import Chunk
from kb.store.base import (
    FileRecord,
    Store,
    Writer,
    acquire_write_lock,
    check_put,
    release_write_lock,
)
from kb.store.manifest import fsync_dir, read_manifest, write_manifest

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    source TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    n_chunks INTEGER NOT NULL, ingested_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    row INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, source TEXT NOT NULL, page INTEGER,
    headings TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, hash TEXT NOT NULL,
    text TEXT NOT NULL, tokens TEXT NOT NULL, vector BLOB NOT NULL, departments TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE INDEX IF NOT EXISTS chunks_id ON chunks(id);
"""


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


def _has_departments(db: sqlite3.Connection) -> bool:
    return "departments" in {r[1] for r in db.execute("PRAGMA table_info(chunks)")}


class FaissStore(Store):
    backend = "faiss"

    def __init__(self, kb_dir: str | os.PathLike):
        super().__init__(kb_dir)
        self._db: sqlite3.Connection | None = None
        self._index = None
        self._cols = self._dept_col = ""
        self._access: tuple[np.ndarray, dict[str, np.ndarray]] | None = None
        self._selectors: dict[frozenset[str], tuple[int, Any]] = {}  # departments → (visible rows, selector)

    def refresh(self) -> bool:
        manifest = read_manifest(self.dir)
        if not manifest or manifest.get("live") is None:
            raise EmptyKnowledgeBase(f"no knowledge base at {self.dir}: run `kb ingest PATH` first")
        if manifest["live"] == self.generation:
            return False
        self._check_backend(manifest)
        self._load(manifest)
        return True

    def _load(self, manifest: dict[str, Any]) -> None:
        import faiss

        gen_dir = self.dir / "generations" / str(manifest["live"])
        if not gen_dir.is_dir():
            raise StoreError(f"{self.dir}: manifest names generation {manifest['live']}, which is missing")
        db = sqlite3.connect(f"file:{gen_dir / 'chunks.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        self._index = faiss.read_index(str(gen_dir / "index.faiss"))
        self.keyword = BM25Index.load(gen_dir)
        # Generations written before access control have no departments column: all public.
        self._dept_col = "departments" if _has_departments(db) else "'[]'"
        self._cols = f'row, id, source, page, headings, start, "end", hash, text, {self._dept_col}'
        if self._db is not None:
            self._db.close()
        self._db, self.manifest, self.generation = db, manifest, manifest["live"]
        self._access = None
        self._selectors = {}

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    def __len__(self) -> int:
        return int(self._index.ntotal) if self._index is not None else 0

    def search_vectors(
        self, query: np.ndarray, k: int, departments: frozenset[str] | None = None
    ) -> list[tuple[int, float]]:
        if len(self) == 0:
            return []
        q = np.asarray(query, np.float32).reshape(1, -1)
        if departments is None:
            scores, ids = self._index.search(q, min(k, len(self)))
        else:
            import faiss

            if departments not in self._selectors:
                if len(self._selectors) >= 256:  # bounded: department sets are few in practice
                    self._selectors.clear()
                allowed = self._visible_rows(departments)
                self._selectors[departments] = (
                    allowed.size,
                    faiss.IDSelectorBatch(allowed),
                )  # copies the ids
            n_allowed, selector = self._selectors[departments]
            if n_allowed == 0:
                return []
            params = faiss.SearchParameters(sel=selector)
            scores, ids = self._index.search(q, min(k, n_allowed), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def _visible_rows(self, departments: frozenset[str]) -> np.ndarray:
        """Rows a user of these departments may see: public ones, and those sharing a department.
        The row lists per department are read once per generation."""
        if self._access is None:
            public: list[int] = []
            by_dept: dict[str, list[int]] = {}
            for row, deps in self.db.execute(f"SELECT row, {self._dept_col} FROM chunks"):
                names = json.loads(deps)
                if not names:
                    public.append(row)
                for d in names:
                    by_dept.setdefault(d, []).append(row)
            self._access = (
                np.asarray(public, np.int64),
                {d: np.asarray(r, np.int64) for d, r in by_dept.items()},
            )
        public_rows, by_dept_rows = self._access
        parts = [public_rows] + [by_dept_rows[d] for d in departments if d in by_dept_rows]
        return np.unique(np.concatenate(parts))

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

    def export(self) -> Iterator[tuple[FileRecord, list[Chunk], np.ndarray, list[list[str]]]]:
        for record in self.files():
            rows = self.db.execute(
                f"SELECT {self._cols}, tokens, vector FROM chunks WHERE source = ? ORDER BY row",
                (record.source,),
            ).fetchall()
            chunks = [_row_to_chunk(r[:10]) for r in rows]
            dim = int(self.manifest["embedder"]["dim"])
            vectors = np.vstack([np.frombuffer(r[11], np.float32) for r in rows] or [np.zeros((0, dim))])
            yield record, chunks, vectors, [r[10].split() for r in rows]


class FaissWriter(Writer):
    backend = "faiss"

    def __init__(self, kb_dir: str | os.PathLike, *, fresh: bool = False, store: Any = None):
        self.dir = Path(kb_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "generations").mkdir(exist_ok=True)
        self._lock = acquire_write_lock(self.dir)
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
        if not _has_departments(self.db):  # a generation from before access control
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
        check_put(record, chunks, vectors, tokens)
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
                    json.dumps(sorted(c.departments), ensure_ascii=False),
                )
                for c, v, t in zip(chunks, vectors, tokens, strict=True)
            ],
        )
        self.db.execute(
            "INSERT INTO files VALUES (?,?,?,?,?)",
            (record.source, record.sha256, record.size, len(chunks), record.ingested_at),
        )

    def commit(
        self, manifest: dict[str, Any], keep: int = 2, check: Callable[[Store], None] | None = None
    ) -> int:
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
        manifest = {
            **manifest,
            "store": {"backend": self.backend},
            "live": self.number,
            "committed_at": time.time(),
            "stats": {"files": n_files, "chunks": len(rows)},
        }
        if check is not None:
            reader = FaissStore(self.dir)
            try:
                reader._load(manifest)
                check(reader)
            except BaseException:
                if reader._db is not None:
                    reader._db.close()
                shutil.rmtree(final, ignore_errors=True)
                self._release()
                raise
            reader.db.close()
        write_manifest(self.dir, manifest)
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
        release_write_lock(self._lock)
