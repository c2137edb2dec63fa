"""The FAISS vector index of a generation: its type chosen by size, built in full or updated in place.

Types (config `index.type`, `auto` picks by the number of chunks):
    flat  IndexIDMap2(IndexFlatIP): exact; search time grows linearly (~1.5 GB read per million
          384-d chunks per query), fine up to `index.flat_max` chunks.
    ivf   IndexIVFFlat (inner product): k-means cells, a query scans `nprobe` of `nlist` cells.
          Supports add and remove, so a changed file updates it in place; retrained (full build)
          when the collection grew or shrank by `index.retrain_growth` since training.
    hnsw  IndexIDMap2(IndexHNSWFlat): graph search; adds in place but cannot remove, so any deletion
          rebuilds it. Slower to build than ivf on 2 cores (bench/README.md has the figures).
All three take a faiss IDSelector through `search_params(info, sel=...)` (SearchParameters*.sel).
`info` (a plain dict) is what the manifest records under "index".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from kb.config import IndexConfig
from kb.errors import ConfigError

TYPES = ("flat", "ivf", "hnsw")


def choose_type(n: int, cfg: IndexConfig) -> str:
    if cfg.type == "auto":
        return "flat" if n <= cfg.flat_max else cfg.large
    if cfg.type not in TYPES:
        raise ConfigError(f"index.type must be auto, {', '.join(TYPES)}; got {cfg.type!r}")
    return cfg.type


def nlist_for(n: int, cfg: IndexConfig) -> int:
    """IVF cells: `index.ivf_nlist`, or 2·√n (≈ 2000 at 1M: ~500 vectors a cell), capped so that every
    cell gets training points (faiss wants ≥ 39 per centroid)."""
    want = cfg.ivf_nlist or int(2 * math.sqrt(max(n, 1)))
    return max(1, min(want, n // 39))


def build(vectors: np.ndarray, ids: np.ndarray, cfg: IndexConfig, kind: str | None = None):
    """A new index of `kind` (default: chosen by size) over vectors (n, dim) float32 with int64 ids.
    Returns (index, info)."""
    import faiss

    n, dim = vectors.shape
    kind = kind or choose_type(n, cfg)
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        info = {"type": "flat"}
    elif kind == "ivf":
        nlist = nlist_for(n, cfg)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = cfg.ivf_train_iters
        # Training on a sample: k-means cost grows with points × cells; 64 points a cell suffice.
        sample = vectors
        if n > 64 * nlist:
            pick = np.random.default_rng(0).choice(n, 64 * nlist, replace=False)
            sample = vectors[np.sort(pick)]
        index.train(np.ascontiguousarray(sample))
        index.nprobe = min(cfg.ivf_nprobe, nlist)
        info = {"type": "ivf", "nlist": nlist, "nprobe": index.nprobe, "trained_on": n}
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = cfg.hnsw_ef_construction
        inner.hnsw.efSearch = cfg.hnsw_ef_search
        index = faiss.IndexIDMap2(inner)
        info = {
            "type": "hnsw",
            "m": cfg.hnsw_m,
            "ef_construction": cfg.hnsw_ef_construction,
            "ef_search": cfg.hnsw_ef_search,
        }
    else:
        raise ConfigError(f"index.type must be auto, {', '.join(TYPES)}; got {kind!r}")
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, np.int64))
    return index, {**info, "dim": dim, "metric": "inner_product"}


def update(
    index,
    info: dict,
    removed: np.ndarray,
    added_ids: np.ndarray,
    added_vectors: Callable[[], np.ndarray],
    n_after: int,
    cfg: IndexConfig,
):
    """Apply a generation's changes to the previous generation's index in place when its type still
    fits the new size and the type allows it; otherwise return None (the caller builds in full).
    `added_vectors` is only called when the update goes ahead."""
    import faiss

    kind = info.get("type")
    if kind != choose_type(n_after, cfg):
        return None
    if kind == "hnsw" and len(removed):
        return None  # HNSW graphs do not support removal
    if kind == "ivf":
        trained = max(int(info.get("trained_on", 0)), 1)
        growth = max(cfg.retrain_growth, 1.0)
        if (
            not trained / growth <= n_after <= trained * growth
            or nlist_for(n_after, cfg) > info["nlist"] * growth
        ):
            return None  # cells sized for another collection: retrain
        index.nprobe = min(cfg.ivf_nprobe, info["nlist"])
        info = {**info, "nprobe": index.nprobe}
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = cfg.hnsw_ef_search
        info = {**info, "ef_search": cfg.hnsw_ef_search}
    if len(removed):
        index.remove_ids(faiss.IDSelectorBatch(np.asarray(removed, np.int64)))
    if len(added_ids):
        index.add_with_ids(np.ascontiguousarray(added_vectors(), np.float32), np.asarray(added_ids, np.int64))
    return index, info


def search_params(info: dict, sel=None):
    """SearchParameters for this index type with its recorded nprobe / efSearch and an optional
    faiss IDSelector (e.g. access control): only ids the selector accepts are returned."""
    import faiss

    kind = info.get("type", "flat")
    if kind == "ivf":
        return faiss.SearchParametersIVF(sel=sel, nprobe=int(info["nprobe"]))
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(sel=sel, efSearch=int(info["ef_search"]))
    return faiss.SearchParameters(sel=sel)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(n_queries, k) positions of the true top-k by inner product (the reference for recall)."""
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, np.float32))
    return flat.search(np.ascontiguousarray(queries, np.float32), k)[1]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top-k ids that the approximate search returned (recall@k)."""
    k = truth.shape[1]
    hits = sum(len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth)) if len(truth) else 1.0
