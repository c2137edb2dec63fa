"""Wiring of the core pieces from a Config; shared by the CLI, the UI and benchmarks."""

from __future__ import annotations

from kb.answer import Answerer
from kb.config import Config
from kb.embed import get_embedder
from kb.generate import Generator, get_generator
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


def open_generator(cfg: Config) -> Generator:
    return get_generator(cfg.generator)


def open_answerer(cfg: Config, *, retrieval: bool = True, generator: Generator | None = None) -> Answerer:
    retriever = open_retriever(cfg) if retrieval else None
    return Answerer(retriever, generator or open_generator(cfg), cfg)
