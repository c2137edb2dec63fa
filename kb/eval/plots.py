"""The report's figures (matplotlib, Agg backend: no display needed). Labels are ASCII on purpose:
the default fonts have no CJK glyphs; questions and answers go into the report's tables instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from kb.eval import metrics as M  # noqa: E402

DPI = 110


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def metric_bars(
    path: Path,
    labels: list[str],
    metrics: list[str],
    values: list[dict[str, float | None]],
    cis: list[dict[str, tuple[float, float]]],
) -> Path:
    """Grouped bars: one group per metric, one bar per configuration, 95% CI whiskers."""
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(metrics) + 2), 4.2))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        xs, ys, lo, hi = [], [], [], []
        for j, m in enumerate(metrics):
            v = values[i].get(m)
            if v is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(v)
            a, b = cis[i].get(m, (v, v))
            lo.append(max(0.0, v - a))
            hi.append(max(0.0, b - v))
        ax.bar(xs, ys, width, label=label, yerr=[lo, hi], capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([M.short_name(m) for m in metrics], rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% bootstrap CI)")
    ax.set_title("Metrics per configuration")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=min(4, len(labels)))
    return _save(fig, path)


def hit_curve(path: Path, curves: dict[str, list[int | None]], k_max: int = 10) -> Path:
    """hit@k for k = 1..k_max, one line per distinct retrieval (configurations sharing it share a line)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = list(range(1, k_max + 1))
    for label, ranks in curves.items():
        ax.plot(ks, [M.hit_at(ranks, k) for k in ks], marker="o", label=label)
    ax.set_xticks(ks)
    ax.set_xlabel("k (retrieved chunks)")
    ax.set_ylabel("hit@k (answerable items)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Retrieval: share of questions with a relevant chunk in the top k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def latency_histogram(path: Path, seconds: dict[str, list[float]]) -> Path:
    """Seconds per question: per bin, one bar per configuration side by side (none hides another)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.6))
    everything = [s for v in seconds.values() for s in v]
    top = max(everything, default=1.0) or 1.0
    bins = [top * i / 15 for i in range(16)]
    labels = [
        f"{label} (p50 {M.percentile(v, 50):.2f}s, p95 {M.percentile(v, 95):.2f}s)"
        for label, v in seconds.items()
    ]
    ax.hist(list(seconds.values()), bins=bins, label=labels)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("seconds per question (retrieval + answer)")
    ax.set_ylabel("questions")
    ax.set_title("Latency")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(2, len(labels)))
    return _save(fig, path)
