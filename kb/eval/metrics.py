"""Every evaluation metric, defined in one place.

Normalisation for matching (`norm`): NFKC (full-width → half-width), case-folded, curly quotes made
straight, all whitespace removed. Retrieval metrics count answerable items only.

- hit@k: share of answerable items with a *relevant* chunk in the top k. A chunk is relevant when its
  source path ends with the item's `source` and its normalised text contains a normalised gold answer.
- mrr@10: mean of 1/rank of the first relevant chunk within the top 10 (0 when none).
- contains: share of answerable items whose answer contains a gold answer (normalised).
- f1: token F1 against the best-matching gold answer; tokens are single CJK characters and
  lower-cased English words/numbers (punctuation dropped); mean over answerable items.
- refusal precision/recall: "refused" is the positive class, `answerable: false` the truth.
- latency p50/p95: of whole-question seconds (retrieval + generation), nearest-rank percentiles.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "「": '"', "」": '"'})
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[a-z0-9]+")


def norm(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).casefold().translate(_QUOTES)
    return "".join(t.split())


def contains_any(text: str, golds: list[str]) -> bool:
    t = norm(text)
    return any(norm(g) and norm(g) in t for g in golds)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def token_f1(prediction: str, gold: str) -> float:
    p, g = tokens(prediction), tokens(gold)
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def best_f1(prediction: str, golds: list[str]) -> float:
    return max((token_f1(prediction, g) for g in golds), default=0.0)


def is_relevant(source: str, text: str, item_source: str, golds: list[str]) -> bool:
    return bool(item_source) and source.endswith(item_source) and contains_any(text, golds)


def first_relevant_rank(hits: list[tuple[str, str]], item_source: str, golds: list[str]) -> int | None:
    """1-based rank of the first relevant (source, text) hit, or None."""
    for rank, (source, text) in enumerate(hits, start=1):
        if is_relevant(source, text, item_source, golds):
            return rank
    return None


def hit_at(ranks: list[int | None], k: int) -> float:
    return sum(r is not None and r <= k for r in ranks) / len(ranks) if ranks else 0.0


def mrr_at(ranks: list[int | None], k: int = 10) -> float:
    return sum(1.0 / r for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def precision_recall(predicted: list[bool], actual: list[bool]) -> tuple[float, float]:
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    n_pred, n_act = sum(predicted), sum(actual)
    return (tp / n_pred if n_pred else 0.0), (tp / n_act if n_act else 0.0)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]
