"""Embedders: one interface, a dict registry chosen by `embedder.name`."""

from kb.embed.base import EMBEDDERS, Embedder, get_embedder

__all__ = ["EMBEDDERS", "Embedder", "get_embedder"]
