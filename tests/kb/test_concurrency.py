"""Readers during re-ingest: threads sharing one Store and separate processes search in a loop while
the corpus is re-ingested; no error, never a mix of generations, and everyone ends on the new one.
Two ingests at once: the second is refused clearly and nothing is corrupted."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ingest.pipeline import ingest
from kb.cli import main
from kb.embed.hashing import HashingEmbedder
from kb.retrieve import Retriever
from kb.store import Store
from tests.crashing import ROOT, env, start

N_DOCS = 12
ROUNDS = 3  # re-ingests while the readers run
K = 4
QUERY = "报销 差旅 version"


def _write_version(corpus: Path, version: int) -> None:
    """Every document carries the version, so a hit list from one generation has a single version."""
    for i in range(N_DOCS):
        (corpus / f"doc{i}.md").write_text(
            f"# 差旅报销 {i}\n\nversion-{version} 第{i}条：差旅报销须在30天内提交，附发票原件。" * 3 + "\n",
            encoding="utf-8",
        )


def _versions(hits) -> set[str]:
    return {w for h in hits for w in h.chunk.text.split() if w.startswith("version-")}


def check_hits(hits) -> str | None:
    """None when the hits look like one complete generation, else what is wrong."""
    if len(hits) != K:
        return f"{len(hits)} hits instead of {K}"
    if len(_versions(hits)) != 1:
        return f"hits from several generations: {_versions(hits)}"
    return None


@pytest.fixture
def kb(tmp_path, cfg):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _write_version(corpus, 0)
    ingest([corpus], cfg, HashingEmbedder(), progress=False)
    return corpus, cfg


def test_threads_share_one_store_during_reingest(kb):
    corpus, cfg = kb
    store = Store.open(cfg.kb_dir)
    retriever = Retriever(store, HashingEmbedder(), cfg.retrieval)
    stop = threading.Event()
    errors: list[str] = []
    last: dict[int, str] = {}
    searches = [0]

    def reader(n: int) -> None:
        while True:
            final = stop.is_set()
            try:
                store.refresh()
                hits = retriever.search(QUERY, K)
                problem = check_hits(hits)
                if problem:
                    errors.append(problem)
                last[n] = _versions(hits).pop() if hits else ""
            except Exception as e:  # noqa: BLE001 - any error is what this test looks for
                errors.append(f"{type(e).__name__}: {e}")
            searches[0] += 1
            if final:
                return

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for version in range(1, ROUNDS + 1):
        _write_version(corpus, version)
        ingest([corpus], cfg, HashingEmbedder(), progress=False)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    print(f"{searches[0]} searches in 4 threads over {ROUNDS} re-ingests")
    assert not errors, errors[:5]
    assert set(last.values()) == {f"version-{ROUNDS}"}  # each saw the new generation after the switch


READER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from kb.config import load_config
    from kb.embed.hashing import HashingEmbedder
    from kb.retrieve import Retriever
    from kb.store import Store
    from tests.kb.test_concurrency import K, QUERY, check_hits, _versions

    cfg = load_config(data={{"kb_dir": {kb!r}, "embedder": {{"name": "hashing"}}}})
    stop = Path({stop!r})
    store = Store.open(cfg.kb_dir)
    retriever = Retriever(store, HashingEmbedder(), cfg.retrieval)
    retriever.search(QUERY, K)  # the first search loads the tokenizer's dictionary: before "ready"
    print("ready", flush=True)
    n, errors, last = 0, [], ""
    while True:
        final = stop.exists()
        try:
            store.refresh()
            hits = retriever.search(QUERY, K)
            problem = check_hits(hits)
            if problem:
                errors.append(problem)
            last = _versions(hits).pop() if hits else ""
        except Exception as e:
            errors.append(f"{{type(e).__name__}}: {{e}}")
        n += 1
        if final:
            break
    print(json.dumps({{"searches": n, "errors": errors[:5], "last": last}}), flush=True)
""")


def test_processes_search_during_reingest(kb, tmp_path):
    corpus, cfg = kb
    stop = tmp_path / "stop"
    script = READER.format(root=str(ROOT), kb=cfg.kb_dir, stop=str(stop))
    readers = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env())
        for _ in range(2)
    ]
    for r in readers:
        assert r.stdout.readline().strip() == "ready"
    for version in range(1, ROUNDS + 1):
        _write_version(corpus, version)
        assert main(["ingest", str(corpus), "--kb", cfg.kb_dir, "--set", "embedder.name=hashing",
                     "--set", "chunk.size=120", "--set", "chunk.overlap=20"]) == 0  # fmt: skip
        time.sleep(0.5)  # pacing, so the readers search between switches too (not a timing assertion)
    stop.touch()
    results = [json.loads(r.communicate(timeout=120)[0].strip().splitlines()[-1]) for r in readers]
    print("reader processes:", results)
    for res in results:
        assert res["errors"] == [] and res["last"] == f"version-{ROUNDS}" and res["searches"] > ROUNDS


def test_second_ingest_is_refused_and_nothing_is_corrupted(kb, capsys):
    corpus, cfg = kb
    before = Store.open(cfg.kb_dir).generation
    _write_version(corpus, 1)
    # A first ingest, held inside its embedding step by a slow embedder, owns the lock.
    slow = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from kb.embed.hashing import HashingEmbedder
        import kb.embed
        class Slow(HashingEmbedder):
            def embed_batch(self, texts, *, query=False):
                print("embedding", file=sys.stderr, flush=True)
                time.sleep(3)
                return super().embed_batch(texts, query=query)
        kb.embed.get_embedder = lambda cfg: Slow()
        from kb.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    args = ["ingest", str(corpus), "--kb", cfg.kb_dir, "--set", "embedder.name=hashing"]
    args += ["--set", "chunk.size=120", "--set", "chunk.overlap=20"]
    first, _ = start([sys.executable, "-c", slow, *args], b"embedding")
    assert main(args) == 2  # the second: refused at once, with the reason
    assert "another ingest is running" in capsys.readouterr().err
    assert first.wait(timeout=120) == 0
    store = Store.open(cfg.kb_dir)
    assert store.generation == before + 1
    assert _versions(Retriever(store, HashingEmbedder(), cfg.retrieval).search(QUERY, K)) == {"version-1"}
