"""Wiring of the core pieces from a Config; shared by the CLI, the UI and benchmarks."""

from __future__ import annotations

import dataclasses

from kb.answer import Answerer
from kb.config import Config
from kb.embed import get_embedder
from kb.generate import Generator, get_generator
from kb.registry import AdapterInfo, Registry
from kb.retrieve import Retriever
from kb.store import Store


def open_retriever(cfg: Config) -> Retriever:
    store = Store.open(cfg.kb_dir)
    manifest_embedder = store.manifest.get("embedder", {})
    embedder = get_embedder(cfg.embedder)
    if manifest_embedder.get("name") not in (None, embedder.name):
        from kb.errors import StoreError

        raise StoreError(
            f"{cfg.kb_dir} was built with embedder {manifest_embedder.get('name')!r} but the config "
            f"selects {embedder.name!r}: re-run `kb ingest` or change embedder.name"
        )
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
