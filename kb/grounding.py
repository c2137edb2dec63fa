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
