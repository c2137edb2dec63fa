"""A tiny knowledge base (hashing embedder, fake generator) and the UI pointed at it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from ingest.pipeline import ingest
from kb.config import Config
from kb.embed.hashing import HashingEmbedder
from kb.generate.fake import FakeGenerator
from tests.conftest import write_corpus
from ui import state

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"
SETTINGS = ["embedder.name=hashing", "generator.name=fake", "chunk.size=120", "chunk.overlap=20"]


@dataclass
class UIEnv:
    root: Path  # the ingested corpus folder
    cfg: Config
    argv: list[str]

    def app(self) -> AppTest:
        return AppTest.from_file(str(APP), default_timeout=30).run()

    def generator(self) -> FakeGenerator:
        """The fake generator the running app shares (st.cache_resource): the test queues replies on it."""
        gen, _ = state.generator_for(self.cfg)
        assert isinstance(gen, FakeGenerator)
        return gen


@pytest.fixture
def ui_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UIEnv:
    monkeypatch.chdir(tmp_path)  # no stray ./kb.yaml; relative paths land in tmp_path
    for var in ("KB_DIR", "KB_ADMIN_PASSWORD", "KB_ADMIN_PASSWORD_SHA256"):
        monkeypatch.delenv(var, raising=False)
    root = write_corpus(tmp_path / "corpus")
    kb_dir = tmp_path / "kb"
    argv = ["app.py", "--kb", str(kb_dir), *(x for s in SETTINGS for x in ("--set", s))]
    cfg = state.config_from_args(argv[1:])
    ingest([root], cfg, HashingEmbedder(), progress=False)
    # The app reads its kb options from sys.argv, as under `streamlit run ui/app.py -- ...`.
    monkeypatch.setattr(sys, "argv", argv)
    st.cache_resource.clear()
    yield UIEnv(root, cfg, argv)
    st.cache_resource.clear()
