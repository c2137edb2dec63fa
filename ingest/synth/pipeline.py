"""`synthesize`: instruction pairs from the knowledge base's chunks, for supervised fine-tuning.

store chunks ─(new/changed only)─▶ question generators ─▶ filters ─▶ <kb_dir>/synth/pairs.jsonl
pairs.jsonl + store ─▶ split by document ─▶ RAFT conversations ─▶ <out_dir>/train.jsonl, validation.jsonl
                                                             └──▶ <out_dir>/validation_qa.jsonl (kb eval)

Change-aware: a chunk is sent to a question generator once per (chunk id, text hash, generator name).
Pairs of chunks that left the store (a deleted or changed document) are dropped; an unchanged knowledge
base produces no new pairs and never calls the model. The output files are rebuilt from all pairs on
every run (cheap, deterministic). Changing `per_chunk` or `seed` affects new chunks only; delete
`<kb_dir>/synth/` to regenerate everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from finetune.data import write_examples
from ingest.synth.base import ChunkView, QAGenerator, get_qa_generator
from ingest.synth.filters import DUPLICATE, QuestionIndex, check, short_reply
from ingest.synth.raft import (
    REPLY_STYLES,
    Distractors,
    Shares,
    assign_modes,
    conversation,
    qa_record,
    split_sources,
)
from ingest.synth.state import SynthState
from ingest.synth.text import document_title
from kb.config import Config
from kb.errors import ConfigError
from kb.generate.base import Generator
from kb.prompt import language
from kb.schema import Chunk
from kb.store import Store
from kb.store.manifest import atomic_write_text

FORMATS = ("conversations", "alpaca")
CHECKPOINT_S = 60.0  # save the state at most this often during a long (model-backed) run


@dataclass
class SynthReport:
    chunks_seen: int = 0  # chunks in the store
    chunks_new: int = 0  # chunks sent to at least one question generator this run
    pairs_new: int = 0
    pairs_dropped: int = 0  # pairs whose chunk left the store
    pairs_total: int = 0
    train: int = 0  # conversations written
    validation: int = 0
    validation_qa: int = 0
    modes: dict[str, int] = field(default_factory=dict)  # oracle / distractor / plain over both splits
    skipped: dict[str, int] = field(default_factory=dict)  # candidates dropped, by filter reason
    model_calls: int = 0
    generators: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "seconds"}
        out["seconds"] = round(self.seconds, 3)
        return out

    def summary(self) -> str:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"synth: {self.chunks_new} of {self.chunks_seen} chunks new, {self.pairs_new} pairs added, "
            f"{self.pairs_dropped} dropped, {self.pairs_total} total; train {self.train}, validation "
            f"{self.validation} ({self.validation_qa} QA items); skipped: {skipped}; "
            f"{self.model_calls} model calls in {self.seconds:.1f}s"
        )


def _pair_id(generator: str, chunk_id: str, question: str) -> str:
    return hashlib.sha1(f"{generator}\0{chunk_id}\0{question}".encode()).hexdigest()[:16]


def _views(chunks: list[Chunk], seed: int) -> dict[str, ChunkView]:
    """A view per chunk: its document's title (from the document's first chunk) and the previous chunk."""
    first: dict[str, Chunk] = {}
    previous: dict[str, str] = {}
    views = {}
    for c in chunks:  # store order = document order, so a document's first chunk comes first
        first.setdefault(c.source, c)
        views[c.id] = ChunkView(
            c, document_title(first[c.source]), language(c.text), seed, previous.get(c.source, "")
        )
        previous[c.source] = c.text
    return views


def _evidence(view: ChunkView) -> str:
    return "\n".join([view.chunk.text, *view.chunk.headings, view.title])


def _generate(
    view: ChunkView,
    gen: QAGenerator,
    per_chunk: int,
    index: QuestionIndex,
    doc_sha: str,
    skipped: Counter[str],
) -> list[dict[str, Any]]:
    """Up to per_chunk filtered pairs for one chunk from one question generator."""
    out: list[dict[str, Any]] = []
    evidence = _evidence(view)
    for cand in gen.candidates(view, per_chunk):
        if len(out) >= per_chunk:
            break
        reason, score = check(cand, evidence)
        if reason is None and index.near(cand.question):
            reason = DUPLICATE
        if reason:
            skipped[reason] += 1
            continue
        index.add(cand.question)
        c = view.chunk
        out.append(
            {
                "id": _pair_id(gen.name, c.id, cand.question),
                "question": cand.question.strip(),
                "answer": cand.answer.strip(),
                "gold": cand.gold.strip(),
                "short": short_reply(cand, evidence),
                "lang": language(cand.question),
                "kind": cand.kind,
                "generator": gen.name,
                "chunk_id": c.id,
                "chunk_hash": c.hash,
                "source": c.source,
                "collection": collection(c.source),
                "departments": list(c.departments),
                "page": c.page,
                "doc_sha256": doc_sha,
                "support": round(score, 3),
            }
        )
    return out


def _vectors(store: Store, chunks: list[Chunk]) -> np.ndarray | None:
    """Chunk vectors in `chunks` order (for nearest distractors), or None when the store has none."""
    rows = {cid: row for row, cid in store.db.execute("SELECT row, id FROM chunks")}
    by_row = store.vectors([rows[c.id] for c in chunks if c.id in rows])
    if len(by_row) != len(chunks):
        return None
    return np.vstack([by_row[rows[c.id]] for c in chunks]).astype(np.float32)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def collection(source: str) -> str:
    """A document's collection: the first folder of its source ("" at the root)."""
    return source.split("/", 1)[0] if "/" in source else ""


