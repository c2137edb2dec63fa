"""Text helpers shared by the question generators and the filters: line cleaning, sentence splitting,
number/date spans, document titles and the character-bigram measures.

The bigram measures work on any script without a tokenizer: Chinese has no spaces, and a 0.5B model's
answers are judged the same way whether they are Chinese or English.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from kb.schema import Chunk

# List markers and section numbers at the start of a line: "- ", "1. ", "（1）", "● ", "2.1 ", "第三条 ", "一、".
_MARKER = re.compile(
    r"^\s*(?:[-*+•●▪]\s+|\[[ x]\]\s+|\d+(?:\.\d+)*[.、)]?\s+|\d+[.、)]\s*|[（(]\d+[）)]\s*|"
    r"第[一二三四五六七八九十百\d]+[章条节部分]\s*|[一二三四五六七八九十]+、\s*|[①-⑳]\s*)"
)
_HEADING_LINE = re.compile(r"^\s*#{1,6}\s+")
_SENT_END_ZH = re.compile(r"(?<=[。！？；])")
_SENT_END_EN = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def strip_marker(line: str) -> str:
    """A line without its list marker or section number ("2.4 忘记打卡的…" → "忘记打卡的…")."""
    line = _HEADING_LINE.sub("", line).strip()
    line = line.lstrip(">").strip()
    return _MARKER.sub("", line, count=1).strip()


def has_marker(line: str) -> bool:
    """True when the line starts a list item or a numbered clause ("- …", "2.4 …", "（1）…")."""
    return bool(_MARKER.match(_HEADING_LINE.sub("", line).lstrip(">").strip()))


def clean_heading(heading: str) -> str:
    """A heading without numbering or markdown, for use inside a question ("第四条 住宿标准" → "住宿标准")."""
    h = strip_marker(heading.strip("# ").strip())
    return h.strip(" :：")


def body_lines(chunk: Chunk) -> list[str]:
    """The chunk's lines without heading lines, blank lines and markdown table separators."""
    out = []
    for raw in chunk.text.splitlines():
        line = raw.strip()
        if not line or _HEADING_LINE.match(line) or re.fullmatch(r"[|:\-\s]+", line):
            continue
        if chunk.headings and line.strip("# ") == chunk.headings[-1]:
            continue
        out.append(line)
    return out


def _glue(a: str, b: str) -> str:
    """a + b with a space only between Latin characters ("7×" + "24小时" → "7×24小时")."""
    return a + b if re.search(r"[^\x00-\x7f]$", a) or re.match(r"^[^\x00-\x7f]", b) else f"{a} {b}"


def join_items(lines: list[tuple[bool, str]], lang: str) -> list[str]:
    """Rebuild sentences from lines: a line joins the previous one when the previous was cut mid-sentence
    (a PDF wrap: no end mark and long, or ending in a comma), and starts a new item when it carries a list
    marker or the previous line looks complete (short, or ends a sentence)."""
    items: list[str] = []
    for marked, line in lines:
        prev = items[-1] if items else ""
        wrapped = (
            bool(prev)
            and not re.search(r"[。！？.!?；;:：]$", prev)
            and (len(prev) >= 40 or re.search(r"[，,、（(“\-×]$", prev) or re.match(r"^[a-z，,。）)]", line))
        )
        if wrapped and not marked:
            items[-1] = _glue(prev, line)
        else:
            items.append(line)
    return [end_sentence(i, lang) for i in items]


_ABBREV = re.compile(r"(?:\b(?:Pte|Ltd|Co|Inc|No|Mr|Ms|Dr|St|vs|etc|e\.g|i\.e)|\b[A-Z])\.$")


def sentences(text: str, lang: str) -> list[str]:
    """Split text into sentences; the terminal punctuation stays with its sentence. English splits are
    undone after abbreviations ("Pte. Ltd.", "No. 5")."""
    if lang == "zh":
        return [p.strip() for p in _SENT_END_ZH.split(text) if p and p.strip()]
    out: list[str] = []
    for part in _SENT_END_EN.split(text):
        if out and _ABBREV.search(out[-1]):
            out[-1] += " " + part
        elif part.strip():
            out.append(part.strip())
    return out


def end_sentence(text: str, lang: str) -> str:
    """text ending in one sentence mark: Chinese "。", English "."."""
    text = text.strip().rstrip("；;，,、:：")
    if not text or text[-1] in "。！？.!?":
        return text
    return text + ("。" if lang == "zh" else ".")


# ---------- numbers, dates, amounts: the short "key facts" that make a gold answer ----------


@dataclass
class Span:
    start: int
    end: int
    text: str
    kind: str  # date | year | time | percent | money | count | phone
    value: float | None = None


