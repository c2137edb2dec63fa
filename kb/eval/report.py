"""`kb eval --report DIR`: report.md and report.html (same content) with PNG figures beside them.

Sections: the metrics per configuration with 95% bootstrap confidence intervals (items resampled with
replacement, `eval.bootstrap` times, seeded: on a set of ~100 questions one item moves a share by 0.01,
so the interval says which differences are real), metric bars, the hit@k curve, the latency histogram,
and the ten worst items of each configuration with retrieval (of every configuration when none has
retrieval) with question, gold answers, answer, why it refused, and retrieved sources.

Worst = lowest item score: for an answerable item the mean of contains, F1 and ROUGE-L (0 when refused);
for an unanswerable one 1 when refused, else 0; ties: the relevant chunk missing or ranked lower first.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from kb.eval import metrics as M
from kb.eval.matrix import Run
from kb.eval.runner import flatten, fmt, summarize

WORST = 10
Block = tuple[Any, ...]  # ("h2", text) | ("p", text) | ("table", head, rows) | ("img", file, alt)


def flat(summary: dict[str, Any]) -> dict[str, float | None]:
    """The quality metrics of a summary as {"group.name": value} (None where not measured)."""
    f = flatten(summary)
    return {key: f[key] for key in M.QUALITY_METRICS}


def confidence_intervals(run: Run, resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    generate = run.summary.get("answer") is not None
    return M.bootstrap_cis(
        run.results,
        lambda sample: flat(summarize(sample, retrieval=run.retrieval, generate=generate)),
        resamples=resamples,
        seed=seed,
    )


def item_score(rec: dict[str, Any]) -> float:
    if "answer" not in rec:  # retrieval only
        return 1.0 / rec["rank"] if rec.get("rank") else 0.0
    if not rec["answerable"]:
        return 1.0 if rec["refused"] else 0.0
    if rec["refused"]:
        return 0.0
    return (float(rec["contains"]) + rec["f1"] + rec["rouge_l"]) / 3


def worst_items(results: list[dict[str, Any]], n: int = WORST) -> list[dict[str, Any]]:
    return sorted(results, key=lambda r: (item_score(r), -(r.get("rank") or 99), r["id"]))[:n]


def _short(text: str, n: int = 160) -> str:
    t = " ".join(str(text).split())
    return t if len(t) <= n else t[: n - 1] + "…"


def _sources(rec: dict[str, Any], n: int = 3) -> str:
    srcs = [h["source"] + (f" p.{h['page']}" if h.get("page") else "") for h in rec.get("retrieved", [])[:n]]
    rank = rec.get("rank")
    return (
        "; ".join(srcs) + (f" (relevant at {rank})" if rank else " (no relevant chunk in top 10)")
        if srcs
        else "—"
    )


def _worst_table(run: Run) -> Block:
    head = ["id", "score", "question", "gold", "answer", "retrieved sources"]
    rows = []
    for r in worst_items(run.results):
        answer = r.get("answer", "")
        if r.get("refused"):
            answer = f"(refused: {r.get('why') or 'model'}) {answer}"
        gold = " / ".join(r["answers"]) or "(unanswerable)"
        rows.append(
            [
                r["id"],
                f"{item_score(r):.2f}",
                _short(r["question"]),
                _short(gold),
                _short(answer),
                _sources(r),
            ]
        )
    return ("table", head, rows)


def build(out_dir: Path, runs: list[Run], *, title: str, resamples: int = 1000, seed: int = 0) -> list[Block]:
    from kb.eval import plots

    cis = [confidence_intervals(r, resamples, seed) for r in runs]
    values = [flat(r.summary) for r in runs]
    shown = [m for m in M.QUALITY_METRICS if any(v[m] is not None for v in values)]
    n = runs[0].summary["n"] if runs else 0
    blocks: list[Block] = [
        ("h1", title),
        (
            "p",
            f"{time.strftime('%Y-%m-%d %H:%M')} · {n} questions ({runs[0].summary['n_answerable'] if runs else 0} "
            f"answerable) · {len(runs)} configuration(s) · 95% confidence intervals: percentile bootstrap over "
            f"items, {resamples} resamples, seed {seed}. Metric definitions: kb/eval/metrics.py.",
        ),
        ("h2", "Metrics"),
    ]
    head = ["configuration", *(M.short_name(m) for m in shown), "p50 s", "p95 s"]
    rows = []
    for run, v, ci in zip(runs, values, cis, strict=True):
        cells = [fmt(v[m]) + (f" [{ci[m][0]:.2f}, {ci[m][1]:.2f}]" if m in ci else "") for m in shown]
        lat = run.summary["latency_s"]
        rows.append([run.label, *cells, f"{lat['p50']:.2f}", f"{lat['p95']:.2f}"])
    blocks.append(("table", head, rows))
    faith = sorted({r.summary["faithfulness_by"] for r in runs if r.summary.get("faithfulness_by")})
    if faith:
        blocks.append(("p", f"Faithfulness measured by: {', '.join(faith)}."))
    if shown:
        plots.metric_bars(out_dir / "metrics.png", [r.label for r in runs], shown, values, cis)
        blocks.append(("img", "metrics.png", "metric bars per configuration"))
    curves: dict[str, list[int | None]] = {}
    for run in (r for r in runs if r.retrieval):
        ranks = [r["rank"] for r in run.results if r["answerable"]]
        same = next((k for k, v in curves.items() if v == ranks), None)
        if same is None:
            curves[run.label] = ranks
        else:  # configurations share a retriever: one line, named after all of them
            curves[f"{same}, {run.label}"] = curves.pop(same)
    if curves:
        blocks.append(("h2", "Retrieval: hit@k"))
        plots.hit_curve(out_dir / "hit_at_k.png", curves)
        blocks.append(("img", "hit_at_k.png", "hit@k for k = 1..10"))
    blocks.append(("h2", "Latency"))
    plots.latency_histogram(
        out_dir / "latency.png", {r.label: [x["seconds"] for x in r.results] for r in runs}
    )
    blocks.append(("img", "latency.png", "latency histogram"))
    worst_runs = [r for r in runs if r.retrieval] or runs
    for run in worst_runs:
        blocks.append(("h2", f"The {WORST} worst items: {run.label}"))
        blocks.append(_worst_table(run))
    return blocks


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b[0] == "h1":
            out.append(f"# {b[1]}")
        elif b[0] == "h2":
            out.append(f"## {b[1]}")
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})")
        else:
            _, head, rows = b
            lines = ["| " + " | ".join(map(_md_cell, head)) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


CSS = (
    "body{font-family:system-ui,'Noto Sans CJK SC',sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 6px;"
    "vertical-align:top}th{background:#f3f3f3}img{max-width:100%}"
)


def to_html(blocks: list[Block]) -> str:
    e = html.escape
    body = []
    for b in blocks:
        if b[0] in ("h1", "h2", "p"):
            body.append(f"<{b[0]}>{e(b[1])}</{b[0]}>")
        elif b[0] == "img":
            body.append(f'<p><img src="{e(b[1])}" alt="{e(b[2])}"></p>')
        else:
            _, head, rows = b
            trs = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
            body.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + f"</tr>{trs}</table>")
    title = next((b[1] for b in blocks if b[0] == "h1"), "kb eval")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    out_dir: Path, runs: list[Run], *, title: str = "kb eval", resamples: int = 1000, seed: int = 0
) -> list[Path]:
    """Write report.md, report.html and the PNGs into out_dir; returns the two report paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = build(out_dir, runs, title=title, resamples=resamples, seed=seed)
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks), encoding="utf-8")
    return [md, page]
