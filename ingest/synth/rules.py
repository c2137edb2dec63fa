"""The "rules" question generator: no model, patterns over the chunk's structure and sentences.

Per chunk it proposes, in this order of preference:
  faq         a heading that is a question ("公司每年组织体检吗？") or a "问：…答：…" line → its answer
  kv          "X：Y" / "X: Y" lines (also several on one line, split by "|" or wide gaps) → "…的X是什么？"
  table       rows under a header (markdown "|" tables or space-separated cells) → "婚假有几天？"
  number      sentences holding a date, duration, amount, percentage or phone number (facts.py)
  definition  "A是B" / "A为B" / "A is B" → "A是什么？" (facts.py)
  heading     "{document}关于{heading}有哪些规定？" → the section's first sentences
The gold answer (for `kb eval`) is the key fact: the value, the number with its unit, the defined term.
"""

from __future__ import annotations

import random
import re

from ingest.synth.base import Candidate, ChunkView, QAGenerator
from ingest.synth.facts import bounded_short, en_questions, zh_definition, zh_number_questions
from ingest.synth.text import (
    body_lines,
    clean_heading,
    end_sentence,
    has_marker,
    join_items,
    number_spans,
    sentences,
    strip_marker,
    subject_of,
)

KINDS = ("faq", "kv", "table", "number", "definition", "heading")

_SEGMENTS = re.compile(r"\s{2,}|\s*\|\s*")
_ZH_KV = re.compile(r"^(?P<k>[^：，。；,.;!?！？“”\"]{1,16})：\s*(?P<v>\S.{0,150})$")
_EN_KV = re.compile(r"^(?P<k>[A-Z][A-Za-z&/\- ]{1,40}): (?P<v>\S.{0,150})$")
_ZH_QA = re.compile(r"问[：:]\s*(?P<q>.+?[？?])\s*答[：:]\s*(?P<a>.+)$")
_EMAIL = re.compile(r"[\w.\-]+@[\w\-]+(?:\.[\w\-]+)+")
_ADDRESS = re.compile(r"[市区县]\S*[路街道号]|大厦|园区|\d+号")
_POLICY = ("制度", "办法", "手册", "流程", "规定", "指南", "政策", "说明", "须知", "守则")
_EN_KEYS = {"effective": "effective date", "last reviewed": "last review date"}


def _gold(value: str, lang: str) -> str:
    """The short part of a value: up to its first bracket or clause break when the rest is long."""
    cut = re.split(r"[（(，；;]|,(?!\d)" if lang == "zh" else r"[(;]|, ", value, maxsplit=1)[0].strip()
    return cut if len(cut) >= 2 else value.strip()


_PERSON = re.compile(r"^[\u4e00-\u9fff]{2,3}(?=$|[（(，,、])")
_ROLE_KEY = ("人", "人员", "官", "长", "总监", "经理", "专员", "创始人")


def _kv_question(key: str, value: str, subject: str, lang: str) -> tuple[str, str]:
    """(question, answer sentence) for the key-value line "key：value" of a document about subject."""
    spans = number_spans(value, lang)
    lead = spans[0] if spans and spans[0].start == 0 else None
    contact = bool(_EMAIL.search(value)) or bool(lead and lead.kind == "phone")
    if lang == "en":
        key_l = _EN_KEYS.get(key.lower(), key if key.isupper() else key.lower())
        of = f" of the {subject}" if subject and len(key_l.split()) <= 2 else ""
        be = "are" if re.search(r"[^s]s$", key_l) else "is"
        if key_l.endswith(" by"):
            return (
                f"Who {key_l[:-3]} the {subject}?",
                f"The {subject} was {key_l} {end_sentence(value, 'en')}",
            )
        if contact:
            return f"What is the {key_l} for the {subject}?", end_sentence(f"{key}: {value}", "en")
        if value[:1].islower():  # "Factory reset: hold the RST button …" is a procedure
            return f"How is {key_l} done?", end_sentence(f"{key}: {value}", "en")
        who = "Who" if key_l in ("owner", "author", "contact", "chair") else "What"
        return f"{who} {be} the {key_l}{of}?", f"The {key_l}{of} {be} {end_sentence(value, 'en')}"
    generic = len(key) <= 4 or key.endswith(("时间", "日期", "地点", "编号", "版本", "部门", "人", "人员"))
    who = f"{subject}的" if generic and subject else ""
    if contact:
        q = f"{who}{key}的联系方式是什么？"
    elif lead and lead.kind in ("date", "year"):
        q = f"{who}{key}是什么时候？"
    elif lead and lead.kind in ("money", "count", "percent"):
        q = f"{who}{key}是多少？"
    elif key.endswith(_ROLE_KEY):
        q = f"{who}{key}是谁？"
    elif _PERSON.match(value) and key.endswith(("部", "中心", "组", "室", "办", "处")):
        q, who = f"{subject}{key}的负责人是谁？", ""
    elif _ADDRESS.search(value) and not key.endswith(("编号", "名称", "全称")):
        q = f"{who}{key}在哪里？"
    else:
        q = f"{who}{key}是什么？"
    short = len(value) <= 24 and not re.search(r"[，；]", value) and bool(who or contact)
    what = f"{who}{key}的联系方式" if contact else f"{who}{key}"
    return q, end_sentence(f"{what}是{value}" if short else f"{key}：{value}", "zh")


