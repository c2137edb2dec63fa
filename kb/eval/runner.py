"""`kb eval`: run every question of a QA set through retrieval (and generation) and score it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from kb.access import Principal
from kb.answer import Answerer
from kb.errors import DataError
from kb.eval import metrics as M
from kb.eval.judge import Judge
from kb.schema import Hit

REQUIRED = ("id", "question", "answers", "answerable")
RANKS = 10  # hits retrieved per question: hit@k for k = 1..10 and MRR@10; the prompt takes retrieval.k


@dataclass
class QAItem:
    id: str
    question: str
    answers: list[str]
    answerable: bool
    source: str = ""
    evidence: str = ""
    lang: str = ""
    # Chunk ids to answer from instead of retrieving: `kb synth`'s refusal items, whose answer the knowledge
    # base holds elsewhere but not in the distractor chunks the question was paired with.
    context: list[str] = field(default_factory=list)


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
        context = d.get("context", [])
        if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
            raise DataError(f"{p}:{n}: 'context' must be a list of chunk ids, got {context!r}")
        items.append(
            QAItem(
                str(d["id"]),
                d["question"],
                [str(a) for a in d["answers"]],
                bool(d["answerable"]),
                d.get("source", ""),
                d.get("evidence", ""),
                d.get("lang", ""),
                context,
            )
        )
    return items


class RetrievalCache:
    """Hits per question, and the seconds the retrieval took, shared between configurations that use the
    same retriever (a matrix run retrieves once per question; each configuration's latency still counts
    that retrieval time)."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, tuple[str, ...] | None], tuple[list[Hit], float]] = {}

    def get(
        self, answerer: Answerer, question: str, k: int, user: Principal | None = None
    ) -> tuple[list[Hit], float]:
        if not self._hits:
            # Untimed warm-up: the first search loads jieba's dictionary (seconds), which would
            # otherwise land in the first item's latency and, on a small set, in p95.
            answerer.retrieve(question, k=k, user=user)
        # Cached per question and per what the user may see, so one user's hits never serve another.
        seen = None if user is None or user.effective is None else tuple(sorted(user.effective))
        if (question, seen) not in self._hits:
            t0 = time.perf_counter()
            hits = answerer.retrieve(question, k=k, user=user)
            self._hits[question, seen] = (hits, time.perf_counter() - t0)
        return self._hits[question, seen]


def context_hits(answerer: Answerer, item: QAItem) -> list[Hit]:
    """The item's context chunks, in order, as hits (no scores: they were not retrieved). Called only
    when answering with retrieval, so the answerer has a retriever and its store."""
    store = answerer.retriever.store  # type: ignore[union-attr]
    found = {cid: store.chunk_by_id(cid) for cid in item.context}
    missing = [cid for cid, chunk in found.items() if chunk is None]
    if missing:
        raise DataError(
            f"item {item.id}: context chunk(s) {', '.join(missing)} are not in the knowledge base "
            "(re-ingested since `kb synth`? run `kb synth` again)"
        )
    return [Hit(chunk=found[cid], score=0.0) for cid in item.context]  # type: ignore[arg-type]


def run_items(
    items: list[QAItem],
    answerer: Answerer,
    *,
    retrieval: bool = True,
    generate: bool = True,
    progress: bool = True,
    cache: RetrievalCache | None = None,
    judge: Callable[[str, list[str]], bool] | None = None,
    desc: str = "eval",
    user: Principal | None = None,
) -> Iterator[dict[str, Any]]:
    """One result dict per item, as it completes (so a caller can save per-item JSONL as it goes).
    `judge(sentence, cited_texts)` replaces the lexical faithfulness test (metrics.py). `user`: evaluate
    as this user sees the knowledge base (retrieval filtered by department)."""
    cache = cache or RetrievalCache()
    for item in tqdm(items, desc=desc, unit="q", disable=not progress, file=sys.stderr):
        if retrieval and item.context:
            hits, retrieval_s = context_hits(answerer, item), 0.0
        else:
            hits, retrieval_s = cache.get(answerer, item.question, RANKS, user) if retrieval else ([], 0.0)
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
        answer_s = 0.0
        if generate:
            t0 = time.perf_counter()
            ans = answerer.answer(item.question, hits=hits, retrieval=retrieval, user=user)
            answer_s = time.perf_counter() - t0
            cited = [c.text for c in ans.citations]
            answered = not ans.refused
            rec.update(
                answer=ans.answer,
                refused=ans.refused,
                why=ans.why,
                citations=[c.n for c in ans.citations],
                contains=answered and M.contains_any(ans.answer, item.answers),
                f1=M.best_f1(ans.answer, item.answers) if answered else 0.0,
                rouge_l=M.best_rouge_l(ans.answer, item.answers) if answered else 0.0,
                citation=M.citation_correctness(cited, item.answers, item.evidence) if answered else None,
                faithfulness=M.faithfulness(ans.answer, cited, judge) if answered else None,
            )
        rec["seconds"] = retrieval_s + answer_s
        yield rec


