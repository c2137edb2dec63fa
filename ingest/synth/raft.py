"""RAFT training conversations, the split by document, and the validation QA set.

Each kept pair becomes one conversation in exactly the shape the answer flow sends at inference
(`kb.prompt.answer_messages` over `Hit`s, or `plain_messages`), in one of three modes:
  oracle      the gold chunk among 2-3 distractor chunks, shuffled; the reply is the answer citing the gold
              chunk's number as "[n]" (the form `kb.answer.resolve_citations` produces)
  distractor  the distractors only; the reply is the refusal sentence the system prompt asks for
  plain       no sources (`plain_messages`); the reply is the bare answer
Distractors come from other documents, nearest to the gold chunk by embedding first (what retrieval would
put beside it at inference, so the model learns to pick the right source among similar ones), and never a
chunk that itself holds the answer. Every choice is seeded by (seed, pair id): the same pairs, store and
seed give byte-identical files.

The reply is the pair's short reply ("20万台。") when it has one and the style is "short" (the default),
else its sentence answer. The system prompt asks for a short answer, and a 0.5B model tuned on sentences
that restate the question answered held-out questions at length: more often right, lower in F1 than
untuned (bench/README.md, issue 3).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest.synth.filters import MIN_SUPPORT
from ingest.synth.text import nfkc, support
from kb.errors import ConfigError
from kb.generate.base import Message
from kb.prompt import answer_messages, plain_messages
from kb.schema import Chunk, Hit

ORACLE, DISTRACTOR, PLAIN = "oracle", "distractor", "plain"
MODES = (ORACLE, DISTRACTOR, PLAIN)
REPLY_STYLES = ("short", "sentence")

# What the system prompt (kb.prompt.SYSTEM) tells the model to reply when the sources lack the answer.
# Both match kb.prompt.REFUSAL_PATTERNS, so the answer flow marks the trained reply as a refusal.
REFUSAL_REPLY = {"zh": "资料中没有相关信息。", "en": "The sources do not contain this information."}

NEAR_POOL = 8  # distractors are drawn from this many nearest chunks of other documents


@dataclass
class Shares:
    oracle: float = 0.7
    distractor: float = 0.15
    plain: float = 0.15

    def validate(self) -> None:
        vals = (self.oracle, self.distractor, self.plain)
        if any(v < 0 for v in vals) or abs(sum(vals) - 1.0) > 1e-6:
            raise ConfigError(f"synth shares must be >= 0 and sum to 1, got oracle/distractor/plain = {vals}")


def _key(seed: int, text: str) -> str:
    return hashlib.sha1(f"{seed}\0{text}".encode()).hexdigest()


def assign_modes(ids: list[str], shares: Shares, seed: int) -> dict[str, str]:
    """Exact shares (largest remainder) over ids ordered by a seeded hash: about 70/15/15 even for a
    handful of pairs, and still a deterministic function of (ids, seed)."""
    n = len(ids)
    raw = [shares.oracle * n, shares.distractor * n, shares.plain * n]
    counts = [int(r) for r in raw]
    for i in sorted(range(3), key=lambda i: counts[i] - raw[i])[: n - sum(counts)]:
        counts[i] += 1
    order = sorted(ids, key=lambda i: _key(seed, i))
    out, start = {}, 0
    for mode, count in zip(MODES, counts, strict=True):
        out.update({i: mode for i in order[start : start + count]})
        start += count
    return out


def split_sources(sources: list[str], share: float) -> set[str]:
    """The validation documents: the round(share * n) sources (at least 1 when there are 2 or more and
    share > 0, never all of them) with the smallest sha1 of their path. Independent of the seed and of the other documents'
    content, so a document stays on its side while the knowledge base changes around it."""
    uniq = sorted(set(sources))
    if len(uniq) < 2 or share <= 0:
        return set()
    n = min(max(1, round(share * len(uniq))), len(uniq) - 1)
    return set(sorted(uniq, key=lambda s: hashlib.sha1(s.encode()).hexdigest())[:n])


class Distractors:
    """Picks distractor chunks: nearest by embedding among other documents' chunks, then random ones."""

    def __init__(self, chunks: list[Chunk], vectors: np.ndarray | None):
        self.chunks = chunks
        self.pos = {c.id: i for i, c in enumerate(chunks)}
        self.vectors = vectors
        self.sources = np.array([c.source for c in chunks])
        self._near: dict[str, list[int]] = {}

    def _nearest(self, gold: Chunk) -> list[int]:
        if gold.id not in self._near:
            other = np.flatnonzero(self.sources != gold.source)
            if self.vectors is not None and gold.id in self.pos and len(other):
                sims = self.vectors[other] @ self.vectors[self.pos[gold.id]]
                self._near[gold.id] = [int(other[i]) for i in np.argsort(-sims, kind="stable")[:NEAR_POOL]]
            else:
                self._near[gold.id] = []
        return self._near[gold.id]

    def pick(
        self,
        gold: Chunk,
        answer: str,
        gold_fact: str,
        rng: random.Random,
        banned: frozenset[str] = frozenset(),
    ) -> list[Chunk]:
        """2-3 chunks of other documents (none of `banned`) that do not hold the answer."""
        k = rng.choice((2, 3))
        fact = nfkc("".join(gold_fact.split())).casefold()

        def usable(i: int) -> bool:
            c = self.chunks[i]
            text = nfkc("".join(c.text.split())).casefold()
            if c.source == gold.source or c.source in banned:
                return False
            return fact not in text and support(answer, c.text) < MIN_SUPPORT

        near = [i for i in self._nearest(gold) if usable(i)]
        picked = rng.sample(near, min(k, len(near)))
        if len(picked) < k:  # too few near ones: random chunks (a bounded draw, not a pass over the store)
            draw = rng.sample(range(len(self.chunks)), min(len(self.chunks), 16 * k))
            picked += [i for i in draw if i not in picked and usable(i)][: k - len(picked)]
        return [self.chunks[i] for i in picked]