_VERBISH = re.compile(
    r"须|应|为|是|将|可|不|在|截至|有|按|由|从|于|提|进行|发放|报销|支付|审批|申请|提交|完成"
)


def _is_sentence(value: str, lang: str) -> bool:
    """A value that is a clause of its own (has a verb before its first comma), not a name or a list."""
    if lang == "en":
        return bool(re.search(r"\b(?:is|are|must|should|can|may|will)\b", value))
    outside = re.sub(r"[（(][^）)]*[）)]", "", value)
    first = re.split(r"[，；。]", outside, maxsplit=1)[0]
    return bool(re.search(r"[，；。]", outside)) and bool(_VERBISH.search(first))


def kv_candidates(lines: list[str], subject: str, lang: str) -> tuple[list[Candidate], set[int]]:
    """Candidates from key-value lines, and the indexes of the lines they used."""
    out, used = [], set()
    rx = _ZH_KV if lang == "zh" else _EN_KV
    for i, line in enumerate(lines):
        m = _ZH_QA.search(line)
        if m:
            out.append(
                Candidate(m.group("q").strip(), m.group("a").strip(), _gold(m.group("a"), lang), "faq")
            )
            used.add(i)
            continue
        segs = [strip_marker(s) for s in _SEGMENTS.split(strip_marker(line)) if s.strip()]
        for seg in segs:
            seg = (
                seg.replace(":", "：", 1)
                if lang == "zh" and "：" not in seg and re.search(r"\D:\s", seg)
                else seg
            )
            m = rx.match(seg)
            if not m or (
                lang == "zh" and re.search(r"^[\d\s]+$|须|应|以下|如下|请|可以|分为|包括|\d", m.group("k"))
            ):
                continue
            key, value = m.group("k").strip(), m.group("v").strip().rstrip("。；;")
            if _is_sentence(value, lang):
                continue  # "（1）人员编制：2025年全公司…为8%，…": a labelled sentence; the sentence rules ask it
            q, a = _kv_question(key, value, subject, lang)
            gold = _gold(value, lang)
            short = bounded_short(value, lang) or bounded_short(gold, lang)
            out.append(Candidate(q, a, gold, "kv", short))
            used.add(i)
    return out, used


def _cells(line: str) -> list[str]:
    line = re.sub(r"\s*/\s*", "/", line.strip().strip("|"))  # "内存 / 存储" is one cell
    parts = line.split("|") if "|" in line else re.split(r"\s+", line)
    return [p.strip() for p in parts if p.strip()]


def _is_row(line: str, lang: str, min_cells: int = 3) -> bool:
    """A table row: "|"-separated cells, or (Chinese) space-separated cells with no sentence marks."""
    if "|" in line:
        return line.count("|") >= 2
    return lang == "zh" and not re.search(r"[。：:；]|[，,]\s", line) and len(_cells(line)) >= min_cells


def _runs(lines: list[str], lang: str) -> list[tuple[int, int]]:
    """[start, end) of each run of row-like lines; inside a run a two-cell line ("防护等级 IP40") counts."""
    runs, i = [], 0
    while i < len(lines):
        j = i
        while j < len(lines) and _is_row(lines[j], lang, 3 if j == i else 2):
            j += 1
        if j > i:
            runs.append((i, j))
        i = max(j, i + 1)
    return runs


def _split_header(lines: list[str], lang: str) -> list[str] | None:
    """The header of the last table in lines (the previous chunk): its first row or the line above it."""
    for start, _ in reversed(_runs(lines, lang)):
        for k in (start, start - 1):
            if k >= 0 and _header_like(_cells(lines[k])):
                return _cells(lines[k])
    return None


def _header_like(cells: list[str]) -> bool:
    return len(cells) >= 2 and all(len(c) <= 12 and not re.search(r"\d", c) for c in cells)


