"""The answer flow: retrieve → prompt → generate → check the answer is grounded → cite.

Refusal is decided from evidence, not from the prompt alone (kb/grounding.py says why and how):
an answer that adds nothing found in the sources, or a refusal phrase from the model; optionally
the best cosine and the model's P(yes) before generating.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from kb.access import Principal, departments_of, visible
from kb.config import AnswerConfig, Config
from kb.generate.base import Generator, Message
from kb.grounding import (
    alignment,
    clean_text,
    name_tokens,
    novel_support,
    supporting_window,
    unsupported_figures,
)
from kb.prompt import (
    REFUSAL,
    REFUSAL_PATTERNS,
    answer_messages,
    fit_sources,
    language,
    plain_messages,
    support_messages,
)
from kb.retrieve import Retriever
from kb.schema import Answer, Citation, Hit

_MARK = re.compile(r"[\[【]\s*(\d+(?:\s*[,，、]\s*\d+)*)\s*[\]】]")


def cited_numbers(text: str, n_sources: int) -> list[int]:
    """Source numbers the text cites as [n], [n, m], 【n】, in order of first mention, within range."""
    seen: list[int] = []
    for m in _MARK.finditer(text):
        for part in re.split(r"[,，、]", m.group(1)):
            n = int(part)
            if 1 <= n <= n_sources and n not in seen:
                seen.append(n)
    return seen


def _bigrams(text: str) -> set[str]:
    t = "".join(text.lower().split())
    return {t[i : i + 2] for i in range(len(t) - 1)}


def best_supporting(answer: str, hits: list[Hit]) -> int | None:
    """1-based number of the source sharing most character bigrams with the answer (None if nothing)."""
    a = _bigrams(_MARK.sub("", answer))
    if not a or not hits:
        return None
    overlaps = [len(a & _bigrams(h.chunk.text)) for h in hits]
    best = max(range(len(hits)), key=lambda i: overlaps[i])
    return best + 1 if overlaps[best] > 0 else None


def resolve_citations(text: str, hits: list[Hit]) -> tuple[str, list[Citation]]:
    """Map [n] markers to chunks. When the model cited nothing, attribute the answer to the source
    it overlaps most and append that marker, so every non-refused answer carries a source."""
    numbers = cited_numbers(text, len(hits))
    if not numbers:
        best = best_supporting(text, hits)
        if best is not None:
            text = f"{text.rstrip()} [{best}]"
            numbers = [best]
    cits = []
    for n in numbers:
        c = hits[n - 1].chunk
        cits.append(
            Citation(
                n=n,
                source=c.source,
                page=c.page,
                chunk_id=c.id,
                text=c.text,
                heading=" > ".join(c.headings),
                departments=list(c.departments),
            )
        )
    return text, cits


class Answerer:
    def __init__(self, retriever: Retriever | None, generator: Generator, cfg: Config):
        self.retriever, self.generator, self.cfg = retriever, generator, cfg
        self.acfg: AnswerConfig = cfg.answer

    def retrieve(self, question: str, k: int | None = None, user: Principal | None = None) -> list[Hit]:
        """Hits visible to `user` (None = unrestricted): only these can reach the prompt, the
        citations and a refusal's closest sources."""
        if not self.retriever:
            return []
        return self.retriever.search(question, k or self.cfg.retrieval.k, user=user)

    def answer(
        self,
        question: str,
        *,
        hits: list[Hit] | None = None,
        retrieval: bool = True,
        history: list[Message] | None = None,
        on_token: Callable[[str], None] | None = None,
        user: Principal | None = None,
    ) -> Answer:
        """Answer from the sources `user` may read. Hits passed in are filtered by `user` again, so a
        caller's stale list cannot put a hidden chunk in the prompt."""
        t0 = time.perf_counter()
        lang = language(question)
        if not retrieval:
            text = self._generate(plain_messages(question, history), on_token)
            return Answer(text, [], bool(REFUSAL_PATTERNS.search(text)), time.perf_counter() - t0)
        if hits is None:
            hits = self.retrieve(question, user=user)
        departments = departments_of(user)
        hits = [h for h in hits if visible(h.chunk.departments, departments)][: self.cfg.retrieval.k]
        refuse, why = self.refuse_before(question, hits)
        if refuse:
            if on_token:
                on_token(REFUSAL[lang])
            return Answer(REFUSAL[lang], [], True, time.perf_counter() - t0, hits, why)
        shown = fit_sources(hits, self.acfg.max_context_chars)  # the sources the prompt shows
        text = self._generate(
            answer_messages(question, shown, self.acfg.max_context_chars, history), on_token
        )
        refuse, why, text = self.check(question, text, shown)
        if refuse:
            return Answer(REFUSAL[lang], [], True, time.perf_counter() - t0, hits, why)
        text, cits = resolve_citations(text, shown)
        return Answer(text, cits, False, time.perf_counter() - t0, hits, why)

    def check(self, question: str, text: str, shown: list[Hit]) -> tuple[bool, str, str]:
        """After generation: (refused, why, the text to show). A refused answer to a quantity question
        becomes the quoted source sentence when one holds the quantity asked for (why says so)."""
        refuse, why = self.refuse_after(question, text, shown)
        if not refuse:
            return False, "", text
        quoted = self.quote_instead(question, shown)
        if quoted is None:
            return True, why, text
        return False, f"quoted the source instead of the generated answer ({why})", quoted

    def _keyword_index(self) -> Any:
        """The retriever's keyword index (its IDF weights the grounding checks), or None."""
        return getattr(getattr(self.retriever, "store", None), "keyword", None)

    def quote_instead(self, question: str, shown: list[Hit]) -> str | None:
        """For a quantity question whose generated answer was refused: the source sentence that holds
        the quantity asked for, with its citation mark (kb/fallback.py), or None."""
        keyword = self._keyword_index()
        if self.acfg.quote_min_alignment <= 0 or keyword is None or not shown:
            return None
        from kb.fallback import quantity_sentence
        from kb.keyword import tokenize

        found = quantity_sentence(
            question,
            tokenize(question, search=False),
            [h.chunk.text for h in shown],
            [" ".join(h.chunk.headings) for h in shown],
            keyword.idf,
            self.acfg.quote_min_alignment,
        )
        if found is None:
            return None
        n, sentence = found
        return f"{sentence.strip().lstrip('-•●*· ').strip()} [{n + 1}]"  # without its list marker

    def refuse_before(self, question: str, hits: list[Hit]) -> tuple[bool, str]:
        if not hits:
            return True, "no sources found"
        best = max((h.dense for h in hits if h.dense is not None), default=None)
        if self.acfg.refuse_min_dense > 0 and best is not None and best < self.acfg.refuse_min_dense:
            return True, f"best similarity {best:.3f} < answer.refuse_min_dense"
        if self.acfg.support_check:
            p = self.generator.yes_probability(support_messages(question, hits, self.acfg.max_context_chars))
            if p is not None and p < self.acfg.support_threshold:
                return True, f"P(sources answer) {p:.2f} < answer.support_threshold"
        return False, ""

    def refuse_after(self, question: str, text: str, hits: list[Hit]) -> tuple[bool, str]:
        if len(clean_text(text)) < 2:
            return True, "empty answer"
        if REFUSAL_PATTERNS.search(text):
            return True, "the model said the sources do not answer"
        share, n_novel = novel_support(text, question, [h.chunk.text for h in hits])
        if n_novel < self.acfg.min_novel:
            return True, "the answer only restates the question"
        if share < self.acfg.min_support:
            return True, f"only {share:.0%} of the answer is found in the sources"
        if self.acfg.check_figures:
            # what the model saw: each source's path and heading path as well as its text
            seen = [f"{h.chunk.source}\n{' '.join(h.chunk.headings)}\n{h.chunk.text}" for h in hits]
            made_up = unsupported_figures(text, question, seen)
            if made_up:
                return True, f"{', '.join(made_up)}: in no source"
        keyword = self._keyword_index()
        if self.acfg.min_alignment > 0 and keyword is not None:
            from kb.keyword import tokenize

            heads = [" ".join(h.chunk.headings) for h in hits]
            sources = [f"{head}\n{h.chunk.text}" for head, h in zip(heads, hits, strict=True)]
            window, n = supporting_window(text, question, sources, heads)
            names = name_tokens(hits[n].chunk.source) if n >= 0 else frozenset()
            score = alignment(tokenize(question, search=False), window, keyword.idf, names)
            if score < self.acfg.min_alignment:
                return (
                    True,
                    f"the sentences the answer comes from are about something else (alignment {score:.2f})",
                )
        return False, ""

    def _generate(self, messages: list[Message], on_token: Callable[[str], None] | None) -> str:
        pieces = []
        for piece in self.generator.stream(messages):
            pieces.append(piece)
            if on_token:
                on_token(piece)
        return "".join(pieces).strip()
