"""kb migrate: FAISS → Milvus and back, without re-embedding, checked before the switch."""

from __future__ import annotations

import numpy as np
import pytest

import kb.store.migrate as migrate_module
from ingest.pipeline import ingest
from kb.cli import main
from kb.embed.hashing import HashingEmbedder
from kb.errors import StoreError
from kb.retrieve import Retriever
from kb.store import Store
from kb.store.migrate import migrate as run_migrate

from .conftest import needs_milvus

pytestmark = needs_milvus


def snapshot(store: Store) -> dict:
    chunks = store.iter_chunks()
    rows = [
        r for r, _ in store.search_vectors(np.ones(store.manifest["embedder"]["dim"], np.float32), len(store))
    ]
    vecs = store.vectors(rows)
    by_row = store.chunks(rows)
    return {
        "files": [vars(f) for f in store.files()],
        "chunks": chunks,
        "vectors": {by_row[r].id: vecs[r].tolist() for r in rows},
        "keyword": [store.chunks([r])[r].id for r, _ in store.keyword.search("VPN 年假", 5)],
    }


def no_embedding():
    raise AssertionError("an unchanged knowledge base must not be re-embedded")


def test_faiss_to_milvus_and_back(cfg, corpus):
    emb = HashingEmbedder(cfg.embedder)
    ingest([corpus], cfg, emb, progress=False)
    before = Store.open(cfg.kb_dir)
    assert before.backend == "faiss"
    expected = snapshot(before)
    hits = [
        h.chunk.id for h in Retriever(before, emb, cfg.retrieval).search("how do I connect to the VPN", 5)
    ]

    report = run_migrate(cfg.kb_dir, "milvus", progress=False)
    assert (report.files, report.chunks, report.agreed) == (3, len(before), report.searches)
    after = Store.open(cfg.kb_dir)
    assert after.backend == "milvus" and after.generation == report.generation
    assert snapshot(after) == expected
    assert [
        h.chunk.id for h in Retriever(after, emb, cfg.retrieval).search("how do I connect to the VPN", 5)
    ] == hits
    for key in ("embedder", "chunk", "embedder_config", "roots"):
        assert after.manifest[key] == before.manifest[key]
    again = ingest([corpus], cfg, no_embedding, progress=False)  # incremental on the new backend
    assert again.unchanged == 3 and again.embedded == 0

    back = run_migrate(cfg.kb_dir, "faiss", progress=False)
    restored = Store.open(cfg.kb_dir)
    assert restored.backend == "faiss" and back.chunks == len(before)
    assert snapshot(restored) == expected


def test_failed_check_leaves_the_old_backend_live(cfg, corpus, monkeypatch):
    ingest([corpus], cfg, HashingEmbedder(cfg.embedder), progress=False)
    live = Store.open(cfg.kb_dir).generation

    def disagree(src, dst, **kw):
        raise StoreError("migration check: only 0 of 10 sample searches return the same top chunks")

    monkeypatch.setattr(migrate_module, "compare", disagree)
    with pytest.raises(StoreError, match="sample searches"):
        run_migrate(cfg.kb_dir, "milvus", progress=False)
    s = Store.open(cfg.kb_dir)
    assert s.backend == "faiss" and s.generation == live and len(s) > 0
    assert sorted(p.name for p in (s.dir / "generations").iterdir()) == [str(live)]
    from kb.store.milvus_client import client_for, resolve_uri

    assert client_for(resolve_uri(s.dir, "")).list_collections() == []  # the half-built copy is gone


def test_cli_migrate(cfg, corpus, capsys):
    ingest([corpus], cfg, HashingEmbedder(cfg.embedder), progress=False)
    assert main(["migrate", "--to", "milvus", "--kb", cfg.kb_dir]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("migrate: 3 files,") and "sample searches agree" in out.out
    assert main(["migrate", "--to", "milvus", "--kb", cfg.kb_dir]) == 2
    assert "already uses the milvus backend" in capsys.readouterr().err
    assert main(["migrate", "--to", "pgvector", "--kb", cfg.kb_dir]) == 2
    assert "unknown backend 'pgvector'" in capsys.readouterr().err
