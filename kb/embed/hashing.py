"""A model-free embedder: hashed character n-grams. Deterministic and fast; used by tests and as a
last-resort fallback. Quality is far below a trained model."""

from __future__ import annotations

import hashlib

import numpy as np

from kb.config import EmbedderConfig
from kb.embed.base import Embedder, normalize_rows


class HashingEmbedder(Embedder):
    def __init__(self, cfg: EmbedderConfig | None = None, dim: int = 256):
        self.dim = dim
        self.name = f"hashing-{dim}"

    def _bucket(self, gram: str) -> int:
        return int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=4).digest(), "little") % self.dim

    def embed_batch(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            t = "".join(text.lower().split())
            for n in (1, 2):
                for j in range(len(t) - n + 1):
                    out[i, self._bucket(t[j : j + n])] += 1.0
        return normalize_rows(out)