def _write_examples(
    path: Path, conversations: list[list[dict[str, Any]]], fmt: str, meta: list[dict[str, Any]]
) -> int:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    n = write_examples(tmp, conversations, fmt, meta=meta)
    os.replace(tmp, path)
    return n


def write_outputs(
    cfg: Config,
    store: Store,
    pairs: list[dict[str, Any]],
    out_dir: Path,
    fmt: str,
    seed: int,
    shares: Shares,
    validation_share: float,
    report: SynthReport,
    reply: str = "short",
) -> None:
    """Split pairs by document, build the RAFT conversations and write the three output files.

    Every pair, training example and QA item carries its source chunk's `departments` (and
    `collection`), read from the store now, so a re-labelled document re-labels its pairs. Distractors
    are only drawn from documents at least as restricted as the gold chunk's (public ones, or tagged
    with all of its departments): whoever may see the gold chunk may see every source in the example,
    so the example's label is the gold chunk's. `kb finetune` filters by it (data.audience)."""
    for name in ("train.jsonl", "validation.jsonl", "validation_qa.jsonl", "config.yaml", "report.json"):
        for tmp in out_dir.glob(f".{name}.*.tmp"):  # left by a run killed mid-write
            tmp.unlink(missing_ok=True)
    chunks = store.iter_chunks()
    by_id = {c.id: c for c in chunks}
    for p in pairs:
        p["departments"] = list(by_id[p["chunk_id"]].departments)
        p["collection"] = collection(p["source"])
    restricted = {c.source: set(c.departments) for c in chunks if c.departments}
    distractors = Distractors(chunks, _vectors(store, chunks))
    val_sources = split_sources([p["source"] for p in pairs], validation_share)
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    for p in pairs:
        splits["validation" if p["source"] in val_sources else "train"].append(p)
    out_dir.mkdir(parents=True, exist_ok=True)
    modes_total: Counter[str] = Counter()
    qa: list[dict[str, Any]] = []
    max_chars = cfg.answer.max_context_chars
    for name, items in splits.items():
        modes = assign_modes([p["id"] for p in items], shares, seed)
        base = frozenset(val_sources) if name == "train" else frozenset()
        bans: dict[tuple[str, ...], frozenset[str]] = {}
        convs, meta = [], []
        for p in items:
            gold = by_id[p["chunk_id"]]
            key = tuple(gold.departments)
            if key not in bans:
                bans[key] = base | {s for s, d in restricted.items() if not key or not set(key) <= d}
            conv, shown = conversation(
                p, modes[p["id"]], gold, distractors, max_chars, seed, bans[key], reply
            )
            convs.append(conv)
            meta.append({"departments": p["departments"], "collection": p["collection"]})
            modes_total[modes[p["id"]]] += 1
            if name == "validation":
                qa.append({**qa_record(p, modes[p["id"]], shown), **meta[-1]})
        setattr(report, name, _write_examples(out_dir / f"{name}.jsonl", convs, fmt, meta))
    _write_jsonl(out_dir / "validation_qa.jsonl", qa)
    report.validation_qa = len(qa)
    report.modes = dict(sorted(modes_total.items()))


