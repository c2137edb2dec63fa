"""The store interface: `Store` reads one committed generation, `Writer` builds the next one.

Two backends implement it (STORES): "faiss" (SQLite + a FAISS index per generation, all on local
disk) and "milvus" (chunks and vectors in a Milvus collection, Milvus Lite or a cluster). The
knowledge base's manifest records which one built it, so `Store.open(kb_dir)` and
`Writer(kb_dir)` pick the right one by themselves; `store.backend` in the config only chooses the
backend of a new knowledge base (moving an existing one is `kb migrate`).

What both guarantee: a reader never sees an uncommitted generation (a crash or abort leaves the
previous one live), one writer at a time (flock on ingest.lock), `put_file` replaces everything
stored for a source, and `search_vectors` applies the access filter inside the search so the top k
are filled with chunks the user may see.
"""

from __future__ import annotations

import fcntl
import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from kb.errors import ConfigError, IngestLocked, StoreError
from kb.keyword import BM25Index
from kb.schema import Chunk
from kb.store.manifest import read_manifest

# Backend name → "module:StoreClass,WriterClass". Import paths, so choosing FAISS never imports pymilvus.
STORES: dict[str, str] = {
    "faiss": "kb.store.store:FaissStore,FaissWriter",  # SQLite + FAISS files per generation
    "milvus": "kb.store.milvus_store:MilvusStore,MilvusWriter",  # Milvus Lite file or cluster URI
}


# The per-generation SQLite bookkeeping of ingested files, the same for every backend (FileRecord's fields).
FILES_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    source TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    n_chunks INTEGER NOT NULL, ingested_at REAL NOT NULL
);
"""


@dataclass
class FileRecord:
    source: str
    sha256: str
    size: int
    n_chunks: int
    ingested_at: float


def backend_classes(name: str) -> tuple[type[Store], type[Writer]]:
    if name not in STORES:
        raise ConfigError(f"store.backend: unknown backend {name!r} (known: {', '.join(STORES)})")
    module, _, classes = STORES[name].partition(":")
    reader, writer = classes.split(",")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"store.backend={name!r} needs a package that is not installed ({e.name}): "
            f"pip install 'kb[{name}]'"
        ) from None
    return getattr(mod, reader), getattr(mod, writer)


def backend_of(manifest: dict[str, Any] | None) -> str:
    """The backend that built this knowledge base; manifests written before backends existed are FAISS."""
    return ((manifest or {}).get("store") or {}).get("backend", "faiss")


def resolve_backend(kb_dir: Path, wanted: str) -> str:
    """The backend a writer must use: the existing knowledge base's, or `wanted` (default faiss) for
    a new one. Asking for another backend than the one that holds the data is an error, not a
    silent switch: the data would be left behind."""
    manifest = read_manifest(kb_dir)
    current = backend_of(manifest) if manifest and manifest.get("live") is not None else None
    if current and wanted and wanted != current:
        raise StoreError(
            f"{kb_dir} is a {current} knowledge base but store.backend is {wanted!r}: "
            f"run `kb migrate --to {wanted} URI --kb {kb_dir}` to move it"
        )
    return current or wanted or "faiss"


def acquire_write_lock(kb_dir: Path) -> IO[str]:
    """flock on ingest.lock, holding our pid; refused at once (IngestLocked) when another writer has it."""
    lock = open(kb_dir / "ingest.lock", "a+")  # noqa: SIM115 - held for the writer's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise IngestLocked(f"another ingest is running on {kb_dir} (pid {holder}); wait for it") from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def release_write_lock(lock: IO[str]) -> None:
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()


class Store(ABC):
    """Read-only view of one committed generation. Cheap to keep open; `refresh()` follows the live one.

    Rows are the backend's integer chunk ids within a generation: `search_vectors` and
    `keyword.search` return them, `chunks`/`vectors` resolve them. `departments` is the user's
    access (None = unrestricted); a chunk is visible iff its departments are empty or intersect it.
    """

    backend: str = ""

    def __init__(self, kb_dir: str | os.PathLike):
        self.dir = Path(kb_dir)
        self.generation: int | None = None
        self.manifest: dict[str, Any] = {}
        self.keyword: BM25Index | None = None

    @classmethod
    def open(cls, kb_dir: str | os.PathLike) -> Store:
        if cls is Store:
            cls = backend_classes(backend_of(read_manifest(Path(kb_dir))))[0]
        store = cls(kb_dir)
        store.refresh()
        return store

    def _check_backend(self, manifest: dict[str, Any]) -> None:
        if backend_of(manifest) != self.backend:
            raise StoreError(
                f"{self.dir} moved to the {backend_of(manifest)} backend (kb migrate); reopen the store"
            )

    @abstractmethod
    def refresh(self) -> bool:
        """Switch to the live generation if it changed; True when it did."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def search_vectors(
        self, query: np.ndarray, k: int, departments: frozenset[str] | None = None
    ) -> list[tuple[int, float]]:
        """Top-k visible rows by inner product (= cosine, rows are unit norm), best first. query: (dim,)."""

    @abstractmethod
    def keyword_mask(self, departments: frozenset[str] | None) -> np.ndarray | None:
        """Boolean mask over `keyword.rows` of the rows visible to `departments`; None = all visible."""

    def search_keywords(
        self, query: str, k: int, departments: frozenset[str] | None = None
    ) -> list[tuple[int, float]]:
        """BM25 top-k among the rows visible to `departments`, filtered inside the search."""
        if self.keyword is None:
            return []
        return self.keyword.search(query, k, allowed=self.keyword_mask(departments))

    @abstractmethod
    def chunks(self, rows: list[int]) -> dict[int, Chunk]: ...

    @abstractmethod
    def vectors(self, rows: list[int]) -> dict[int, np.ndarray]: ...

    @abstractmethod
    def chunk_by_id(self, chunk_id: str) -> Chunk | None: ...

    @abstractmethod
    def iter_chunks(self, source: str | None = None) -> list[Chunk]:
        """Chunks of the generation (of one source), in insertion order."""

    @abstractmethod
    def files(self) -> list[FileRecord]: ...

    @abstractmethod
    def export(self) -> Iterator[tuple[FileRecord, list[Chunk], np.ndarray, list[list[str]]]]:
        """Everything stored, one file at a time (record, chunks, vectors, tokens): what `put_file`
        takes, so any backend's writer can rebuild it without re-embedding (kb migrate)."""