def table_candidates(
    chunk_lines: list[str], topic: str, lang: str, previous: list[str] | None = None
) -> tuple[list[Candidate], set[int]]:
    """Candidates from table rows: runs of ≥2 row-like lines (or one row under a header line). The header
    is the run's first row, the line just above it, or (for a table the chunker split) the last line of
    the previous chunk with as many cells and no digits."""
    out: list[Candidate] = []
    used: set[int] = set()
    for i, j in _runs(chunk_lines, lang):
        rows = [_cells(chunk_lines[k]) for k in range(i, j)]
        above = _cells(chunk_lines[i - 1]) if i > 0 and i - 1 not in used else []
        header: list[str] | None = None
        body: list[list[str]] = []
        borrowed = False
        if _header_like(rows[0]) and len(rows) >= 2:
            header, body = rows[0], rows[1:]
        elif _header_like(above) and not re.search(r"[，。：:]", chunk_lines[i - 1]):
            header, body = above, rows
            used.add(i - 1)
        elif len(rows) >= 2:
            header, body, borrowed = _split_header(previous or [], lang), rows, True
        if header and len({len(r) for r in body} | {len(header)}) > 2:
            header = header if len(header) == 2 else None  # a header that fits no row is not this table's
        if body:
            out += _table_rows(header, body, topic, lang, borrowed)
            used.update(range(i, j))
    return out, used


def _table_rows(
    header: list[str] | None, body: list[list[str]], topic: str, lang: str, borrowed: bool = False
) -> list[Candidate]:
    """One candidate per row. A header borrowed from the previous chunk shapes the question only: the
    answer must stand on this chunk's text, so it lists the bare cells."""
    width = len(header) if header else 0
    lengths = {len(r) for r in body}
    out = []
    firsts = [r[0] for r in body]
    for cells in body:
        if len(cells) < 2:
            continue
        if header and len(cells) > width:
            extra = len(cells) - width
            if len(lengths) == 1:  # every row one cell wider: the first column holds spaces ("P1 紧急")
                cells = [" ".join(cells[: extra + 1])] + cells[extra + 1 :]
            else:  # ragged: a value with spaces ("四核 ARM Cortex-A53") spilt over
                cells = cells[: width - 1] + [" ".join(cells[width - 1 :])]
        # A first cell shared by several rows (SYS 慢闪 / SYS 快闪) names the row only with the second.
        lead = 2 if firsts.count(cells[0]) > 1 and len(cells) > 2 else 1
        name = "".join(cells[:lead]) if lang == "zh" else " ".join(cells[:lead])
        values = cells[lead:]
        cols = header[lead : lead + len(values)] if header and len(header) >= len(cells) else []
        if cols and len(cols) == len(values) and not borrowed:
            facts = [f"{c}{'为' if lang == 'zh' else ': '}{v}" for c, v in zip(cols, values, strict=True)]
        else:
            facts = values
        sep = "，" if lang == "zh" else "; "
        if lang == "zh" and len(cols) == 1 == len(values) and not borrowed:
            answer = end_sentence(f"{name}的{cols[0]}是{values[0]}", lang)
        else:
            answer = end_sentence(f"{name}{'：' if lang == 'zh' else ': '}{sep.join(facts)}", lang)
        spans = number_spans(values[0], lang)
        gold = _gold(values[0], lang)
        short = values[0]  # the questions below ask for the first value, but the generic one
        if lang == "en":
            what = cols[0].lower() if cols else (topic.lower() or "rule")
            q = f"What is the {what} for {name}?"
        elif (
            spans
            and spans[0].start == 0
            and spans[0].kind == "count"
            and re.search(r"天|月|小时", spans[0].text)
        ):
            unit = re.sub(r"^[\d,.\s]+", "", spans[0].text)
            q = f"{name}有多少{unit}？" if (spans[0].value or 0) > 10 else f"{name}有几{unit}？"
            gold = short = spans[0].text
        elif cols and not _parallel(values):
            q = f"{name}的{cols[0]}{_column_wh(cols[0])}？"
        else:
            q = f"{name}的{topic or '规定'}是什么？"
            short = "" if len(values) > 1 else short  # the whole row answers it
        if lang == "en" and len(values) > 1 and not cols:
            short = ""
        out.append(Candidate(q, answer, gold, "table", bounded_short(short, lang)))
    return out


def _column_wh(column: str) -> str:
    if column.endswith(("时间", "日期", "时限")):
        return "是什么时候" if column.endswith(("时间", "日期")) else "是多久"
    if column.endswith(("人", "负责人")):
        return "是谁"
    if column.endswith(("数", "额", "标准", "比例", "费", "价格", "数量", "上限")):
        return "是多少"
    return "是什么"


