"""The promotion gate of `kb finetune`: activate a new adapter only if it does not regress.

The candidate (the new adapter) and the incumbent (the active adapter, or the base model when none is
active) answer the same evaluation sets (`gate_sets`: the synth validation split and the configured gold
set); `decide` — a pure function of the two sets of scores — refuses the candidate when any configured
metric (`eval.gate.metrics`) is lower than the incumbent's by more than `eval.gate.tolerance` on any set.
A metric the candidate did not measure (None) while the incumbent did counts as 0; one neither measured is
skipped. `kb finetune --force` activates a refused candidate anyway; the decision and both scores are
stored in the candidate's meta.json (`gate`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kb.answer import Answerer
from kb.config import Config
from kb.eval.matrix import BASE, with_adapter
from kb.eval.runner import QAItem, RetrievalCache, evaluate, flatten, fmt, read_qa
from kb.generate.base import Generator

Scores = dict[str, dict[str, float | None]]  # evaluation set → "group.metric" → value


@dataclass
class GateDecision:
    accepted: bool
    candidate: str
    incumbent: str
    metrics: list[str]
    tolerance: float
    scores: dict[str, Scores]  # {"candidate": ..., "incumbent": ...}
    regressions: list[str] = field(default_factory=list)  # one readable line per regressed metric

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        return gate_lines(self.to_dict())


def gate_lines(record: dict[str, Any]) -> list[str]:
    """A gate record (GateDecision.to_dict(), as stored in meta.json) as a table: per set and metric,
    both scores and whether the drop stays within tolerance."""
    cand, inc = record["scores"]["candidate"], record["scores"]["incumbent"]
    out = [f"gate: {record['candidate']} against {record['incumbent']} (tolerance {record['tolerance']:g})"]
    for name in cand:
        for m in record["metrics"]:
            c, i = cand[name].get(m), inc.get(name, {}).get(m)
            bad = any(r.startswith(f"{name} {m} ") for r in record["regressions"])
            out.append(f"  {name:<10} {m:<24} {fmt(c)} vs {fmt(i)}  {'REGRESSED' if bad else 'ok'}")
    return out


def decide(
    candidate: Scores,
    incumbent: Scores,
    *,
    metrics: list[str],
    tolerance: float,
    names: tuple[str, str] = ("candidate", BASE),
) -> GateDecision:
    """Accept unless some metric on some set drops by more than `tolerance` (no I/O, no models)."""
    regressions = []
    for set_name, inc in incumbent.items():
        cand = candidate.get(set_name, {})
        for m in metrics:
            i, c = inc.get(m), cand.get(m)
            if i is None and c is None:
                continue
            i, c = i or 0.0, c or 0.0
            if c < i - tolerance - 1e-9:  # scores are rounded to 4 places: no float noise at the edge
                regressions.append(f"{set_name} {m} {c:.4f} < {i:.4f} - {tolerance:g}")
    return GateDecision(
        accepted=not regressions,
        candidate=names[0],
        incumbent=names[1],
        metrics=list(metrics),
        tolerance=tolerance,
        scores={"candidate": candidate, "incumbent": incumbent},
        regressions=regressions,
    )


def gate_sets(cfg: Config, train_path: Path | None = None) -> dict[str, list[QAItem]]:
    """The evaluation sets: "validation" (validation_qa.jsonl beside the training data, else
    <kb_dir>/synth/) when enabled and present, and "gold" (`eval.gate.gold`, an error when missing)."""
    g = cfg.eval.gate
    sets: dict[str, list[QAItem]] = {}
    if g.validation:
        candidates = [Path(cfg.kb_dir) / "synth" / "validation_qa.jsonl"]
        if train_path is not None:
            candidates.insert(0, Path(train_path).parent / "validation_qa.jsonl")
        found = next((p for p in candidates if p.is_file()), None)
        if found is not None:
            sets["validation"] = read_qa(found)
    if g.gold:
        sets["gold"] = read_qa(g.gold)
    if g.limit:
        sets = {k: v[: g.limit] for k, v in sets.items()}
    return {k: v for k, v in sets.items() if v}


def score_model(
    cfg: Config,
    model: str,
    sets: dict[str, list[QAItem]],
    open_generator: Callable[[Config], Generator],
    *,
    retriever: Any = None,
    caches: dict[str, RetrievalCache] | None = None,
    progress: bool = True,
) -> Scores:
    """Flat metrics of `model` (BASE or an adapter name) on each set, with retrieval when `retriever`."""
    mcfg = with_adapter(cfg, model)
    answerer = Answerer(retriever, open_generator(mcfg), mcfg)
    caches = caches if caches is not None else {}
    out: Scores = {}
    for name, items in sets.items():
        summary, _ = evaluate(
            items,
            answerer,
            retrieval=retriever is not None,
            cache=caches.setdefault(name, RetrievalCache()),
            progress=progress,
            desc=f"gate {name} {model}",
        )
        flat = flatten(summary)
        out[name] = {k: v for k, v in flat.items() if isinstance(v, float | int | type(None))}
    return out


def run_gate(
    cfg: Config,
    candidate: str,
    incumbent: str | None,
    sets: dict[str, list[QAItem]],
    *,
    open_generator: Callable[[Config], Generator] | None = None,
    progress: bool = True,
) -> GateDecision:
    """Score the incumbent (an adapter name, or None for the base model) and the candidate, then decide.
    The models load one after the other; retrieval runs once per question for both."""
    if open_generator is None:
        from kb.service import open_generator
    retriever = None
    if cfg.eval.gate.retrieval:
        from kb.service import open_retriever

        retriever = open_retriever(cfg)
    caches: dict[str, RetrievalCache] = {}
    scores = {}
    for role, model in (("incumbent", incumbent or BASE), ("candidate", candidate)):
        if progress:
            print(f"gate: evaluating {role} {model}…", file=sys.stderr, flush=True)
        scores[role] = score_model(
            cfg, model, sets, open_generator, retriever=retriever, caches=caches, progress=progress
        )
    g = cfg.eval.gate
    return decide(
        scores["candidate"],
        scores["incumbent"],
        metrics=g.metrics,
        tolerance=g.tolerance,
        names=(candidate, incumbent or BASE),
    )
