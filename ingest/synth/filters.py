"""Filters every candidate pair passes before it is kept.

- support: at least MIN_SUPPORT of the answer's character bigrams (whitespace removed, NFKC, case-folded)
  occur in the evidence = the chunk's text + its heading path + its document's title. A copied sentence
  scores 1.0; an answer a model made up, or took from its own knowledge, scores low. Bigrams rather than
  words because Chinese has no spaces and a tokenizer would make the measure depend on its dictionary.
- length: questions of MIN_Q..MAX_Q characters, answers of MIN_A..MAX_A (a one-character answer is noise;
  a 600-character one is a passage, not an answer).
- answer in question: a question that already contains its gold answer ("…整个过程约需3分钟？" → "3分钟")
  teaches nothing; small models write such echoes.
- short reply: kept only when it occurs in the evidence verbatim (after the same normalisation);
  otherwise the pair keeps its sentence answer alone.
- near-duplicates: a question whose character-bigram Jaccard with an already kept question (from any chunk,
  earlier runs included) is ≥ DUP_JACCARD is dropped; the first one wins.
"""

from __future__ import annotations

import re
from collections import Counter

from ingest.synth.base import Candidate
from ingest.synth.text import bigrams, nfkc, support

MIN_SUPPORT = 0.6
DUP_JACCARD = 0.8
MIN_Q, MAX_Q = 4, 150
MIN_A, MAX_A = 2, 600

# Skip reasons (the keys of SynthReport.skipped).
MALFORMED = "malformed"
UNSUPPORTED = "unsupported"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
DUPLICATE = "duplicate"
ANSWER_IN_QUESTION = "answer_in_question"


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", "", nfkc(text).casefold())


def check(cand: Candidate, evidence: str) -> tuple[str | None, float]:
    """(skip reason or None, support score) for one candidate against its evidence."""
    q, a = cand.question.strip(), cand.answer.strip()
    if len(q) < MIN_Q or len(a) < MIN_A or not cand.gold.strip():
        return TOO_SHORT, 0.0
    if len(q) > MAX_Q or len(a) > MAX_A:
        return TOO_LONG, 0.0
    gold = _norm(cand.gold)
    if not re.search(r"[?？]\s*$", q) or not gold or re.match(r"[^\w“\"《（(]", q):
        return MALFORMED, 0.0  # also a question led by markup ("-[的第一周清单是什么？") or a gold of marks
    if len(gold) >= 2 and gold in _norm(q):
        return ANSWER_IN_QUESTION, 0.0
    score = support(a, evidence)
    if score < MIN_SUPPORT:
        return UNSUPPORTED, score
    return None, score


def short_reply(cand: Candidate, evidence: str) -> str:
    """The candidate's short reply when it occurs in the evidence verbatim, else "" (the sentence serves)."""
    short = cand.short.strip()
    key = _norm(short)
    return short if key and key in _norm(evidence) else ""


class QuestionIndex:
    """Kept questions as bigram sets with an inverted index, so a near-duplicate check looks only at the
    questions sharing a bigram instead of every kept one."""

    def __init__(self, threshold: float = DUP_JACCARD):
        self.threshold = threshold
        self.sets: list[set[str]] = []
        self.postings: dict[str, list[int]] = {}

    def _grams(self, question: str) -> set[str]:
        text = re.sub(r"[?？。.!！\s]+$", "", question)
        grams = set(bigrams(text))
        return grams or {text.casefold()}

    def near(self, question: str) -> bool:
        grams = self._grams(question)
        shared = Counter(i for g in grams for i in self.postings.get(g, ()))
        for i, n in shared.items():
            if n / (len(grams) + len(self.sets[i]) - n) >= self.threshold:
                return True
        return False

    def add(self, question: str) -> None:
        grams = self._grams(question)
        idx = len(self.sets)
        self.sets.append(grams)
        for g in grams:
            self.postings.setdefault(g, []).append(idx)
