"""Move a knowledge base to another store backend without re-embedding (`kb migrate`).

Every file's chunks, vectors and tokens are read from the live generation (Store.export) and written
by the target backend's writer into a new generation; before the switch, the new generation is
checked against the old one (same file and chunk counts, sample searches with the same top
results), so a failed check leaves the old backend live. The new manifest keeps the embedder,
chunk settings and roots, so the next `kb ingest` is incremental.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kb.config import StoreConfig
from kb.errors import StoreError
from kb.store.base import Store, backend_classes

NOT_CARRIED = ("format", "live", "committed_at", "stats", "store")  # the writer sets these anew


@dataclass
class MigrateReport:
    source: str
    target: str
    uri: str
    files: int
    chunks: int
    searches: int
    agreed: int
    overlap: float  # mean share of the top-k chunk ids both backends return
    generation: int
    seconds: float

    def to_json(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in vars(self).items()}

    def summary(self) -> str:
        where = (self.uri or "Milvus Lite file in the knowledge base") if self.target == "milvus" else ""
        return (
            f"migrate: {self.files} files, {self.chunks} chunks copied from {self.source} to {self.target}"
            f"{f' ({where})' if where else ''} without re-embedding; {self.agreed}/{self.searches} sample "
            f"searches agree (top-10 overlap {self.overlap:.2f}); generation {self.generation} live "
            f"in {self.seconds:.1f}s"
        )


def _top(store: Store, q: np.ndarray, k: int) -> list[tuple[str, float]]:
    hits = store.search_vectors(q, k)
    chunks = store.chunks([r for r, _ in hits])
    return [(chunks[r].id, s) for r, s in hits]


def compare(
    src: Store, dst: Store, samples: int = 5, k: int = 10, tol: float = 1e-4
) -> tuple[int, int, float]:
    """Counts must match; then `samples` random queries and, for each, its best chunk's own vector
    are searched in both. A search agrees when the top hit is the same chunk (or a tie within
    `tol`) and at least 80% of the top k are the same chunks (approximate indexes may swap a few).
    Returns (searches, agreed, mean overlap); raises StoreError when anything disagrees."""
    if len(src) != len(dst) or len(src.files()) != len(dst.files()):
        raise StoreError(
            f"migration check: {len(dst.files())} files / {len(dst)} chunks written, "
            f"{len(src.files())} / {len(src)} expected"
        )
    if len(src) == 0:
        return 0, 0, 1.0
    dim = int(src.manifest["embedder"]["dim"])
    rng = np.random.default_rng(0)
    queries = []
    for _ in range(samples):
        q = rng.standard_normal(dim).astype(np.float32)
        q /= np.linalg.norm(q)
        queries.append(q)
        ((row, _),) = src.search_vectors(q, 1)
        queries.append(src.vectors([row])[row])
    agreed, overlaps = 0, []
    for q in queries:
        a, b = _top(src, q, k), _top(dst, q, k)
        overlap = len({i for i, _ in a} & {i for i, _ in b}) / max(len(a), 1)
        overlaps.append(overlap)
        same_top = bool(a and b) and (a[0][0] == b[0][0] or abs(a[0][1] - b[0][1]) <= tol)
        agreed += same_top and overlap >= 0.8
    if agreed < len(queries):
        raise StoreError(
            f"migration check: only {agreed} of {len(queries)} sample searches return the same top chunks"
        )
    return len(queries), agreed, float(np.mean(overlaps))


def migrate(
    kb_dir: str | os.PathLike,
    to: str,
    uri: str = "",
    *,
    collection: str = "",
    keep: int = 2,
    progress: bool = True,
) -> MigrateReport:
    t0 = time.perf_counter()
    src = Store.open(kb_dir)
    if src.backend == to:
        raise StoreError(f"{kb_dir} already uses the {to} backend")
    writer_cls = backend_classes(to)[1]
    manifest = {k: v for k, v in src.manifest.items() if k not in NOT_CARRIED}
    files = len(src.files())
    result: dict[str, tuple[int, int, float]] = {}

    def check(dst: Store) -> None:
        result["check"] = compare(src, dst)

    with writer_cls(
        Path(kb_dir), fresh=True, store=StoreConfig(backend=to, uri=uri, collection=collection)
    ) as w:
        bar = tqdm(
            src.export(), total=files, desc="migrating", unit="file", disable=not progress, file=sys.stderr
        )
        for record, chunks, vectors, tokens in bar:
            w.put_file(record, chunks, vectors, tokens)
        generation = w.commit(manifest, keep=keep, check=check)
    searches, agreed, overlap = result["check"]
    return MigrateReport(
        source=src.backend,
        target=to,
        uri=uri,
        files=files,
        chunks=len(src),
        searches=searches,
        agreed=agreed,
        overlap=overlap,
        generation=generation,
        seconds=time.perf_counter() - t0,
    )