_DIGIT = r"(?<![A-Za-z\d.\-_/])"  # a number, not part of a model name like QH-G300 or a version V2.3
_NUM = r"\d+(?:[,，]\d{3})*(?:\.\d+)?"
_ZH_SPANS: list[tuple[str, str]] = [
    ("date", _DIGIT + r"\d{4}年\d{1,2}月\d{1,2}日(?:\s*\d{1,2}:\d{2}(?:\s*[-–~至到]\s*\d{1,2}:\d{2})?)?"),
    ("date", _DIGIT + r"\d{1,2}月\d{1,2}日(?:\s*[至到-]\s*\d{1,2}月\d{1,2}日)?"),
    ("date", _DIGIT + r"\d{4}年\d{1,2}月(?:中旬|上旬|下旬|底)?"),
    ("date", r"每年\d{1,2}月(?:至\d{1,2}月)?"),
    ("year", _DIGIT + r"\d{4}年(?![度\d])"),
    ("skip", _DIGIT + r"\d{4}年"),  # "2025年度", "2024年1-8月": a year qualifying a period, no question in it
    ("time", _DIGIT + r"\d{1,2}:\d{2}(?:\s*[-–~至到]\s*\d{1,2}:\d{2})?"),
    ("percent", _DIGIT + _NUM + r"\s*%"),
    (
        "phone",
        r"(?:ext\.?\s*|分机\s*)\d{3,5}|" + _DIGIT + r"\d{3,4}-\d{3,4}-\d{4}|" + _DIGIT + r"0\d{2,3}-\d{7,8}",
    ),
    ("money", _DIGIT + _NUM + r"\s*(?:万元|亿元|元|美元|新元|万)(?:/[晚天月年次人])?"),
    (
        "count",
        _DIGIT + _NUM + r"\s*(?:个工作日|个自然日|个月|工作日|小时|分钟|毫秒|秒钟|秒|天|周岁|周|年|岁|"
        r"人|台|家|次|页|条|个|名|位|层|楼|GB|MB|TB|mm|V|W|Hz|dBm|欧姆)",
    ),
]
_EN_SPANS: list[tuple[str, str]] = [
    (
        "date",
        r"\b\d{1,2} (?:January|February|March|April|May|June|July|August|September|October|November|"
        r"December)(?: \d{4})?\b",
    ),
    (
        "date",
        r"\b(?:January|February|March|April|May|June|July|August|September|October|November|December)"
        r" \d{4}\b",
    ),
    ("time", r"\b\d{1,2}:\d{2}(?:\s*[-–]\s*\d{1,2}:\d{2})?(?: \(\w+\))?"),
    ("percent", _DIGIT + _NUM + r"\s*%"),
    ("phone", r"\bext\.?\s*\d{3,5}\b|\+?\d{2,3}[ -]\d{3,4}[ -]\d{4}\b|\b\d{3}-\d{3}-\d{4}\b"),
    ("money", r"\b(?:RMB|SGD|USD|CNY|US\$|\$)\s?" + _NUM + r"\b"),
    (
        "count",
        _DIGIT + _NUM + r"(?:-\d+)?\s*(?:working days|days?|hours?|minutes?|seconds?|weeks?|months?|years?|"
        r"characters|times|sessions?|countries|customers|patents|GB|MB|W|V|mm)\b",
    ),
]
_ZH_RE = [(k, re.compile(p)) for k, p in _ZH_SPANS]
_EN_RE = [(k, re.compile(p, re.IGNORECASE)) for k, p in _EN_SPANS]


def number_spans(text: str, lang: str) -> list[Span]:
    """Non-overlapping key-fact spans in text, earlier patterns (more specific) winning ties."""
    taken: list[Span] = []
    for kind, rx in _ZH_RE if lang == "zh" else _EN_RE:
        for m in rx.finditer(text):
            if any(m.start() < s.end and s.start < m.end() for s in taken):
                continue
            num = re.search(r"\d+(?:\.\d+)?", m.group().replace(",", "").replace("，", ""))
            taken.append(
                Span(m.start(), m.end(), m.group().strip(), kind, float(num.group()) if num else None)
            )
    return sorted((s for s in taken if s.kind != "skip"), key=lambda s: s.start)


# ---------- titles ----------

_TITLE_SUFFIXES = ("会议纪要", "纪要", "简介", "用户手册", "发布说明")


_DOC_TYPE = re.compile(r"(手册|纪要|指南|说明|制度|办法|流程|规定|简介|政策|Guide|Policy|Manual|Handbook)$")


def document_title(first_chunk: Chunk) -> str:
    """The document's title: its top heading, else its first line, joined with the second when that one
    names the document type ("青禾智联科技有限公司" + "员工手册（2024年版）"), not a byline ("行政部编制")."""
    if first_chunk.headings:
        return clean_heading(first_chunk.headings[0])
    lines = [ln.strip().strip("#").strip() for ln in first_chunk.text.splitlines() if ln.strip()]
    if not lines or len(lines[0]) > 40 or re.search(r"[:：。]\s*\S", lines[0]):
        return ""
    title = lines[0]
    if (
        len(lines) > 1
        and len(lines[1]) <= 30
        and _DOC_TYPE.search(re.sub(r"[（(][^）)]*[）)]$", "", lines[1]))
    ):
        title = _glue(title, lines[1])
    return title


def subject_of(title: str) -> str:
    """What a document is about, for questions: "差旅管理办法" stays, "…公司简介" loses "简介"."""
    title = re.sub(r"[（(][^（）()]*[）)]$", "", title).strip()  # "员工手册（2024年版）" → "员工手册"
    for suffix in _TITLE_SUFFIXES:
        if title.endswith(suffix) and len(title) > len(suffix) + 1:
            return title[: -len(suffix)].strip()
    return title


def language_of(text: str) -> str:
    from kb.prompt import language

    return language(text)


# ---------- character bigram measures ----------


def bigrams(text: str) -> list[str]:
    t = "".join(nfkc(text).casefold().split())
    return [t[i : i + 2] for i in range(len(t) - 1)]


def support(answer: str, evidence: str) -> float:
    """Share of the answer's character bigrams (whitespace removed, NFKC, case-folded) found in evidence.
    1.0 means every adjacent character pair of the answer occurs somewhere in the evidence."""
    grams = bigrams(answer)
    if not grams:
        return 0.0
    have = set(bigrams(evidence))
    return sum(g in have for g in grams) / len(grams)


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)
