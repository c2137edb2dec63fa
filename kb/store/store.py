"""The FAISS + SQLite backend: FaissStore (reader of the live generation) and FaissWriter (builder
of the next one). Everything lives on local disk in the knowledge base directory.

`Store` and `Writer`, imported here, are the interface (kb/store/base.py): `Store.open(kb_dir)` and
`Writer(kb_dir)` return this backend or the Milvus one, whichever the manifest names.

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

import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb.access import Departments
from kb.config import IndexConfig
from kb.errors import EmptyKnowledgeBase, StoreError
from kb.keyword import BM25Index
from kb.schema import Chunk
from kb.store import faiss_index
from kb.store.acl import RowAccess
from kb.store.base import (
    FILES_SCHEMA,
    FileRecord,
    Store,
    Writer,
    acquire_write_lock,
    check_put,
    release_write_lock,
)
from kb.store.manifest import fsync_dir, read_manifest, write_manifest

SCHEMA = (
    FILES_SCHEMA
    + """
CREATE TABLE IF NOT EXISTS chunks (
    row INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, source TEXT NOT NULL, page INTEGER,
    headings TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, hash TEXT NOT NULL,
    text TEXT NOT NULL, tokens TEXT NOT NULL, vector BLOB NOT NULL,
    departments TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE INDEX IF NOT EXISTS chunks_id ON chunks(id);
"""
)


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


@dataclass(frozen=True)
class _Snapshot:
    """Everything a reader needs from one committed generation, swapped as a whole."""

    generation: int
    manifest: dict[str, Any]
    db: sqlite3.Connection
    index: Any  # faiss.Index
    keyword: BM25Index
    cols: str  # the chunk columns to select (generations from before access control lack departments)
    acl: RowAccess  # departments → rows of this generation, for filtering inside the searches


class FaissStore(Store):
    """Thread-safe: a thread keeps reading the generation it last refreshed to (its pinned snapshot)
    until it calls `refresh()` itself, so a search never mixes two generations when another thread
    switches meanwhile. Snapshots are shared between threads (loaded once per generation). SQLite
    connections are opened read-only and used from several threads (SQLite's serialized mode)."""

    backend = "faiss"

    def __init__(self, kb_dir: str | os.PathLike):
        # No Store.__init__: generation, manifest and keyword are read-only views of the snapshot.
        self.dir = Path(kb_dir)
        self._latest: _Snapshot | None = None
        self._local = threading.local()
        self._load_lock = threading.Lock()

    @property
    def _snap(self) -> _Snapshot | None:
        snap = getattr(self._local, "snap", None)
        if snap is None:
            snap = self._local.snap = self._latest
        return snap

    @property
    def generation(self) -> int | None:  # type: ignore[override]
        return self._snap.generation if self._snap else None

    @property
    def manifest(self) -> dict[str, Any]:  # type: ignore[override]
        return self._snap.manifest if self._snap else {}

    @property
    def keyword(self) -> BM25Index | None:  # type: ignore[override]
        return self._snap.keyword if self._snap else None

    @property
    def _index(self) -> Any:
        return self._snap.index if self._snap else None

    @property
    def _cols(self) -> str:
        assert self._snap is not None
        return self._snap.cols

    def refresh(self) -> bool:
        """Switch this thread to the live generation if it changed; True when it did."""
        for attempt in range(3):
            manifest = read_manifest(self.dir)
            if not manifest or manifest.get("live") is None:
                raise EmptyKnowledgeBase(f"no knowledge base at {self.dir}: run `kb ingest PATH` first")
            live = manifest["live"]
            mine = self._snap
            if mine is not None and mine.generation == live:
                return False
            self._check_backend(manifest)
            with self._load_lock:
                latest = self._latest
                if latest is None or latest.generation < live:
                    try:
                        latest = self._load(manifest)
                    except StoreError:
                        # Two commits since the manifest was read pruned this generation: read it again.
                        if attempt == 2 or read_manifest(self.dir) == manifest:
                            raise
                        continue
                    self._latest = latest
            self._local.snap = latest
            return mine is None or latest.generation != mine.generation
        return False

    def _load(self, manifest: dict[str, Any]) -> _Snapshot:
        import faiss

        gen_dir = self.dir / "generations" / str(manifest["live"])
        if not gen_dir.is_dir():
            raise StoreError(f"{self.dir}: manifest names generation {manifest['live']}, which is missing")
        try:
            db = sqlite3.connect(
                f"file:{gen_dir / 'chunks.sqlite'}?mode=ro", uri=True, check_same_thread=False
            )
            index = faiss.read_index(str(gen_dir / "index.faiss"))
            if BM25Index.exists(gen_dir):
                keyword = BM25Index.load(gen_dir)
            else:  # a generation from before term counts were stored: count its stored tokens once
                stored = db.execute("SELECT row, tokens FROM chunks ORDER BY row").fetchall()
                keyword = BM25Index.build([r for r, _ in stored], [t.split() for _, t in stored])
            # Generations written before access control have no departments column: all public.
            tagged = _has_departments(db)
            labels = db.execute("SELECT row, departments FROM chunks").fetchall() if tagged else []
        except (sqlite3.Error, RuntimeError, OSError) as e:  # faiss raises RuntimeError
            raise StoreError(f"{gen_dir}: cannot open generation {manifest['live']}: {e}") from e
        acl = RowAccess([(row, json.loads(deps)) for row, deps in labels], keyword.rows)
        cols = 'row, id, source, page, headings, start, "end", hash, text, ' + (
            "departments" if tagged else "'[]'"
        )
        return _Snapshot(manifest["live"], manifest, db, index, keyword, cols, acl)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._snap is not None
        return self._snap.db

    def __len__(self) -> int:
        return int(self._index.ntotal) if self._index is not None else 0

    def search_vectors(
        self, query: np.ndarray, k: int, departments: Departments = None
    ) -> list[tuple[int, float]]:
        """Top-k chunk rows by inner product (= cosine, rows are unit norm) among the rows visible to
        `departments` (None = all; kb/access.py). query: (dim,). The filter is a FAISS ID selector
        inside the search, so k visible rows come back whenever k exist."""
        snap = self._snap
        if snap is None or snap.index.ntotal == 0:
            return []
        info = snap.manifest.get("index", {"type": "flat"})
        allowed = snap.acl.rows_for(departments)
        n = int(snap.index.ntotal)
        params = faiss_index.search_params(info)
        if allowed is not None:
            if allowed.size == 0:
                return []
            params, n = (
                faiss_index.search_params(info, sel=snap.acl.selector_for(departments)),
                int(allowed.size),
            )
        q = np.asarray(query, np.float32).reshape(1, -1)
        scores, ids = snap.index.search(q, min(k, n), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def keyword_mask(self, departments: Departments) -> np.ndarray | None:
        return self._snap.acl.mask_for(departments) if self._snap is not None else None

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
        if not _has_departments(self.db):  # built before access control: every chunk was public
            self.db.execute("ALTER TABLE chunks ADD COLUMN departments TEXT NOT NULL DEFAULT '[]'")
        # What this writer changes, so that commit can update the live indexes instead of rebuilding:
        # rows deleted from the copy, and rows added (autoincrement: all above base_max_row).
        self.base_max_row = self.db.execute("SELECT COALESCE(MAX(row), 0) FROM chunks").fetchone()[0]
        self.deleted_rows: list[int] = []
        self.closed = False

    def _clean_stale(self) -> None:
        """Remove what a crashed writer left: half-built generations and manifest temporaries (only a
        writer, holding this lock, writes either)."""
        for p in (self.dir / "generations").iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)
        for p in self.dir.glob(".manifest.json.*.tmp"):
            p.unlink(missing_ok=True)

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

    def departments(self, source: str) -> list[str] | None:
        """The departments stored for a document's chunks (None when it has none)."""
        r = self.db.execute("SELECT departments FROM chunks WHERE source = ? LIMIT 1", (source,)).fetchone()
        return json.loads(r[0]) if r else None

    def set_departments(self, source: str, departments: list[str]) -> None:
        """Re-label a document's chunks; vectors and tokens stay (no re-embedding)."""
        self.db.execute(
            "UPDATE chunks SET departments = ? WHERE source = ?", (json.dumps(sorted(departments)), source)
        )

    def commit(
        self,
        manifest: dict[str, Any],
        keep: int = 2,
        check: Callable[[Store], None] | None = None,
        index: IndexConfig | None = None,
    ) -> int:
        """Build (or update) the indexes, make the generation durable, then switch the manifest to it.
        The manifest records the vector index's type and parameters under "index". `check(reader)`
        runs on the new generation before it goes live; raising keeps the old one live."""
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
        manifest = {
            **manifest,
            "store": {"backend": self.backend},
            "live": self.number,
            "committed_at": time.time(),
            "index": info,
            "stats": {"files": n_files, "chunks": n_chunks},
        }
        if check is not None:
            # The new generation, read before it goes live: a failed check leaves the old one live.
            reader = FaissStore(self.dir)
            try:
                reader._latest = reader._load(manifest)
                check(reader)
            except BaseException:
                if reader._latest is not None:
                    reader._latest.db.close()
                shutil.rmtree(final, ignore_errors=True)
                self._release()
                raise
            reader.db.close()
        write_manifest(self.dir, manifest)
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
        release_write_lock(self._lock)
