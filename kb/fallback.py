"""Quote the source sentence instead of refusing, for questions that ask for a quantity.

When the grounding checks (kb/grounding.py) reject the generated answer, the 0.5B model has often
copied the wrong row of the right table (asked for the limit on 补卡, it answers with the one on
迟到), while one sentence among its sources names every subject word of the question and holds a
quantity of the kind asked for. Quoting that sentence, with its citation, answers the employee; an
answer type the sentence lacks (几个月 with no "N个月" in it, 多少名 with no "N名") keeps the refusal.

Only quantity questions fall back: for those the answer type can be checked in the sentence, for
"does the gateway support PoE?" it cannot, and a sentence naming the subject is no answer.

Measured on corpus/qa.jsonl with the session-3 generations (bench/refusal.py score; 0.75 chosen on
that set, so expect less on unseen questions): 3 of the 8 answerable questions refused are answered,
each with its gold answer, and none of the 17 unanswerable questions refused is answered; two of
them (年终奖发几个月, 西安办事处有多少名员工) have a sentence naming all their subject words (alignment
1.0) and are kept refused only by the answer type.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from kb.grounding import alignment, sentences

_CN_NUM = "零一二两三四五六七八九十百千万亿"
_NUM = rf"(?:\d+(?:\.\d+)?|[{_CN_NUM}]+)\s*"
# Spans, not dates: "1月" and "15日" name a day, "1个月" and "15天" a length.
_TIME_UNITS = "分钟|小时|个?工作日|天|周|个月|年|minutes?|hours?|days?|weeks?|months?|years?"
_NAMED_TIME = {"天": "天|个?工作日", "工作日": "个?工作日|天", "个工作日": "个?工作日|天"}
_MONEY_UNITS = "元|万元|亿元|美元|块|yuan|usd|rmb|dollars?"

# What kind of quantity a question asks for: a time span, money, a count of a named unit, or any number.
_TIME_UNIT_Q = re.compile(r"几\s*(天|个?工作日|周|个月|年|小时|分钟)")
_TIME_Q = re.compile(
    r"多长时间|多久|几(?:天|个?工作日|周|个月|年|小时|分钟)|how long|how many (?:days|hours|weeks|months|years|minutes)",
    re.I,
)
_MONEY_Q = re.compile(r"多少钱|多少元|多少费用|报销多少|how much (?:money|does|is|will)", re.I)
_UNIT_Q = re.compile(r"(?:几|多少)\s*(个|名|次|台|家|条|项|位|份|人|层|张|套)")
_ANY_Q = re.compile(r"多少|几|多大|多高|多重|how many|how much|maximum|minimum|at most|at least|limit", re.I)


def answer_pattern(question: str) -> re.Pattern[str] | None:
    """The pattern a sentence must match to answer `question`, or None when it asks no quantity."""
    if m := _TIME_UNIT_Q.search(question):  # 几个月 wants "N个月", 几天 "N天" or "N个工作日"
        unit = _NAMED_TIME.get(m.group(1), re.escape(m.group(1)))
        return re.compile(rf"{_NUM}(?:{unit})")
    if _TIME_Q.search(question):
        return re.compile(rf"{_NUM}(?:{_TIME_UNITS})", re.I)
    if _MONEY_Q.search(question):
        return re.compile(rf"(?:{_NUM}(?:{_MONEY_UNITS})|[¥$]\s*\d)", re.I)
    if m := _UNIT_Q.search(question):
        unit = "名|人" if m.group(1) in ("名", "人", "位") else re.escape(m.group(1))
        return re.compile(rf"{_NUM}(?:{unit})")
    if _ANY_Q.search(question):
        return re.compile(rf"\d|[{_CN_NUM}]+(?:个|次|天|名|人|元|台)")
    return None


def quantity_sentence(
    question: str,
    question_tokens: list[str],
    sources: list[str],
    headings: list[str],
    idf: Callable[[str], float],
    min_alignment: float,
) -> tuple[int, str] | None:
    """(index of the source, sentence) best aligned with the question (its heading path counted as
    part of it) among those holding the quantity asked for, if its alignment reaches `min_alignment`."""
    pattern = answer_pattern(question)
    if pattern is None:
        return None
    best: tuple[float, int, str] | None = None
    for n, src in enumerate(sources):
        for s in sentences(src):
            if not pattern.search(s):
                continue
            score = alignment(question_tokens, f"{headings[n]} {s}", idf)
            if score >= min_alignment and (best is None or score > best[0]):
                best = (score, n, s)
    return (best[1], best[2]) if best else None
