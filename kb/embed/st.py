"""Any sentence-transformers model, by local path or hub id (`embedder.model`)."""

from __future__ import annotations

import numpy as np

from kb.config import EmbedderConfig
from kb.embed.base import Embedder, normalize_rows
from kb.errors import ConfigError, ModelError


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, cfg: EmbedderConfig):
        if not cfg.model:
            raise ConfigError("embedder.model: sentence-transformers needs a model path or hub id")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(cfg.model, device="cpu")
        except Exception as e:  # noqa: BLE001 - any load failure becomes one specific error
            raise ModelError(f"could not load sentence-transformers model {cfg.model!r}: {e}") from e
        self.model.max_seq_length = min(cfg.max_length, self.model.max_seq_length or cfg.max_length)
        self.batch_size = cfg.batch_size or 32  # sentence-transformers' own default
        self.name = f"sentence-transformers:{cfg.model}"
        self.dim = int(self.model.get_sentence_embedding_dimension())

    def embed_batch(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        vecs = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True)
        return normalize_rows(np.asarray(vecs))
