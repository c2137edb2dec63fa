"""What the pages share within one server process: the config, the loaded models and knowledge base,
and the lock that lets one question at a time use them.

Models and the store are loaded once per process (st.cache_resource) and shared by every browser
session; only the chat history and the interface language are per session.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from kb.answer import Answerer
from kb.config import Config, EmbedderConfig, load_config
from kb.embed import get_embedder
from kb.embed.base import Embedder
from kb.generate import Generator
from kb.registry import AdapterInfo
from kb.retrieve import Retriever
from kb.service import active_adapter, check_embedder, open_generator, query_embedder_config
from kb.store import Store
from kb.store.manifest import read_manifest


def ui_args() -> list[str]:
    """The kb options `kb ui` passes through after `--` (streamlit hands them over in sys.argv)."""
    return sys.argv[1:]


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="kb ui", add_help=False)
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--kb")
    # Unknown arguments are ignored: under a test runner sys.argv holds the runner's own options.
    args, _ = ap.parse_known_args(argv)
    return args


def config_from_args(argv: list[str]) -> Config:
    args = parse_args(argv)
    # finetune.* settings are for `kb finetune` (started from the admin page), not the kb config.
    overrides = [s for s in args.set if not s.startswith("finetune.")]
    overrides += [f"kb_dir={args.kb}"] if args.kb else []
    return load_config(args.config, overrides)


def config() -> Config:
    """The kb config of this server, read on every run so a test can point it elsewhere."""
    return config_from_args(ui_args())


def _key(section: Any) -> str:
    """A cache key for a config section (dataclass): its fields as sorted JSON."""
    return json.dumps(dataclasses.asdict(section), sort_keys=True)


@st.cache_resource(show_spinner=False, max_entries=2)
def _embedder(key: str, _cfg: Config) -> Embedder:
    return get_embedder(_cfg.embedder)


@st.cache_resource(show_spinner=False, max_entries=4)
def _store(kb_dir: str) -> Store:
    # Store.open raises EmptyKnowledgeBase before the first ingest; exceptions are not cached, so
    # the next run tries again and finds the knowledge base the admin page has just built.
    return Store.open(kb_dir)


@st.cache_resource(show_spinner=False, max_entries=4)
def _retriever(key: str, _cfg: Config, _embedder_cfg: EmbedderConfig, _live: dict[str, Any]) -> Retriever:
    embedder = _embedder(_key(_embedder_cfg), dataclasses.replace(_cfg, embedder=_embedder_cfg))
    check_embedder(_cfg.kb_dir, _live, embedder)
    return Retriever(_store(_cfg.kb_dir), embedder, _cfg.retrieval)


# One generator per process: a second adapter's model replaces the first rather than doubling memory.
@st.cache_resource(show_spinner=False, max_entries=1)
def _generator(key: str, _cfg: Config) -> Generator:
    return open_generator(_cfg)


@st.cache_resource(show_spinner=False)
def _answer_lock(kb_dir: str) -> threading.Lock:
    return threading.Lock()


def embedder_for(cfg: Config) -> Embedder:
    return _embedder(_key(cfg.embedder), cfg)


def retriever_for(cfg: Config) -> Retriever:
    # The query embedder follows the live index's precision (kb.service.query_embedder_config): a
    # re-ingest from the admin page that changes it gives the next question a new retriever. Both the
    # precision and the check read the manifest on disk, not this thread's snapshot of the store, which
    # stays a generation behind until the answer refreshes it (ui/chat.py, under the answer lock).
    live = read_manifest(Path(cfg.kb_dir)) or {}
    ecfg = query_embedder_config(cfg.embedder, live)
    return _retriever(f"{cfg.kb_dir}|{_key(ecfg)}|{_key(cfg.retrieval)}", cfg, ecfg, live)


def generator_for(cfg: Config) -> tuple[Generator, AdapterInfo | None]:
    """The generator answers use now, with its adapter. The active adapter is part of the cache
    key, so activating another one on the admin page takes effect at the next question."""
    adapter = active_adapter(cfg)
    key = _key(cfg.generator) + "|" + (adapter.name if adapter else "")
    return _generator(key, cfg), adapter


@dataclass
class Resources:
    answerer: Answerer
    store: Store
    model: str  # model label stored with feedback
    adapter: str


def resources(cfg: Config) -> Resources:
    """Load (once per process) everything answering needs. Raises EmptyKnowledgeBase or KBError."""
    retriever = retriever_for(cfg)
    generator, adapter = generator_for(cfg)
    model = cfg.generator.model if cfg.generator.name == "hf" else cfg.generator.name
    return Resources(
        Answerer(retriever, generator, cfg), retriever.store, model, adapter.name if adapter else ""
    )


@contextmanager
def answering(cfg: Config) -> Iterator[None]:
    """Hold the process's answer lock. The store switches generations and the model generates one
    question at a time: two at once would only halve each other's speed on a CPU."""
    lock = _answer_lock(cfg.kb_dir)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def try_answering(cfg: Config) -> bool:
    """True when no other question holds the lock right now (to tell the user they are waiting)."""
    lock = _answer_lock(cfg.kb_dir)
    if lock.acquire(blocking=False):
        lock.release()
        return True
    return False
