"""`kill -9` of `kb synth --no-llm` at random points: its state and outputs stay readable, leftovers do
not pile up, and a rerun produces exactly what an uninterrupted run produces."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path

from finetune.data import read_examples
from ingest.pipeline import ingest
from ingest.synth import synthesize
from ingest.synth.state import SynthState
from kb.config import load_config
from kb.embed.hashing import HashingEmbedder
from kb.store import Store
from tests.crashing import ROOT, env, kb_cmd, kill_after, start

KILLS = 5
OUTPUTS = {"train.jsonl", "validation.jsonl", "validation_qa.jsonl", "config.yaml", "report.json"}
STATE = {"state.json", "pairs.jsonl", "synth.lock"}


def _synth(kb: Path) -> list[str]:
    return kb_cmd("synth", "--no-llm", "--kb", str(kb), "--set", "embedder.name=hashing")


def test_kill_9_during_synth(tmp_path):
    kb = tmp_path / "kb"
    cfg = load_config(data={"kb_dir": str(kb), "embedder": {"name": "hashing"}})
    ingest([ROOT / "corpus"], cfg, HashingEmbedder(), progress=False)
    reference = tmp_path / "reference"
    shutil.copytree(kb, reference)
    subprocess.run(_synth(reference), env=env(), check=True, capture_output=True, timeout=300)
    expected = (reference / "synth" / "train.jsonl").read_text(encoding="utf-8")

    proc, t0 = start(_synth(kb), b"synth:")
    assert proc.wait(timeout=300) == 0
    work = time.perf_counter() - t0
    shutil.rmtree(kb / "synth")  # the calibration run only measured the time; start from nothing
    rng = random.Random(7)
    outcomes = []
    for i in range(KILLS):
        proc, _ = start(_synth(kb), b"synth:")
        # Even kills fall in the first quarter (question generation, before the state is saved).
        finished = kill_after(proc, rng.uniform(0.0, work / 4 if i % 2 == 0 else work))
        synth = kb / "synth"
        with SynthState(kb) as state:  # loads: never a damaged state, the lock was released
            outcomes.append(f"{'finished' if finished else 'killed'} with {len(state.pairs)} pairs")
        if (synth / "train.jsonl").exists():
            convs, stats = read_examples(synth / "train.jsonl")  # complete, valid JSONL
            assert convs and stats.n_skipped == 0
        names = {p.name for p in synth.iterdir()}
        leftovers = names - OUTPUTS - STATE
        assert all(n.startswith(".") and n.endswith(".tmp") for n in leftovers), names
        assert len(leftovers) <= 2, names  # one run's temporaries at most: the next run removes them
    subprocess.run(_synth(kb), env=env(), check=True, capture_output=True, timeout=300)
    assert (kb / "synth" / "train.jsonl").read_text(encoding="utf-8") == expected
    assert {p.name for p in (kb / "synth").iterdir()} == OUTPUTS | STATE
    print("synth kills:", outcomes)


def test_crash_between_pairs_and_state_writes(tmp_path):
    """SynthState.save writes pairs.jsonl, then state.json. A kill between the two leaves pairs of chunks
    not marked done; those chunks are generated again, and the rerun must not keep a different set of
    pairs for them (the regenerated first candidates are near-duplicates of the stale pairs, so the
    generator moved on to candidates an uninterrupted run never picked)."""
    kb = tmp_path / "kb"
    cfg = load_config(data={"kb_dir": str(kb), "embedder": {"name": "hashing"}})
    ingest([ROOT / "corpus"], cfg, HashingEmbedder(), progress=False)
    store = Store.open(kb)
    synthesize(cfg, store, None, out_dir=kb / "synth", use_llm=False, progress=False)
    expected = (kb / "synth" / "train.jsonl").read_text(encoding="utf-8")
    (kb / "synth" / "state.json").unlink()  # pairs.jsonl was replaced, state.json never was
    report = synthesize(cfg, store, None, out_dir=kb / "synth", use_llm=False, progress=False)
    assert report.chunks_new == len(store.iter_chunks())
    assert (kb / "synth" / "train.jsonl").read_text(encoding="utf-8") == expected
