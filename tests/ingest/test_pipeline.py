"""Incremental ingest, failure isolation and crash safety, with a model-free embedder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ingest.pipeline import ingest, scan
from kb.embed.hashing import HashingEmbedder
from kb.retrieve import Retriever
from kb.store import Store

ROOT = Path(__file__).resolve().parents[2]


class CountingEmbedder(HashingEmbedder):
    def __init__(self):
        super().__init__()
        self.embedded = 0

    def embed_batch(self, texts, *, query=False):
        self.embedded += len(texts)
        return super().embed_batch(texts, query=query)


def test_first_ingest_then_unchanged_embeds_nothing(corpus, cfg):
    emb = CountingEmbedder()
    r1 = ingest([corpus], cfg, emb, progress=False)
    assert (r1.added, r1.updated, r1.deleted, r1.unchanged) == (3, 0, 0, 0)
    assert r1.chunks > 0 and emb.embedded == r1.chunks
    gen = r1.generation
    r2 = ingest([corpus], cfg, emb, progress=False)
    assert (r2.added, r2.updated, r2.deleted, r2.unchanged) == (0, 0, 0, 3)
    assert emb.embedded == r1.chunks and r2.generation == gen  # no re-embedding, no new generation
    assert set(r2.to_json()) == {
        "added",
        "updated",
        "deleted",
        "unchanged",
        "relabelled",
        "failed",
        "skipped",
        "chunks",
        "seconds",
    }


def test_add_update_delete(corpus, cfg):
    emb = CountingEmbedder()
    ingest([corpus], cfg, emb, progress=False)
    (corpus / "hr" / "leave.md").write_text("# 休假制度\n\n年假调整为12天。\n", encoding="utf-8")
    (corpus / "general" / "canteen.txt").unlink()
    (corpus / "it" / "new.md").write_text(
        "# Printer\n\nThe printer on floor 3 is called PR-301.\n", encoding="utf-8"
    )
    before = emb.embedded
    r = ingest([corpus], cfg, emb, progress=False)
    assert (r.added, r.updated, r.deleted, r.unchanged) == (1, 1, 1, 1)
    store = Store.open(cfg.kb_dir)
    assert {f.source for f in store.files()} == {"hr/leave.md", "it/vpn.md", "it/new.md"}
    texts = " ".join(c.text for c in store.iter_chunks())
    assert "12天" in texts and "10天" not in texts and "食堂" not in texts
    assert emb.embedded - before == len(store.iter_chunks("hr/leave.md")) + len(
        store.iter_chunks("it/new.md")
    )


def test_bad_file_is_reported_and_rest_ingests(corpus, cfg):
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (corpus / "empty.txt").write_bytes(b"")
    r = ingest([corpus], cfg, HashingEmbedder(), progress=False)
    failed, skipped = dict(r.failed), dict(r.skipped)
    assert set(failed) == {"broken.pdf"} and "corrupt or truncated PDF" in failed["broken.pdf"]
    assert skipped == {"empty.txt": "empty file"}
    assert r.added == 3


def test_previous_version_kept_when_file_turns_bad(corpus, cfg):
    ingest([corpus], cfg, HashingEmbedder(), progress=False)
    (corpus / "it" / "vpn.md").write_bytes(b"\x00\x01\x02 binary garbage \x00" * 10)
    r = ingest([corpus], cfg, HashingEmbedder(), progress=False)
    assert [s for s, _ in r.failed] == ["it/vpn.md"]
    assert Store.open(cfg.kb_dir).iter_chunks("it/vpn.md")  # the old, good version is still there


def test_kbignore_hidden_and_symlinks(corpus, cfg, tmp_path):
    (corpus / ".kbignore").write_text("README.md\nhr/*\n")
    (corpus / "README.md").write_text("about this folder")
    (corpus / ".hidden.md").write_text("secret")
    outside = tmp_path / "outside.md"
    outside.write_text("outside the root")
    (corpus / "link.md").symlink_to(outside)
    files, skipped = scan([corpus], cfg)
    assert [s for _, s in files] == ["general/canteen.txt", "it/vpn.md"]
    assert [s for s, _ in skipped] == ["link.md"]


def test_changed_embedder_rebuilds(corpus, cfg):
    ingest([corpus], cfg, HashingEmbedder(dim=256), progress=False)
    emb = HashingEmbedder(dim=128)
    r = ingest([corpus], cfg, emb, progress=False)
    assert r.chunks > 0 and Store.open(cfg.kb_dir).manifest["embedder"] == {"name": "hashing-128", "dim": 128}


def test_hybrid_search_finds_chinese_and_english(corpus, cfg):
    ingest([corpus], cfg, HashingEmbedder(), progress=False)
    retr = Retriever(Store.open(cfg.kb_dir), HashingEmbedder(), cfg.retrieval)
    assert retr.search("病假需要什么证明", 3)[0].chunk.source == "hr/leave.md"
    top = retr.search("helpdesk extension", 3)[0]
    assert top.chunk.source == "it/vpn.md" and top.keyword is not None and top.dense is not None


SLOW_INGEST = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from ingest.pipeline import ingest
    from kb.config import load_config
    from kb.embed.hashing import HashingEmbedder

    class Slow(HashingEmbedder):
        # Slow per text, as a real embedder is: the pipeline hands up to 256 texts to one call, so a
        # per-call delay let this ingest finish before the test's kill.
        def embed_batch(self, texts, *, query=False):
            time.sleep(0.05 * len(texts))
            return super().embed_batch(texts, query=query)

    cfg = load_config(data={{"kb_dir": {kb!r}, "embedder": {{"name": "hashing", "batch_size": 1}},
                            "chunk": {{"size": 120, "overlap": 20}}}})
    print("start", flush=True)
    ingest([__import__("pathlib").Path({corpus!r})], cfg, Slow(), progress=False)
    print("done", flush=True)
""")


@pytest.mark.parametrize("delay", [0.3, 0.9, 1.8])
def test_kill_9_mid_ingest_keeps_previous_generation(corpus, cfg, tmp_path, delay):
    ingest([corpus], cfg, HashingEmbedder(), progress=False)
    gen = Store.open(cfg.kb_dir).generation
    for i in range(40):  # enough new text that the slow ingest is still running when killed
        (corpus / f"bulk{i}.md").write_text(
            f"# 文档{i}\n\n" + "这是一段用来测试崩溃恢复的文字。" * 20, encoding="utf-8"
        )
    script = SLOW_INGEST.format(root=str(ROOT), kb=cfg.kb_dir, corpus=str(corpus))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store.open(cfg.kb_dir)
    assert store.generation == gen
    retr = Retriever(store, HashingEmbedder(), cfg.retrieval)
    assert retr.search("病假需要什么证明", 3)[0].chunk.source == "hr/leave.md"
    r = ingest([corpus], cfg, HashingEmbedder(), progress=False)  # a rerun completes and cleans up
    assert r.added == 40 and r.generation > gen
    assert not [p for p in (Path(cfg.kb_dir) / "generations").iterdir() if p.name.startswith(".")]


def test_unchanged_reingest_never_loads_the_embedder(corpus, cfg):
    calls = []

    def factory():
        calls.append(1)
        return HashingEmbedder()

    ingest([corpus], cfg, factory, progress=False)
    assert calls == [1]
    r = ingest([corpus], cfg, factory, progress=False)
    assert calls == [1] and r.unchanged == 3
    (corpus / "it" / "vpn.md").write_text("# VPN\n\nNew server vpn2.example-corp.cn.\n", encoding="utf-8")
    assert ingest([corpus], cfg, factory, progress=False).updated == 1 and calls == [1, 1]
