"""Hybrid retrieval: dense vectors ∪ BM25 keywords → reciprocal rank fusion → (rerank) → hits.

Why fusion by rank and not by score: cosine similarities and BM25 scores live on unrelated scales;
RRF (Cormack et al. 2009) needs no calibration and is robust when one side is weak.
"""

from __future__ import annotations

import importlib

from kb.access import Principal, departments_of, visible
from kb.config import RetrievalConfig
from kb.embed.base import Embedder
from kb.errors import ConfigError
from kb.schema import Hit
from kb.store import Store

RERANKERS: dict[str, str] = {
    "cross-encoder": "kb.rerank:CrossEncoderReranker",  # sentence-transformers CrossEncoder, retrieval.reranker_model
}


def rrf(rankings: list[list[int]], weights: list[float], k: int) -> dict[int, float]:
    """score(d) = Σ_i w_i / (k + rank_i(d)), rank 1-based; documents absent from a ranking add nothing."""
    fused: dict[int, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for rank, row in enumerate(ranking, start=1):
            fused[row] = fused.get(row, 0.0) + w / (k + rank)
    return fused


class Retriever:
    def __init__(self, store: Store, embedder: Embedder, cfg: RetrievalConfig):
        self.store, self.embedder, self.cfg = store, embedder, cfg
        self.reranker = None
        if cfg.reranker:
            if cfg.reranker not in RERANKERS:
                raise ConfigError(
                    f"retrieval.reranker: unknown reranker {cfg.reranker!r} (known: {', '.join(RERANKERS)})"
                )
            module, _, cls = RERANKERS[cfg.reranker].partition(":")
            self.reranker = getattr(importlib.import_module(module), cls)(cfg)

    def search(self, query: str, k: int | None = None, user: Principal | None = None) -> list[Hit]:
        """Top-k hits visible to `user` (None = unrestricted; kb/access.py). Both searches filter by
        the user's departments inside the index, so hidden chunks never take a place in the top k."""
        k = k or self.cfg.k
        departments = departments_of(user)
        qvec = self.embedder.embed_batch([query], query=True)[0]  # (dim,)
        dense = self.store.search_vectors(qvec, max(self.cfg.dense_k, k), departments=departments)
        keyword = self.store.search_keywords(query, max(self.cfg.keyword_k, k), departments)
        fused = rrf(
            [[r for r, _ in dense], [r for r, _ in keyword]],
            [self.cfg.dense_weight, self.cfg.keyword_weight],
            self.cfg.rrf_k,
        )
        n_candidates = max(k, 20) if self.reranker else k
        top = sorted(fused, key=lambda r: -fused[r])[:n_candidates]
        chunks = self.store.chunks(top)
        # Cosine for every hit, including those only BM25 found: the answer flow uses the best one.
        vecs = self.store.vectors(top)
        kw = dict(keyword)
        hits = [
            Hit(chunk=chunks[r], score=fused[r], dense=float(vecs[r] @ qvec), keyword=kw.get(r))
            for r in top
            # Defence in depth: the searches already filtered; a label changed under us must not leak.
            if r in chunks and visible(chunks[r].departments, departments)
        ]
        if self.reranker is not None:
            hits = self.reranker.rerank(query, hits)
        return hits[:k]


def as_langchain_retriever(retriever: Retriever, k: int | None = None, user: Principal | None = None):
    """A LangChain BaseRetriever over our Retriever, for users who build chains with LangChain."""
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document as LCDocument
    from langchain_core.retrievers import BaseRetriever

    class KBRetriever(BaseRetriever):
        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[LCDocument]:
            return [
                LCDocument(
                    page_content=h.chunk.text,
                    metadata={k2: v for k2, v in h.to_dict().items() if k2 != "text"},
                )
                for h in retriever.search(query, k, user=user)
            ]

    return KBRetriever()
