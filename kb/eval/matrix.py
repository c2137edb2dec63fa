"""`kb eval --matrix`: the same questions through {base model, adapters} × {with, without retrieval}.

Each model is loaded once and answers its two configurations; retrieval runs once per question and is
shared by every configuration with retrieval (they use the same retriever), its time counted in each
one's latency. Every row is what a single `kb eval` run with the same settings gives (tested).
"""

from __future__ import annotations

import dataclasses
import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kb.access import Principal
from kb.answer import Answerer
from kb.config import Config
from kb.eval.judge import Judge
from kb.eval.runner import GROUPS, QAItem, RetrievalCache, evaluate, flatten, fmt
from kb.generate.base import Generator
from kb.retrieve import Retriever

BASE = "base"  # the row label of the base model (generator.adapter=none)


@dataclass
class Run:
    """One configuration's outcome: its summary and per-item results."""

    model: str  # BASE or an adapter name
    retrieval: bool
    summary: dict[str, Any]
    results: list[dict[str, Any]]

    @property
    def label(self) -> str:
        if self.summary.get("answer") is None and self.retrieval:
            return "retrieval only"
        return f"{self.model} {'+' if self.retrieval else '-'}retrieval"

    @property
    def slug(self) -> str:
        return f"{self.model}.{'retrieval' if self.retrieval else 'no-retrieval'}"

    def row(self) -> dict[str, Any]:
        """{"model", "retrieval": bool, ...metrics}, the metrics flattened to "group.name" keys (the
        summary's "retrieval" group would otherwise collide with the flag)."""
        return {"model": self.model, "retrieval": self.retrieval, **flatten(self.summary)}


def plan_models(active: str | None, adapters: list[str] | None) -> tuple[list[str], str]:
    """The models of a matrix, base first, and a note for the user ("" when none is needed).

    `adapters` given: those (after the base model); else the active adapter when there is one."""
    if adapters:
        return [BASE, *dict.fromkeys(a for a in adapters if a != BASE)], ""
    if active:
        return [BASE, active], ""
    return [BASE], "no adapter is active: the matrix has the base model's rows only"


def with_adapter(cfg: Config, model: str) -> Config:
    """The config a single run uses for `model` (`--base` or `--adapter NAME`)."""
    adapter = "none" if model == BASE else model
    return dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, adapter=adapter))


def run_matrix(
    items: list[QAItem],
    cfg: Config,
    models: list[str],
    open_generator: Callable[[Config], Generator],
    retriever: Retriever,
    *,
    judge: Judge | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
    user: Principal | None = None,
) -> list[Run]:
    """Rows in the order model × (with retrieval, without); `open_generator(cfg)` loads one model."""
    cache = RetrievalCache()
    runs = []
    for model in models:
        mcfg = with_adapter(cfg, model)
        if progress:
            print(f"eval: loading {model}…", file=sys.stderr, flush=True)
        answerer = Answerer(retriever, open_generator(mcfg), mcfg)
        for retrieval in (True, False):
            run = Run(model, retrieval, {}, [])
            run.summary, run.results = evaluate(
                items,
                answerer,
                retrieval=retrieval,
                out_dir=out_dir / run.slug if out_dir else None,
                cache=cache,
                judge=judge,
                progress=progress,
                desc=run.label,
                user=user,
            )
            runs.append(run)
        del answerer  # free this model before the next one loads
        gc.collect()
    return runs


def format_matrix(runs: list[Run]) -> str:
    """One table: a row per configuration, a column per metric."""
    cols = [
        (g, k) for g in GROUPS for k in next((r.summary[g] for r in runs if r.summary.get(g)), None) or {}
    ]
    names = {("refusal", "precision"): "refusal_p", ("refusal", "recall"): "refusal_r"}
    head = ["model", "retrieval", *(names.get((g, k), k if g != "latency_s" else f"{k}_s") for g, k in cols)]
    rows = [
        [
            r.model,
            "yes" if r.retrieval else "no",
            *(fmt((r.summary.get(g) or {}).get(k)) for g, k in cols),
        ]
        for r in runs
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)) for line in [head, *rows]]
    return "\n".join(lines)
