"""The ingest pipeline and retriever on both backends: same hits, incremental updates, deletes."""

from __future__ import annotations

from ingest.pipeline import ingest
from kb.embed.hashing import HashingEmbedder
from kb.retrieve import Retriever
from kb.store import Store


def test_ingest_update_delete_through_the_pipeline(cfg, corpus, store_cfg, backend):
    cfg.store = store_cfg
    emb = HashingEmbedder(cfg.embedder)
    first = ingest([corpus], cfg, emb, progress=False)
    store = Store.open(cfg.kb_dir)
    assert store.backend == backend and first.chunks == len(store) > 3
    hits = Retriever(store, emb, cfg.retrieval).search("年假可以累积吗", 3)
    assert hits[0].chunk.source == "hr/leave.md" and hits[0].dense is not None
    again = ingest([corpus], cfg, emb, progress=False)
    assert again.unchanged == 3 and again.generation == first.generation  # nothing changed: no new generation
    (corpus / "it/vpn.md").write_text(
        "# VPN\n\nThe VPN server moved to vpn2.example-corp.cn.\n", encoding="utf-8"
    )
    (corpus / "general/canteen.txt").unlink()
    report = ingest([corpus], cfg, emb, progress=False)
    assert (report.updated, report.deleted) == (1, 1)
    assert store.refresh() and {f.source for f in store.files()} == {"hr/leave.md", "it/vpn.md"}
    hits = Retriever(store, emb, cfg.retrieval).search("vpn2 server", 2)
    assert hits[0].chunk.source == "it/vpn.md" and "vpn2" in hits[0].chunk.text
    assert not [c for c in store.iter_chunks() if "GlobalConnect" in c.text or "食堂" in c.text]
