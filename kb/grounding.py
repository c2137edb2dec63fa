"""Is an answer grounded in its sources? Evidence-based refusal for small generators.

A 0.5B model told "say you don't know when the sources lack the answer" either refuses nearly
everything or nothing (measured on corpus/qa.jsonl), and its yes/no judgement P("yes") did not
separate answerable from unanswerable questions (0.24–0.58 against 0.28–0.43). What does separate
them is what the answer *adds*: an answer to an unanswerable question restates the question
("QH-G300支持PoE供电。"), or adds facts found nowhere in the sources ("每天有10天的哺乳假").

The check, lexical and cheap (novel support): of the answer's character bigrams that are not
already in the question, the share that occurs in the retrieved sources. Below `min_support`, or too
few novel bigrams at all, the answer carries nothing from the documents → refuse.

Tried and dropped: refusing when a question word occurs nowhere in the knowledge base. Employees
paraphrase (食堂 for 餐厅, 营收 for 营业收入): on corpus/qa.jsonl it flagged 22 of 86 answerable
questions against 13 of 20 unanswerable ones.
"""

from __future__ import annotations

import re
import unicodedata

_MARK = re.compile(r"[\[【]\s*\d+(?:\s*[,，、]\s*\d+)*\s*[\]】]|\[编号\]")
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)


def clean_text(text: str) -> str:
    t = unicodedata.normalize("NFKC", _MARK.sub("", text)).casefold()
    return _PUNCT.sub("", t)


def bigrams(text: str) -> set[str]:
    t = clean_text(text)
    return {t[i : i + 2] for i in range(len(t) - 1)}


def novel_support(answer: str, question: str, sources: list[str]) -> tuple[float, int]:
    """(share of the answer's new bigrams found in the sources, number of new bigrams)."""
    novel = bigrams(answer) - bigrams(question)
    if not novel:
        return 0.0, 0
    src = set().union(*(bigrams(s) for s in sources)) if sources else set()
    return len(novel & src) / len(novel), len(novel)


# Bigrams and words that shape a question rather than name its subject.
_STOP_BIGRAMS = frozenset(
    "多少 什么 几天 几个 几次 几点 几号 几年 几位 哪里 哪天 哪个 哪些 怎么 怎样 如何 可以 需要 公司 员工 是否 有没 没有 "
    "多久 多长 长时 时间 一般 每个 最多 至少 请问 我们 能否 要求 的是 是多 少钱 一共 要在 之前 应该 现在 什么 么时 时候".split()
)
_STOP_WORDS = frozenset(
    "what which who whom whose when where why how many much long does do did is are was were can could should "
    "would will the and for with from about that this there any our you your company employee employees have has "
    "need get use per".split()
)
_SENT = re.compile(r"(?<=[。！？；!?;\n])|(?<=\. )")
_CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[a-z][a-z0-9-]{2,}")


def focus_units(text: str) -> set[str]:
    """What a text is about: CJK bigrams and English word stems (5 letters), question words removed."""
    t = unicodedata.normalize("NFKC", text).casefold()
    units = {run[i : i + 2] for run in _CJK_RUN.findall(t) for i in range(len(run) - 1)} - _STOP_BIGRAMS
    units |= {w[:5] for w in _WORD.findall(t) if w not in _STOP_WORDS}
    return units


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text) if s.strip()]


def question_alignment(answer: str, question: str, sources: list[str]) -> float:
    """How much of the question's subject the sentences that supply the answer talk about.

    The answer's new bigrams point at the source sentences it was taken from; an answer to an
    unanswerable question is taken from sentences about something else (意外保险 for a question on
    商业医疗保险). Returns the best share of the question's focus units found in a supporting
    sentence (with its neighbours, which often carry the subject of a list or table row)."""
    novel = bigrams(answer) - bigrams(question)
    focus = focus_units(question)
    if not novel or not focus:
        return 0.0 if not novel else 1.0
    best_overlap, best_align = 0, 0.0
    for src in sources:
        sents = sentences(src)
        for i, s in enumerate(sents):
            overlap = len(novel & bigrams(s))
            if overlap == 0 or overlap < best_overlap:
                continue
            window = " ".join(sents[max(0, i - 1) : i + 2])
            align = len(focus & focus_units(window)) / len(focus)
            if overlap > best_overlap:
                best_overlap, best_align = overlap, align
            else:
                best_align = max(best_align, align)
    return best_align
