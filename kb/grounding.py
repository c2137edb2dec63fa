"""Is an answer grounded in its sources? Evidence-based refusal for small generators.

A 0.5B model told "say you don't know when the sources lack the answer" either refuses nearly
everything or nothing (measured on corpus/qa.jsonl), and its yes/no judgement P("yes") did not
separate answerable from unanswerable questions (0.24–0.58 against 0.28–0.43). What does separate
them is what the answer *adds*: an answer to an unanswerable question restates the question
("QH-G300支持PoE供电。"), or adds facts found nowhere in the sources ("每天有10天的哺乳假").

The check, lexical and cheap (novel support): of the answer's character bigrams that are not
already in the question, the share that occurs in the retrieved sources. Below `min_support`, or too
few novel bigrams at all, the answer carries nothing from the documents → refuse.

A second check (alignment) asks whether the sentences the answer was copied from are about the
question's subject: the IDF-weighted share of the question's words they contain.

Tried and dropped: refusing when a question word occurs nowhere in the knowledge base. Employees
paraphrase (食堂 for 餐厅, 营收 for 营业收入): on corpus/qa.jsonl it flagged 22 of 86 answerable
questions against 13 of 20 unanswerable ones.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

_MARK = re.compile(r"[\[【]\s*\d+(?:\s*[,，、]\s*\d+)*\s*[\]】]|\[编号\]")
# Spaces and punctuation go; "%" stays, as part of a fact: a short answer "8%" would otherwise clean to
# the single character "8" and be taken for an empty one.
_PUNCT = re.compile(r"[^\w%]+|_+", re.UNICODE)


def strip_citations(text: str) -> str:
    """The text without its citation marks ([1], [1, 2], 【3】)."""
    return _MARK.sub(" ", text)


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


# Words that shape a question rather than name its subject (jieba tokens, lower-cased English).
QUESTION_WORDS = frozenset(
    "多少 什么 几天 几个 几次 几点 几号 几年 几位 哪里 哪天 哪个 哪些 怎么 怎样 如何 可以 需要 公司 员工 是否 有没有 "
    "没有 多久 多长 时间 一般 每个 最多 至少 请问 我们 能否 要求 一共 之前 应该 现在 时候 "
    "what which who when where why how many much long does do did is are was were can could should would will "
    "the and for with from about that this there any our you your company employee employees have has need get "
    "use per".split()
)
# Any word holding one of these is a question word (哪一天, 几号, 多少钱), whatever jieba made of it.
_QUESTION_PART = re.compile(r"[几哪吗呢怎啥]|多少|什么|多久|多长")
_SENT = re.compile(r"(?<=[。！？；!?;\n])|(?<=\. )")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text) if s.strip()]


def supporting_window(
    answer: str, question: str, sources: list[str], headings: list[str] | None = None
) -> tuple[str, int]:
    """The source sentence sharing most of the answer's new bigrams, with its neighbours (a list item
    or table row often names its subject one sentence earlier) and its source's heading path (or the
    section does: "青禾云 V3.2 发布说明 > 新功能" above "单个租户可接入的设备数量上限…20万台"); and the
    index of that source (-1 when no sentence shares a bigram with the answer).
    With the headings on corpus/qa.jsonl (bench/refusal.py, default prompt, alignment 0.4): refusal
    precision 0.63 -> 0.68 at the same recall 0.85, 2 fewer answerable questions refused."""
    novel = bigrams(answer) - bigrams(question)
    best, window, where = 0, "", -1
    for n, src in enumerate(sources):
        sents = sentences(src)
        head = headings[n] if headings else ""
        for i, s in enumerate(sents):
            overlap = len(novel & bigrams(s))
            if overlap > best:
                best, window, where = overlap, " ".join([head, *sents[max(0, i - 1) : i + 2]]).strip(), n
    return window, where


def name_tokens(source: str) -> frozenset[str]:
    """The words of a source's file name ("product/qh_g300_user_manual.pdf" → qh, g300, user, manual):
    the prompt shows the path above the text, and a manual may name its subject nowhere else. Numbers
    are left out: a date in a file name (meeting_minutes_2024-03-12) is no subject, and it matched
    "2024年" in a question about another quarter of 2024."""
    stem = source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return frozenset(w for w in re.split(r"[\W_]+", stem.casefold()) if len(w) >= 2 and not w.isdigit())


def alignment(
    question_tokens: list[str],
    window: str,
    idf: Callable[[str], float],
    names: frozenset[str] = frozenset(),
) -> float:
    """IDF-weighted share of the question's subject words that occur in `window`.

    An answer to an unanswerable question is copied from sentences about something else: asked
    about 补充商业医疗保险, the 0.5B model answers with the 保额 of the travel 意外保险. Rare words
    of the question (high IDF) missing from the supporting sentences are the tell.

    A word absent as a whole earns the share of its character bigrams the window holds: jieba cuts
    the question and the document differently (发工资 against 发放上月工资) and English inflects
    (referrals against referral). At a threshold of 0.4 on corpus/qa.jsonl (bench/refusal.py, the
    default prompt), whole words refused 18 of 86 answerable questions and 18 of 20 unanswerable ones;
    with partial credit 10 and 16. The cost stays where the employee's word is in no document at all:
    "食堂几点开门？" against "食堂营业时间为早上7点到晚上8点" scores 0.37 and is refused. Leaving such
    words out answered 4 more of the 86 but caught 5 fewer of the 20 unanswerable questions, whose
    missing subject (租房, PoE, Android) is exactly such a word.

    A question word equal to a word of the window's file name (`names`, name_tokens) counts in full,
    as a whole word only: bigram credit from long English file names answered unanswerable questions."""
    words = [t for t in dict.fromkeys(question_tokens) if not t.startswith("#") and len(t) >= 2]
    words = [t for t in words if t not in QUESTION_WORDS and not _QUESTION_PART.search(t)]
    total = sum(idf(t) for t in words)
    if total == 0:
        return 1.0
    w = clean_text(window)
    w_bigrams = {w[i : i + 2] for i in range(len(w) - 1)}
    found = 0.0
    for t in words:
        c = clean_text(t)
        if c and (c in w or c in names):
            found += idf(t)
            continue
        parts = {c[i : i + 2] for i in range(len(c) - 1)}
        if parts:
            found += idf(t) * len(parts & w_bigrams) / len(parts)
    return found / total


# Figures: digit runs with their decimal part ("1.5", "3.14"); "1,000" is one figure.
_FIGURE = re.compile(r"\d+(?:\.\d+)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_CN_DIGIT = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNIT = {"十": 10, "百": 100, "千": 1000, "万": 10_000}
_CN_NUMBER = re.compile(f"[{''.join(_CN_DIGIT)}{''.join(_CN_UNIT)}]+")


def _cn_value(word: str) -> int | None:
    """三十 → 30, 两千五百 → 2500, 十二 → 12, 一〇八 → 108 (digit by digit); None for what is not one."""
    if all(c in _CN_DIGIT for c in word):
        return int("".join(str(_CN_DIGIT[c]) for c in word))
    total, section, digit = 0, 0, None
    for c in word:
        if c in _CN_DIGIT:
            digit = _CN_DIGIT[c]
        elif c == "万":
            total += (section + (digit or 0)) * 10_000
            section, digit = 0, None
        else:  # 十 百 千: "十" alone means 10
            section += (1 if digit is None else digit) * _CN_UNIT[c]
            digit = None
    value = total + section + (digit or 0)
    return value or None  # a lone 万 is not a number


def _digit_text(text: str) -> str:
    """The text without citation marks, full-width digits made ASCII, "1,000" written "1000"."""
    return _THOUSANDS.sub("", unicodedata.normalize("NFKC", strip_citations(text)))


def figures(text: str) -> set[str]:
    """The numbers a text states, as digit strings ("1,000" and "一千" both give "1000")."""
    t = _digit_text(text)
    found = set(_FIGURE.findall(t))
    for word in _CN_NUMBER.findall(t):
        value = _cn_value(word)
        if value is not None:
            found.add(str(value))
    return found


def unsupported_figures(answer: str, question: str, sources: list[str]) -> list[str]:
    """Figures (in digits) of the answer that are neither in the question nor in any source: a number
    the model made up ("约1000小时" where no document gives a battery life). Chinese numerals in the
    sources count (三十天 supports "30天"); the answer's own are not checked."""
    asked = figures(question)
    known = set().union(*(figures(s) for s in sources)) if sources else set()
    return sorted({f for f in _FIGURE.findall(_digit_text(answer)) if f not in asked and f not in known})
