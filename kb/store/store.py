"""Store (reader of the live generation) and Writer (builder of the next one).

Layout of a knowledge base directory:
    manifest.json            live generation, embedder, chunk settings, versions, stats
    ingest.lock              flock held by the one writer
    generations/<n>/         chunks.sqlite (text, metadata, vectors as float32 blobs, tokens),
                             index.faiss (vectors by chunk row; type in the manifest's "index"),
                             bm25_*.npy/json (term counts)
    generations/.<n>.tmp-*/  a generation being built; deleted if a crash left it behind

A commit updates the previous generation's FAISS and BM25 indexes with the rows deleted and added
since, rather than rebuilding them from every stored chunk (kb/store/faiss_index.py says when the
vector index is rebuilt instead).
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

from kb.config import IndexConfig
from kb.errors import EmptyKnowledgeBase, IngestLocked, StoreError
from kb.keyword import BM25Index
from kb.schema import Chunk
from kb.store import faiss_index
from kb.store.manifest import fsync_dir, read_manifest, write_manifest

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    source TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    n_chunks INTEGER NOT NULL, ingested_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    row INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, source TEXT NOT NULL, page INTEGER,
    headings TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, hash TEXT NOT NULL,
    text TEXT NOT NULL, tokens TEXT NOT NULL, vector BLOB NOT NULL
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
    _, cid, source, page, headings, start, end, h, text = r
    return Chunk(
        id=cid,
        text=text,
        source=source,
        page=page,
        headings=json.loads(headings),
        start=start,
        end=end,
        hash=h,
    )


_CHUNK_COLS = 'row, id, source, page, headings, start, "end", hash, text'


class Store:
    """Read-only view of one committed generation. Cheap to keep open; `refresh()` follows the live one."""

    def __init__(self, kb_dir: str | os.PathLike):
        self.dir = Path(kb_dir)
        self.generation: int | None = None
        self.manifest: dict[str, Any] = {}
        self._db: sqlite3.Connection | None = None
        self._index = None
        self.keyword: BM25Index | None = None

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
        self._index = faiss.read_index(str(gen_dir / "index.faiss"))
        self._search_params = faiss_index.search_params(manifest.get("index", {"type": "flat"}))
        if BM25Index.exists(gen_dir):
            self.keyword = BM25Index.load(gen_dir)
        else:  # a generation from before term counts were stored: count its stored tokens once
            stored = db.execute("SELECT row, tokens FROM chunks ORDER BY row").fetchall()
            self.keyword = BM25Index.build([r for r, _ in stored], [t.split() for _, t in stored])
        if self._db is not None:
            self._db.close()
        self._db, self.manifest, self.generation = db, manifest, manifest["live"]
        return True

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    def __len__(self) -> int:
        return int(self._index.ntotal) if self._index is not None else 0

    def search_vectors(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k chunk rows by inner product (= cosine, rows are unit norm). query: (dim,)."""
        if len(self) == 0:
            return []
        scores, ids = self._index.search(
            np.asarray(query, np.float32).reshape(1, -1), min(k, len(self)), params=self._search_params
        )
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def chunks(self, rows: list[int]) -> dict[int, Chunk]:
        if not rows:
            return {}
        q = f"SELECT {_CHUNK_COLS} FROM chunks WHERE row IN ({','.join('?' * len(rows))})"
        return {r[0]: _row_to_chunk(r) for r in self.db.execute(q, rows)}

    def vectors(self, rows: list[int]) -> dict[int, np.ndarray]:
        if not rows:
            return {}
        q = f"SELECT row, vector FROM chunks WHERE row IN ({','.join('?' * len(rows))})"
        return {r: np.frombuffer(v, dtype=np.float32) for r, v in self.db.execute(q, rows)}

    def chunk_by_id(self, chunk_id: str) -> Chunk | None:
        r = self.db.execute(f"SELECT {_CHUNK_COLS} FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
        return _row_to_chunk(r) if r else None

    def iter_chunks(self, source: str | None = None) -> list[Chunk]:
        q = f"SELECT {_CHUNK_COLS} FROM chunks" + (" WHERE source = ?" if source else "") + " ORDER BY row"
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
        self.base_dir = self.dir / "generations" / str(live) if live is not None else None
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
        # What this writer changes, so that commit can update the live indexes instead of rebuilding:
        # rows deleted from the copy, and rows added (autoincrement: all above base_max_row).
        self.base_max_row = self.db.execute("SELECT COALESCE(MAX(row), 0) FROM chunks").fetchone()[0]
        self.deleted_rows: list[int] = []
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
        self.deleted_rows.extend(
            r for (r,) in self.db.execute("SELECT row FROM chunks WHERE source = ?", (source,))
        )
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
            'INSERT INTO chunks (id, source, page, headings, start, "end", hash, text, tokens, vector) '
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
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
                )
                for c, v, t in zip(chunks, vectors, tokens, strict=True)
            ],
        )
        self.db.execute(
            "INSERT INTO files VALUES (?,?,?,?,?)",
            (record.source, record.sha256, record.size, len(chunks), record.ingested_at),
        )

    def commit(self, manifest: dict[str, Any], keep: int = 2, index: IndexConfig | None = None) -> int:
        """Build (or update) the indexes, make the generation durable, then switch the manifest to it.
        The manifest records the vector index's type and parameters under "index"."""
        self.db.commit()
        info = self._write_indexes(int(manifest["embedder"]["dim"]), index or IndexConfig())
        n_chunks = info.pop("chunks")
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
                "index": info,
                "stats": {"files": n_files, "chunks": n_chunks},
            },
        )
        self._prune(keep)
        self._release()
        return self.number

    def _vectors(self, where: str = "", args: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
        rows, vecs = [], []
        for row, vec in self.db.execute(f"SELECT row, vector FROM chunks {where} ORDER BY row", args):
            rows.append(row)
            vecs.append(np.frombuffer(vec, dtype=np.float32))
        return np.asarray(rows, np.int64), (np.vstack(vecs) if vecs else np.zeros((0, 0), np.float32))

    def _write_indexes(self, dim: int, cfg: IndexConfig) -> dict[str, Any]:
        """index.faiss and bm25_* for this generation, from the previous generation's plus this
        writer's changes where possible; the FAISS info dict for the manifest (+ "chunks")."""
        import faiss

        n = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        removed = np.asarray(sorted(set(self.deleted_rows)), np.int64)
        base = self.base_dir
        prev_info = (self.base or {}).get("index")
        new_rows, new_toks = [], []
        for row, tok in self.db.execute(
            "SELECT row, tokens FROM chunks WHERE row > ? ORDER BY row", (self.base_max_row,)
        ):
            new_rows.append(row)
            new_toks.append(tok.split())
        if base is not None and BM25Index.exists(base):
            keyword = BM25Index.load(base).updated(removed, new_rows, new_toks)
            kw_mode = "incremental"
        else:
            rows, toks = [], []
            for row, tok in self.db.execute("SELECT row, tokens FROM chunks ORDER BY row"):
                rows.append(row)
                toks.append(tok.split())
            keyword, kw_mode = BM25Index.build(rows, toks), "full"
        keyword.save(self.tmp)
        del keyword

        result = None
        if base is not None and prev_info and (base / "index.faiss").exists():
            prev = faiss.read_index(str(base / "index.faiss"))
            result = faiss_index.update(
                prev,
                prev_info,
                removed,
                np.asarray(new_rows, np.int64),
                lambda: self._vectors("WHERE row > ?", (self.base_max_row,))[1],
                n,
                cfg,
            )
        if result is None:
            rows, vecs = self._vectors()
            result = faiss_index.build(vecs.reshape(len(rows), dim), rows, cfg)
            mode = "full"
        else:
            mode = "incremental"
        index, info = result
        faiss.write_index(index, str(self.tmp / "index.faiss"))
        if len(removed):
            self.db.execute("VACUUM")  # space of deleted rows back; an add-only commit has none
        self.db.close()
        return {**info, "built": mode, "keyword_built": kw_mode, "chunks": n}

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