def _label(line: str, title: str) -> bool:
    """A title line or a bare label ("前言", "附则", "Security Incidents") that a PDF left inline."""
    line = line.strip()
    if (title and line in title) or (len(line) <= 12 and not re.search(r"[\d，。,.;；:：!?！？]", line)):
        return True
    words = line.split()
    return 0 < len(words) <= 6 and all(
        w[0].isupper() or w in ("and", "of", "the", "for", "to", "&") for w in words
    )


def _parallel(values: list[str]) -> bool:
    """Cells that are the same kind of amount under parallel columns (prices per job level)."""
    kinds = [[s.kind for s in number_spans(v, "zh")][:1] for v in values]
    return len(values) >= 2 and all(k and k == kinds[0] for k in kinds)


def heading_candidate(view: ChunkView, text: str, subject: str) -> Candidate | None:
    """A broad question about the chunk's section, answered by its first sentence (two when the first is a
    fragment): the system prompt asks for one short sentence, and a model tuned on two-sentence targets
    answered held-out questions at length (bench/README.md, issue 3)."""
    if not view.chunk.headings:
        return None
    heading = clean_heading(view.chunk.headings[-1])
    first = sentences(text, view.lang)[:2]
    if not heading or not first:
        return None
    answer = first[0]
    if len(answer) < 15 and len(first) > 1:
        answer = "".join(first) if view.lang == "zh" else " ".join(first)
    if len(answer) > 200:
        answer = first[0]
    answer = end_sentence(answer, view.lang)
    spans = number_spans(answer, view.lang)
    gold = spans[0].text if spans else re.split(r"[，。；]|[,.;](?=\s|$)", answer)[0]
    if heading.endswith(("？", "?")):
        return Candidate(heading, answer, gold, "faq")
    if view.lang == "en":
        doc = f"the page about {subject[6:]}" if subject.startswith("About ") else f"the {subject}"
        if heading == view.title:
            q = f"What is {subject[6:]}?" if subject.startswith("About ") else f"What is {doc} about?"
        elif len(heading.split()) > 1 and all(w[:1].isupper() for w in heading.split()):
            q = f"What is {heading}?"  # a product or a name: "Qinghe Cloud"
        else:
            topic = heading[0].lower() + heading[1:] if heading[1:2].islower() else heading
            q = f"What does {doc} say about {topic}?"
        return Candidate(q, answer, gold, "heading")
    if heading == view.title:
        q = f"{view.title}的主要内容是什么？"
    elif subject.endswith(_POLICY):
        q = f"{subject}关于{heading}有哪些规定？"
    else:
        q = f"{subject}的{heading}是什么？" if subject else f"{heading}有哪些规定？"
    return Candidate(q, answer, gold, "heading")


class RulesQA(QAGenerator):
    name = "rules"

    def candidates(self, view: ChunkView, n: int) -> list[Candidate]:
        lang = view.lang
        subject = subject_of(view.title)
        topic = clean_heading(view.chunk.headings[-1]) if view.chunk.headings else ""
        lines = body_lines(view.chunk)
        kv, used_kv = kv_candidates(lines, subject, lang)
        previous = view.previous.splitlines()[-12:] if view.previous else None
        table, used_table = table_candidates(lines, topic, lang, previous)
        rest = [
            (has_marker(line), strip_marker(line))
            for i, line in enumerate(lines)
            if i not in used_kv | used_table and not _label(strip_marker(line), view.title)
        ]
        text = ("" if lang == "zh" else " ").join(join_items(rest, lang))
        by_kind: dict[str, list[Candidate]] = {k: [] for k in KINDS}
        for c in kv + table:
            by_kind[c.kind].append(c)
        for s in sentences(text, lang):
            if lang == "zh":
                by_kind["number"] += zh_number_questions(s)
                d = zh_definition(s)
                if d:
                    by_kind["definition"].append(d)
            else:
                for c in en_questions(s, text):
                    by_kind[c.kind].append(c)
        h = heading_candidate(view, text, subject)
        if h:
            by_kind[h.kind].append(h)
        return interleave(by_kind, random.Random(f"{view.seed}:{view.chunk.id}"))


def interleave(by_kind: dict[str, list[Candidate]], rng: random.Random) -> list[Candidate]:
    """All candidates, one of each specific kind in turn (KINDS order, each kind shuffled by rng), the
    broad heading question last: the first few picks then differ in kind and in place within the chunk.
    Seeded by (seed, chunk id), so a chunk's picks do not move when other chunks change."""
    pools = []
    for kind in KINDS[:-1]:
        pool = list(by_kind.get(kind, []))
        rng.shuffle(pool)
        pools.append(pool)
    out = []
    while any(pools):
        for pool in pools:
            if pool:
                out.append(pool.pop(0))
    return out + by_kind.get("heading", [])
