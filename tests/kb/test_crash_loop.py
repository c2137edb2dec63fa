"""`kill -9` of `kb ingest` at many random points: the knowledge base keeps answering from the previous
generation or the new complete one, a rerun completes, and nothing left behind accumulates.

Seeded and bounded: ITERATIONS kills spread over the run (one per slice of its duration), most
timed from the moment the child starts reading files (its imports are of no interest) against a
calibrated incremental ingest, a quarter from its start. `pytest -s` prints where each kill landed (the generation found afterwards).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from pathlib import Path

from kb.config import load_config
from kb.embed.hashing import HashingEmbedder
from kb.retrieve import Retriever
from kb.store import Store
from tests.crashing import env, kb_cmd, kill_after, start

ITERATIONS = int(os.environ.get("KB_CRASH_ITERATIONS", "10"))
N_FILES = 20
KEEP = 2  # ingest.keep_generations


def _doc(i: int, version: int) -> str:
    body = f"文档{i}第{version}版。" + "这是一段用于崩溃测试的文字，内容会在每一轮被修改。" * 10
    return f"# Document {i} version {version}\n\nmarker-{i}-v{version} {body}\n"


def _ingest_cmd(corpus: Path, kb: Path) -> list[str]:
    return kb_cmd("ingest", str(corpus), "--kb", str(kb), "--set", "embedder.name=hashing")


def _start(corpus: Path, kb: Path) -> tuple[subprocess.Popen, float]:
    return start(_ingest_cmd(corpus, kb), b"reading")


def _state(store: Store) -> set[tuple[int, int]]:
    """(document number, version) of every file in the store's generation."""
    out = set()
    for f in store.files():
        text = " ".join(c.text for c in store.iter_chunks(f.source))
        m = re.search(r"marker-(\d+)-v(\d+)", text)
        assert m, f.source
        out.add((int(m.group(1)), int(m.group(2))))
    return out


def _inventory(kb: Path) -> tuple[int, list[str], list[str]]:
    """(number of paths under kb, generation entries, top-level entries)."""
    return (
        sum(1 for _ in kb.rglob("*")),
        sorted(p.name for p in (kb / "generations").iterdir()),
        sorted(p.name for p in kb.iterdir()),
    )


def test_kill_9_at_random_points_of_ingest(tmp_path):
    corpus, kb = tmp_path / "corpus", tmp_path / "kb"
    corpus.mkdir()
    versions = dict.fromkeys(range(N_FILES), 0)
    for i in versions:
        (corpus / f"doc{i}.md").write_text(_doc(i, 0), encoding="utf-8")
    subprocess.run(_ingest_cmd(corpus, kb), env=env(), check=True, capture_output=True, timeout=300)
    for i in range(6):
        (corpus / f"doc{i}.md").write_text(_doc(i, 0) + "calibration\n", encoding="utf-8")
    t_start = time.perf_counter()
    proc, t_reading = _start(corpus, kb)
    assert proc.wait(timeout=300) == 0
    full = time.perf_counter() - t_reading  # the work of one incremental ingest, imports aside
    startup = t_reading - t_start
    live = next(p for p in (kb / "generations").iterdir() if p.name.isdigit())
    per_generation = sum(1 for _ in live.iterdir())  # files in one generation folder
    retriever_cfg = load_config(data={"kb_dir": str(kb), "embedder": {"name": "hashing"}}).retrieval
    rng = random.Random(1234)
    # Stratified: one kill in each 1/ITERATIONS slice of the run, in shuffled order, so the late
    # phases (index build, fsync, rename, manifest switch) are hit as surely as the early ones.
    fractions = [(k + rng.random()) / ITERATIONS for k in range(ITERATIONS)]
    rng.shuffle(fractions)
    committed = {Store.open(kb).generation: set(versions.items())}
    outcomes = []
    for it in range(1, ITERATIONS + 1):
        # Change a few files, add one, delete one: the next generation differs from the live one.
        for i in rng.sample(sorted(versions), 5):
            versions[i] = it
            (corpus / f"doc{i}.md").write_text(_doc(i, it), encoding="utf-8")
        new = max(versions) + 1
        versions[new] = it
        (corpus / f"doc{new}.md").write_text(_doc(new, it), encoding="utf-8")
        gone = rng.choice(sorted(versions))
        del versions[gone]
        (corpus / f"doc{gone}.md").unlink()
        expected_new = set(versions.items())

        before = Store.open(kb).generation
        if it % 4 == 1:  # from the start, imports included
            proc = subprocess.Popen(
                _ingest_cmd(corpus, kb), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            delay = fractions[it - 1] * (startup + full)
        else:
            proc, _ = _start(corpus, kb)
            delay = fractions[it - 1] * full
        finished = kill_after(proc, delay)

        store = Store.open(kb)  # never an error: the manifest names a complete generation
        gen = store.generation
        files = _state(store)
        if gen == before:
            assert files == committed[before], "the previous generation changed under a crash"
            outcomes.append("previous")
        else:
            assert gen > before and files == expected_new, "a new generation that is not complete"
            committed[gen] = expected_new
            outcomes.append("new" if not finished else "finished")
        hits = Retriever(store, HashingEmbedder(), retriever_cfg).search("崩溃测试 marker", 3)
        assert hits and all(h.chunk.text for h in hits)
        count, generations, top = _inventory(kb)
        # Bounded whatever the number of crashes: KEEP generations, one being built, one renamed
        # but not yet live; the top level holds the manifest, the lock and generations/.
        assert len(generations) <= KEEP + 2, generations
        leftover = set(top) - {"manifest.json", "ingest.lock", "generations"}
        assert len(leftover) <= 1 and all(t.endswith(".tmp") for t in leftover), top  # cleaned next run
        assert count <= 3 + (KEEP + 2) * (per_generation + 1), (count, generations)
        print(f"kill {it}: {delay:.2f}s (work ~{full:.2f}s) → {outcomes[-1]} generation {gen}")

        if it % 6 == 0:  # now and then a rerun to completion, as an admin would after a crash
            subprocess.run(_ingest_cmd(corpus, kb), env=env(), check=True, capture_output=True, timeout=300)
            committed[Store.open(kb).generation] = expected_new

    subprocess.run(_ingest_cmd(corpus, kb), env=env(), check=True, capture_output=True, timeout=300)
    store = Store.open(kb)
    assert {(int(f.source[3:-3])) for f in store.files()} == set(versions)
    _, generations, top = _inventory(kb)
    assert not [g for g in generations if g.startswith(".")] and len(generations) <= KEEP
    assert set(top) == {"manifest.json", "ingest.lock", "generations"}, top
    print("outcomes:", {o: outcomes.count(o) for o in set(outcomes)})
    assert "previous" in outcomes  # the loop did kill ingests midway, not only after they finished