def summarize(
    results: list[dict[str, Any]],
    *,
    retrieval: bool = True,
    generate: bool = True,
    faithfulness_by: str = "lexical",
) -> dict[str, Any]:
    """The metrics of metrics.py over per-item results, rounded to 4 places."""
    answerable = [r for r in results if r["answerable"]]
    ranks = [r["rank"] for r in answerable]
    out: dict[str, Any] = {"n": len(results), "n_answerable": len(answerable)}
    out["retrieval"] = (
        {"hit@1": M.hit_at(ranks, 1), "hit@5": M.hit_at(ranks, 5), "mrr@10": M.mrr_at(ranks, 10)}
        if retrieval
        else None
    )
    out["answer"] = out["grounding"] = out["refusal"] = None
    if generate:
        n = len(answerable)
        out["answer"] = {
            key: sum(r[key] for r in answerable) / n if n else 0.0 for key in ("contains", "f1", "rouge_l")
        }
        if retrieval:
            out["grounding"] = {
                "citation": M.mean_or_none([r["citation"] for r in answerable]),
                "faithfulness": M.mean_or_none([r["faithfulness"] for r in results]),
            }
            out["faithfulness_by"] = faithfulness_by
        p, rcl = M.precision_recall([r["refused"] for r in results], [not r["answerable"] for r in results])
        out["refusal"] = {"precision": p, "recall": rcl}
    secs = [r["seconds"] for r in results]
    out["latency_s"] = {"p50": M.percentile(secs, 50), "p95": M.percentile(secs, 95)}
    return _round(out)


def evaluate(
    items: list[QAItem],
    answerer: Answerer,
    *,
    retrieval: bool = True,
    generate: bool = True,
    out_dir: Path | None = None,
    cache: RetrievalCache | None = None,
    judge: Judge | None = None,
    progress: bool = True,
    desc: str = "eval",
    user: Principal | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run and summarize one configuration; with `out_dir`, per-item results go to items.jsonl as they
    complete (a crash keeps what was done) and the summary to summary.json."""
    results: list[dict[str, Any]] = []
    out = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        out = open(out_dir / "items.jsonl", "w", encoding="utf-8")  # noqa: SIM115
    try:
        for rec in run_items(
            items,
            answerer,
            retrieval=retrieval,
            generate=generate,
            progress=progress,
            cache=cache,
            judge=judge,
            desc=desc,
            user=user,
        ):
            results.append(rec)
            if out:
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                out.flush()
    finally:
        if out:
            out.close()
    by = f"judge:{judge.name}" if judge else "lexical"
    summary = summarize(results, retrieval=retrieval, generate=generate, faithfulness_by=by)
    if user is not None:
        summary["as"] = {"user": user.name, "departments": sorted(user.departments or [])}
    if out_dir is not None:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary, results


def read_results(path: Path) -> list[dict[str, Any]]:
    """Per-item results written by `evaluate` (items.jsonl)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    return x


GROUPS = ("retrieval", "answer", "grounding", "refusal", "latency_s")


def flatten(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary as one flat record: counts, then "group.metric" keys (every metric of metrics.py, None
    where the run did not measure it) — the shape of a matrix row."""
    out: dict[str, Any] = {"n": summary["n"], "n_answerable": summary["n_answerable"]}
    for key in (*M.QUALITY_METRICS, "latency_s.p50", "latency_s.p95"):
        group, name = key.split(".", 1)
        out[key] = (summary.get(group) or {}).get(name)
    if summary.get("faithfulness_by"):
        out["faithfulness_by"] = summary["faithfulness_by"]
    return out


def fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"questions: {summary['n']} ({summary['n_answerable']} answerable)"]
    for group in GROUPS:
        vals = summary.get(group)
        if vals:
            lines.append(f"{group:<10}" + "  ".join(f"{k}={fmt(v)}" for k, v in vals.items()))
    if summary.get("faithfulness_by"):
        lines.append(f"faithfulness measured by: {summary['faithfulness_by']}")
    return "\n".join(lines)
