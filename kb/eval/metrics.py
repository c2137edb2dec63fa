"""Every evaluation metric, defined in one place (this table is the reference; README links here).

Normalisation for matching (`norm`): NFKC (full-width → half-width), case-folded, curly quotes made
straight, all whitespace removed. Tokens (`tokens`): single CJK characters and lower-cased English
words/numbers, punctuation dropped — so Chinese is compared character by character, English word by word.

| metric (summary key) | per item | aggregated over |
|---|---|---|
| `retrieval.hit@k` | 1 when a *relevant* chunk is in the top k: its source path ends with the item's `source` and its normalised text contains a normalised gold answer | answerable items |
| `retrieval.mrr@10` | 1/rank of the first relevant chunk within the top 10, else 0 | answerable items |
| `answer.contains` | 1 when the (non-refused) answer, citation marks removed, contains a gold answer after `norm` | answerable items |
| `answer.f1` | token F1 of the answer (citation marks removed: "[1]" is not an answer token) against the best-matching gold answer; 0 when refused | answerable items |
| `answer.rouge_l` | ROUGE-L F1 (β = 1): LCS of the token sequences, 2·P·R/(P+R) with P = LCS/len(answer), R = LCS/len(gold); best gold; 0 when refused | answerable items |
| `grounding.citation` | share of the answer's cited chunks that contain a gold answer or the item's `evidence` (after `norm`) | answerable items answered with ≥ 1 citation |
| `grounding.faithfulness` | share of the answer's sentences supported by a cited chunk (below) | items answered with ≥ 1 citation |
| `refusal.precision` / `.recall` | "refused" is the positive class, `answerable: false` the truth | all items |
| `latency_s.p50` / `.p95` | seconds per question: retrieval + answering; nearest-rank percentiles | all items |

An item may carry `context`, a list of chunk ids: it is then answered from those chunks instead of
retrieved ones (`kb synth` writes it on its refusal items, whose answer the knowledge base holds elsewhere).

Faithfulness, lexical (the default): the answer, citation marks removed, is split into sentences
(`kb.grounding.sentences`); a sentence is *supported* when at least `FAITHFUL_MIN` (0.5) of its
character bigrams (`kb.grounding.bigrams`: NFKC, case-folded, punctuation and spaces removed) occur in
one cited chunk. Sentences without a bigram are skipped. With `eval.judge` set, a judge model is asked
per sentence whether the cited chunks support it (`kb.eval.judge`); supported when P(yes) ≥ 0.5.

Retrieval metrics are None for runs without retrieval; answer, grounding and refusal metrics are None for
`--retrieval-only` runs; grounding metrics are None for runs without retrieval (nothing is cited) and a
grounding value is None when no item qualifies. Confidence intervals in reports: percentile bootstrap over
items (`bootstrap_ci`), 1000 resamples, seeded.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from kb.grounding import bigrams, sentences, strip_citations

T = TypeVar("T")

_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "「": '"', "」": '"'})
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[a-z0-9]+")

FAITHFUL_MIN = 0.5  # share of a sentence's bigrams one cited chunk must hold (same as answer.min_support)

# The summary's metrics, "group.name": the names `eval.gate.metrics` accepts (all higher-is-better).
QUALITY_METRICS = (
    "retrieval.hit@1",
    "retrieval.hit@5",
    "retrieval.mrr@10",
    "answer.contains",
    "answer.f1",
    "answer.rouge_l",
    "grounding.citation",
    "grounding.faithfulness",
    "refusal.precision",
    "refusal.recall",
)


def short_name(metric: str) -> str:
    """For tables and plots: "answer.f1" → "f1"; the refusal pair keeps its group ("refusal P")."""
    group, _, name = metric.partition(".")
    if group == "refusal":
        return f"refusal {name[0].upper()}"
    return name or group


def norm(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).casefold().translate(_QUOTES)
    return "".join(t.split())


def contains_any(text: str, golds: list[str]) -> bool:
    t = norm(strip_citations(text))
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
    prediction = strip_citations(prediction)
    return max((token_f1(prediction, g) for g in golds), default=0.0)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a)·len(b)) time, O(len(b)) memory)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, gold: str) -> float:
    p, g = tokens(prediction), tokens(gold)
    if not p or not g:
        return float(p == g)
    lcs = lcs_length(p, g)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(g)
    return 2 * precision * recall / (precision + recall)


def best_rouge_l(prediction: str, golds: list[str]) -> float:
    prediction = strip_citations(prediction)
    return max((rouge_l(prediction, g) for g in golds), default=0.0)


def citation_correctness(cited_texts: list[str], golds: list[str], evidence: str = "") -> float | None:
    """Share of cited chunks holding a gold answer or the evidence; None when nothing is cited."""
    if not cited_texts:
        return None
    targets = [g for g in [*golds, evidence] if norm(g)]
    return sum(contains_any(t, targets) for t in cited_texts) / len(cited_texts)


def answer_sentences(answer: str) -> list[str]:
    """The answer's sentences that carry at least one bigram (citation marks do not count)."""
    return [s for s in sentences(answer) if bigrams(s)]


def sentence_support(sentence: str, chunk: str) -> float:
    """Share of the sentence's bigrams found in the chunk."""
    s = bigrams(sentence)
    return len(s & bigrams(chunk)) / len(s) if s else 0.0


def faithfulness(
    answer: str, cited_texts: list[str], supported: Callable[[str, list[str]], bool] | None = None
) -> float | None:
    """Share of answer sentences supported by a cited chunk; None when nothing is cited or no sentence
    carries text. `supported(sentence, cited_texts)` replaces the lexical test (the judge mode)."""
    sents = answer_sentences(answer)
    if not cited_texts or not sents:
        return None
    if supported is None:

        def supported(s: str, texts: list[str]) -> bool:
            return max(sentence_support(s, t) for t in texts) >= FAITHFUL_MIN

    return sum(supported(s, cited_texts) for s in sents) / len(sents)


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


def mean_or_none(values: list[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def bootstrap_cis(
    items: list[T],
    statistic: Callable[[list[T]], dict[str, float | None]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of several statistics at once, over `items` resampled with
    replacement (one resampling feeds every metric of a summary). Seeded, so a report is reproducible.
    A metric is left out when no resample gave it a value."""
    if not items:
        return {}
    rng = random.Random(seed)
    n = len(items)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        for key, v in statistic([items[rng.randrange(n)] for _ in range(n)]).items():
            if v is not None:
                draws.setdefault(key, []).append(v)
    tail = (1 - level) / 2
    out = {}
    for key, values in draws.items():
        values.sort()
        lo = values[max(0, math.floor(tail * len(values)))]
        hi = values[min(len(values) - 1, max(0, math.ceil((1 - tail) * len(values)) - 1))]
        out[key] = (lo, hi)
    return out


def bootstrap_ci(
    items: list[T],
    statistic: Callable[[list[T]], float | None],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """`bootstrap_cis` for one statistic; None when there are no items or values."""
    cis = bootstrap_cis(
        items, lambda sample: {"v": statistic(sample)}, resamples=resamples, seed=seed, level=level
    )
    return cis.get("v")
