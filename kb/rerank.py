"""Optional cross-encoder reranking, for users who have a reranker model locally or on the hub.

None ships with its weights on PyPI, so the default configuration does not rerank.
"""

from __future__ import annotations

from kb.config import RetrievalConfig
from kb.errors import ConfigError, ModelError
from kb.schema import Hit


class CrossEncoderReranker:
    def __init__(self, cfg: RetrievalConfig):
        if not cfg.reranker_model:
            raise ConfigError(
                "retrieval.reranker_model: the cross-encoder reranker needs a model path or hub id"
            )
        from sentence_transformers import CrossEncoder

        try:
            self.model = CrossEncoder(cfg.reranker_model, device="cpu")
        except Exception as e:  # noqa: BLE001 - any load failure becomes one specific error
            raise ModelError(f"could not load reranker {cfg.reranker_model!r}: {e}") from e

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return hits
        scores = self.model.predict([(query, h.chunk.text) for h in hits])
        for h, s in zip(hits, scores, strict=True):
            h.score = float(s)
        return sorted(hits, key=lambda h: -h.score)