def _hits(chunks: list[Chunk]) -> list[Hit]:
    return [Hit(chunk=c, score=round(1.0 - 0.1 * i, 3)) for i, c in enumerate(chunks)]


def conversation(
    pair: dict[str, Any],
    mode: str,
    gold: Chunk,
    distractors: Distractors,
    max_chars: int,
    seed: int,
    banned: frozenset[str] = frozenset(),
    reply: str = "short",
) -> tuple[list[Message], list[str]]:
    """The training conversation for one pair in the given mode (see the module docstring), and the ids
    of the chunks shown as sources. `banned` documents never serve as distractors (training prompts
    must not show the validation documents' text); `reply` is one of REPLY_STYLES."""
    rng = random.Random(_key(seed, pair["id"]))
    question, answer, lang = pair["question"], pair["answer"], pair["lang"]
    text = (pair.get("short") if reply == "short" else "") or answer  # pairs from before "short": answer
    if mode == PLAIN:
        return [*plain_messages(question), {"role": "assistant", "content": text}], []
    others = distractors.pick(gold, answer, pair["gold"], rng, banned)
    if mode == DISTRACTOR:
        rng.shuffle(others)
        messages = answer_messages(question, _hits(others), max_chars)
        return [*messages, {"role": "assistant", "content": REFUSAL_REPLY[lang]}], [c.id for c in others]
    while True:
        chunks = [*others, gold]
        rng.shuffle(chunks)
        n = chunks.index(gold) + 1
        messages = answer_messages(question, _hits(chunks), max_chars)
        # format_sources drops sources past max_chars; the cited one must be in the prompt.
        if f"[{n}] (" in messages[-1]["content"] or not others:
            break
        others = others[:-1]
    return [*messages, {"role": "assistant", "content": f"{text.rstrip()} [{n}]"}], [c.id for c in chunks]


def qa_record(pair: dict[str, Any], mode: str, context: list[str]) -> dict[str, Any]:
    """One `kb eval` QA item. A refusal pair becomes an unanswerable item: its question has no answer in
    the distractor sources it was trained with (`context`), though the knowledge base as a whole holds it."""
    answerable = mode != DISTRACTOR
    rec = {
        "id": pair["id"],
        "question": pair["question"],
        "answers": [pair["gold"]] if answerable else [],
        "source": pair["source"] if answerable else "",
        "evidence": pair["answer"] if answerable else "",
        "answerable": answerable,
        "lang": pair["lang"],
    }
    if not answerable:
        rec["context"] = context
    return rec
