"""Is an answer grounded in its sources? Evidence-based refusal for small generators.

A 0.5B model told "say you don't know when the sources lack the answer" either refuses nearly
everything or nothing (measured on corpus/qa.jsonl), and its yes/no judgement P("yes") did not
separate answerable from unanswerable questions (0.24–0.58 against 0.28–0.43). What does separate
them is what the answer *adds*: an answer to an unanswerable question restates the question
("QH-G300支持PoE供电。"), or adds facts found nowhere in the sources ("每天有10天的哺乳假").

Two checks, both lexical and cheap:
- novel support: of the answer's character bigrams that are not already in the question, the share
  that occurs in the retrieved sources. Below `min_support`, or too few novel bigrams at all, the
  answer carries nothing from the documents → refuse.
- unknown terms: a content word of the question that occurs nowhere in the knowledge base (BM25
  vocabulary) is something the documents never mention → refuse. Only applied when the question
  and the sources share a language (an English question about a Chinese document legitimately uses
  words the documents lack).
"""

from __future__ import annotations

import re
import unicodedata

from kb.prompt import language

_MARK = re.compile(r"[\[【]\s*\d+(?:\s*[,，、]\s*\d+)*\s*[\]】]|\[编号\]")
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)

# Words that shape a question rather than name its subject; never evidence of an unknown topic.
QUESTION_WORDS = frozenset(
    "什么 多少 几 哪 哪些 哪个 哪天 哪里 怎么 怎样 如何 是否 可以 能否 能 需要 要 有没有 有 没有 吗 呢 的 了 "
    "多久 多长 多长时间 时间 一共 最多 最少 至少 一般 每个 每月 每天 每年 公司 员工 我们 我 请问 现在 "
    "what which who whom whose when where why how many much long does do did is are was were can could "
    "should would will the a an of for to in on at by with from about there any our we you your company "
    "employee employees".split()
)


def _clean(text: str) -> str:
    t = unicodedata.normalize("NFKC", _MARK.sub("", text)).casefold()
    return _PUNCT.sub("", t)


def bigrams(text: str) -> set[str]:
    t = _clean(text)
    return {t[i : i + 2] for i in range(len(t) - 1)}


def novel_support(answer: str, question: str, sources: list[str]) -> tuple[float, int]:
    """(share of the answer's new bigrams found in the sources, number of new bigrams)."""
    novel = bigrams(answer) - bigrams(question)
    if not novel:
        return 0.0, 0
    src = set().union(*(bigrams(s) for s in sources)) if sources else set()
    return len(novel & src) / len(novel), len(novel)


def unknown_terms(question_tokens: list[str], vocabulary: dict[str, int]) -> list[str]:
    """Content words of the question (≥2 CJK characters or ≥3 letters) absent from the whole KB."""
    out = []
    for t in dict.fromkeys(question_tokens):
        if t.startswith("#") or t in QUESTION_WORDS:
            continue
        long_enough = len(t) >= 3 if t.isascii() else len(t) >= 2
        if long_enough and not t.isdigit() and t not in vocabulary:
            out.append(t)
    return out


def same_language(question: str, sources: list[str]) -> bool:
    return bool(sources) and language(question) == language(" ".join(sources))