class Writer(ABC):
    """Builds generation n+1 from the live one. Holds the knowledge base's write lock until
    commit() or abort(); use as a context manager so an exception aborts.

    `Writer(kb_dir, ...)` returns the writer of the knowledge base's backend (see resolve_backend).
    `store` is the config's StoreConfig (backend, uri, collection); None = the defaults.
    """

    backend: str = ""
    closed: bool = False

    def __new__(cls, kb_dir: str | os.PathLike, *, fresh: bool = False, store: Any = None) -> Writer:
        if cls is Writer:
            cls = backend_classes(resolve_backend(Path(kb_dir), getattr(store, "backend", "")))[1]
        return super().__new__(cls)

    @abstractmethod
    def file_record(self, source: str) -> FileRecord | None: ...

    @abstractmethod
    def sources(self) -> set[str]: ...

    @abstractmethod
    def delete_file(self, source: str) -> None: ...

    @abstractmethod
    def put_file(
        self, record: FileRecord, chunks: list[Chunk], vectors: np.ndarray, tokens: list[list[str]]
    ) -> None:
        """Replace everything stored for record.source with these chunks. vectors: (len(chunks), dim)."""

    @abstractmethod
    def commit(
        self,
        manifest: dict[str, Any],
        keep: int = 2,
        check: Callable[[Store], None] | None = None,
        index: Any = None,
    ) -> int:
        """Make the generation durable, then switch the manifest to it; returns its number.
        `index` is the config's IndexConfig (the FAISS backend's index type; Milvus has store.index).
        `check` (kb migrate's verification) gets a reader of the finished generation before the
        switch; if it raises, the generation is discarded and the live one stays."""

    @abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.closed:
            self.abort()


def check_put(record: FileRecord, chunks: list[Chunk], vectors: np.ndarray, tokens: list[list[str]]) -> None:
    if len(chunks) != len(vectors) or len(chunks) != len(tokens):
        raise StoreError(
            f"{record.source}: {len(chunks)} chunks, {len(vectors)} vectors, {len(tokens)} token lists"
        )
