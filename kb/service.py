"""Wiring of the core pieces from a Config; shared by the CLI, the UI and benchmarks."""

from __future__ import annotations

import dataclasses
from typing import Any

from kb.answer import Answerer
from kb.config import Config, EmbedderConfig
from kb.embed import Embedder, get_embedder
from kb.errors import StoreError
from kb.generate import Generator, get_generator
from kb.registry import AdapterInfo, Registry
from kb.retrieve import Retriever
from kb.store import Store


def query_embedder_config(cfg: EmbedderConfig, manifest: dict[str, Any]) -> EmbedderConfig:
    """The embedder config that searches this index: `cfg`, at the precision the index was built with
    when the same model built it (a float32 index keeps answering after the default became int8, until
    `kb ingest` rebuilds it). Manifests from before `embedder_config.quantize` was recorded name int8
    indexes with a "+int8" suffix."""
    built = manifest.get("embedder_config") or {}
    if (built.get("name"), built.get("model", "")) != (cfg.name, cfg.model):
        return cfg
    quantize = built.get("quantize")
    if quantize is None:
        quantize = "int8" if "+int8" in str((manifest.get("embedder") or {}).get("name", "")) else "none"
    return dataclasses.replace(cfg, quantize=quantize)


def check_embedder(kb_dir: str, manifest: dict[str, Any], embedder: Embedder) -> None:
    """Query vectors must come from the embedder that made the index's vectors."""
    built_with = (manifest.get("embedder") or {}).get("name")
    if built_with not in (None, embedder.name):
        raise StoreError(
            f"{kb_dir} was built with embedder {built_with!r} but the config selects {embedder.name!r}: "
            "re-ingest (`kb ingest`, or the admin page) or change embedder.name"
        )


def open_retriever(cfg: Config) -> Retriever:
    store = Store.open(cfg.kb_dir)
    embedder = get_embedder(query_embedder_config(cfg.embedder, store.manifest))
    check_embedder(cfg.kb_dir, store.manifest, embedder)
    return Retriever(store, embedder, cfg.retrieval)


def active_adapter(cfg: Config) -> AdapterInfo | None:
    """The adapter answers use: generator.adapter names one, "" means the registry's active one,
    "none" the base model."""
    choice = cfg.generator.adapter
    if choice == "none":
        return None
    registry = Registry(cfg.kb_dir)
    return registry.get(choice) if choice else registry.active()


def open_generator(cfg: Config) -> Generator:
    if cfg.generator.name != "hf":
        return get_generator(cfg.generator)
    adapter = active_adapter(cfg)
    if adapter is None:
        return get_generator(cfg.generator)
    # An adapter only fits the base model it was trained on: that model is loaded, whatever the default.
    gcfg = dataclasses.replace(cfg.generator, model=adapter.base_model or cfg.generator.model)
    return get_generator(gcfg, adapter_dir=str(adapter.path))


def open_answerer(cfg: Config, *, retrieval: bool = True, generator: Generator | None = None) -> Answerer:
    retriever = open_retriever(cfg) if retrieval else None
    return Answerer(retriever, generator or open_generator(cfg), cfg)
