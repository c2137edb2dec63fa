"""`kb eval`: run every question of a QA set through retrieval (and generation) and score it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from kb.access import Principal
from kb.answer import Answerer
from kb.errors import DataError
from kb.eval import metrics as M

REQUIRED = ("id", "question", "answers", "answerable")


@dataclass
class QAItem:
    id: str
    question: str
    answers: list[str]
    answerable: bool
    source: str = ""
    evidence: str = ""
    lang: str = ""


def read_qa(path: str | Path) -> list[QAItem]:
    items = []
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such QA file")
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}:{n}: not valid JSON ({e.msg})") from None
        missing = [k for k in REQUIRED if k not in d]
        if missing:
            raise DataError(f"{p}:{n}: missing field(s) {', '.join(missing)}")
        if not isinstance(d["answers"], list):
            raise DataError(f"{p}:{n}: 'answers' must be a list, got {type(d['answers']).__name__}")
        items.append(
            QAItem(
                str(d["id"]),
                d["question"],
                [str(a) for a in d["answers"]],
                bool(d["answerable"]),
                d.get("source", ""),
                d.get("evidence", ""),
                d.get("lang", ""),
            )
        )
    return items


def run_items(
    items: list[QAItem],
    answerer: Answerer,
    *,
    retrieval: bool = True,
    generate: bool = True,
    progress: bool = True,
    user: Principal | None = None,
) -> Iterator[dict[str, Any]]:
    """One result dict per item, as it completes (so a caller can save per-item JSONL as it goes).
    `user`: evaluate as this user sees the knowledge base (retrieval filtered by department)."""
    for item in tqdm(items, desc="eval", unit="q", disable=not progress, file=sys.stderr):
        t0 = time.perf_counter()
        hits = answerer.retrieve(item.question, k=10, user=user) if retrieval else []
        rec: dict[str, Any] = {
            "id": item.id,
            "question": item.question,
            "answers": item.answers,
            "answerable": item.answerable,
            "source": item.source,
            "retrieved": [
                {"source": h.chunk.source, "page": h.chunk.page, "chunk_id": h.chunk.id, "dense": h.dense}
                for h in hits
            ],
        }
        rec["rank"] = M.first_relevant_rank(
            [(h.chunk.source, h.chunk.text) for h in hits], item.source, item.answers
        )
        if generate:
            ans = answerer.answer(item.question, hits=hits, retrieval=retrieval, user=user)
            rec.update(
                answer=ans.answer,
                refused=ans.refused,
                why=ans.why,
                citations=[c.n for c in ans.citations],
                contains=M.contains_any(ans.answer, item.answers) if not ans.refused else False,
                f1=0.0 if ans.refused else M.best_f1(ans.answer, item.answers),
            )
        rec["seconds"] = time.perf_counter() - t0
        yield rec


def summarize(
    results: list[dict[str, Any]], *, retrieval: bool = True, generate: bool = True
) -> dict[str, Any]:
    answerable = [r for r in results if r["answerable"]]
    ranks = [r["rank"] for r in answerable]
    out: dict[str, Any] = {"n": len(results), "n_answerable": len(answerable)}
    out["retrieval"] = (
        {"hit@1": M.hit_at(ranks, 1), "hit@5": M.hit_at(ranks, 5), "mrr@10": M.mrr_at(ranks, 10)}
        if retrieval
        else None
    )
    if generate:
        out["answer"] = {
            "contains": sum(r["contains"] for r in answerable) / len(answerable) if answerable else 0.0,
            "f1": sum(r["f1"] for r in answerable) / len(answerable) if answerable else 0.0,
        }
        p, rcl = M.precision_recall([r["refused"] for r in results], [not r["answerable"] for r in results])
        out["refusal"] = {"precision": p, "recall": rcl}
    else:
        out["answer"] = None
        out["refusal"] = None
    secs = [r["seconds"] for r in results]
    out["latency_s"] = {"p50": M.percentile(secs, 50), "p95": M.percentile(secs, 95)}
    return _round(out)


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    return x


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"questions: {summary['n']} ({summary['n_answerable']} answerable)"]
    for group in ("retrieval", "answer", "refusal", "latency_s"):
        vals = summary.get(group)
        if vals:
            lines.append(f"{group:<10}" + "  ".join(f"{k}={v:.3f}" for k, v in vals.items()))
    return "\n".join(lines)