def synthesize(
    cfg: Config,
    store: Store,
    generator: Generator | None,
    *,
    out_dir: Path,
    per_chunk: int = 2,
    fmt: str = "conversations",
    use_llm: bool = True,
    seed: int = 0,
    progress: bool = True,
    shares: Shares | None = None,
    validation_share: float = 0.2,
    reply: str = "short",
) -> SynthReport:
    """Synthesize question/answer pairs for new or changed chunks, then (re)write the training files.

    Question generators: "rules" always; "llm" too when use_llm (then `generator` is required). At most
    `per_chunk` pairs per chunk and generator. `shares` sets the RAFT mix (default 70% oracle, 15%
    distractor-only refusals, 15% plain); `validation_share` the share of documents held out; `reply`
    the assistant turns: "short" (a pair's few-word reply where it has one) or "sentence". The reply
    style only shapes the output files, so changing it needs no regeneration.
    """
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise ConfigError(f"synth: unknown output format {fmt!r}; use {' or '.join(FORMATS)}")
    if per_chunk < 1:
        raise ConfigError(f"synth: per_chunk must be >= 1, got {per_chunk}")
    if not 0.0 <= validation_share < 1.0:
        raise ConfigError(f"synth: validation_share must be in [0, 1), got {validation_share}")
    if reply not in REPLY_STYLES:
        raise ConfigError(f"synth: unknown reply style {reply!r}; use {' or '.join(REPLY_STYLES)}")
    if use_llm and generator is None:
        raise ConfigError("synth: use_llm needs a generator; pass use_llm=False for the rules generator only")
    shares = shares or Shares()
    shares.validate()
    gens = [get_qa_generator("rules")] + ([get_qa_generator("llm", generator)] if use_llm else [])
    report = SynthReport(generators=[g.name for g in gens])
    chunks = store.iter_chunks()
    report.chunks_seen = len(chunks)
    doc_sha = {f.source: f.sha256 for f in store.files()}
    skipped: Counter[str] = Counter()

    with SynthState(store.dir) as state:
        report.pairs_dropped = state.prune({(c.id, c.hash) for c in chunks})
        for p in state.pairs:  # a changed document may keep some chunks; record the version they are in now
            p["doc_sha256"] = doc_sha.get(p["source"], p["doc_sha256"])
        index = QuestionIndex()
        for p in state.pairs:
            index.add(p["question"])
        views = _views(chunks, seed)
        todo = [c for c in chunks if any(not state.done(c.id, c.hash, g.name) for g in gens)]
        report.chunks_new = len(todo)
        last_save = time.monotonic()
        try:
            for c in tqdm(todo, desc="synth", unit="chunk", disable=not progress, file=sys.stderr):
                for gen in gens:
                    if state.done(c.id, c.hash, gen.name):
                        continue
                    new = _generate(views[c.id], gen, per_chunk, index, doc_sha.get(c.source, ""), skipped)
                    state.pairs.extend(new)
                    report.pairs_new += len(new)
                    state.mark(c.id, c.hash, c.source, gen.name)
                if any(g.uses_model for g in gens) and time.monotonic() - last_save > CHECKPOINT_S:
                    state.save()
                    last_save = time.monotonic()
        finally:
            state.save()  # an interrupted run keeps what it finished
        for gen in gens:
            skipped.update(gen.dropped)
            report.model_calls += gen.calls
        report.skipped = dict(sorted(skipped.items()))
        report.pairs_total = len(state.pairs)
        write_outputs(
            cfg, store, state.pairs, Path(out_dir), fmt, seed, shares, validation_share, report, reply
        )
    report.seconds = time.perf_counter() - t0
    # Like every kb run, the resolved configuration and the run's numbers go beside the outputs.
    settings = {
        "per_chunk": per_chunk,
        "fmt": fmt,
        "use_llm": use_llm,
        "seed": seed,
        "shares": vars(shares),
        "validation_share": validation_share,
        "reply": reply,
    }
    atomic_write_text(
        Path(out_dir) / "config.yaml",
        yaml.safe_dump({**cfg.to_dict(), "synth": settings}, allow_unicode=True, sort_keys=False),
    )
    atomic_write_text(
        Path(out_dir) / "report.json", json.dumps(report.to_json(), ensure_ascii=False, indent=1)
    )
    return report


def sample_pairs(store: Store, n: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    """n random kept pairs of a knowledge base (for eyeballing the generators' output)."""
    with SynthState(store.dir) as state:
        pairs = list(state.pairs)
    return random.Random(seed).sample(pairs, min(n, len(pairs)))
