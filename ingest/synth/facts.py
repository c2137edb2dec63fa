"""Sentence rules: questions about the numbers, dates and amounts in a sentence, and about definitions.

Chinese asks questions in place ("提前3个工作日提交" → "提前几个工作日提交？"), so a number question is the
sentence's clause with the number replaced by a question word. English moves the question word to the
front, which needs a subject and an auxiliary verb; only the patterns that can be done reliably without a
parser are covered (auxiliary + within/after/every/at most …, "X is called Y", "X is Y").
"""

from __future__ import annotations

import re

from ingest.synth.base import Candidate
from ingest.synth.text import Span, end_sentence, number_spans

_CLAUSE = re.compile(r"[，；;：]")
SHORT_MAX = 40  # characters: a longer value is no short reply; the sentence answers better
# A clause that starts with one of these continues the previous clause's subject.
_CONTINUES = tuple("然后 并 且 须 应 可 则 但 即 同时 还 再 由 按 经 方可 不得 其中".split())
# Measure words that follow a number's unit ("20万台", "3个人"), kept in the short reply.
_MEASURE = re.compile(r"[台个人名家次件项套款辆座间份]")
# Units whose small counts Chinese asks with 几 ("几天"); larger counts and other units take 多少.
_DAY_UNITS = tuple("天 个月 月 小时 年 周 个工作日 工作日 分钟 秒 次 岁 周岁 楼 层".split())


def bounded_short(value: str, lang: str) -> str:
    """`value` as a short reply, ending in a sentence mark, when it has at most SHORT_MAX characters;
    else "" (the pair keeps its sentence answer)."""
    return end_sentence(value, lang) if value and len(value) <= SHORT_MAX else ""


def zh_wh(span: Span) -> str | None:
    """The Chinese question word that stands in for span, or None when no natural one exists."""
    if span.kind == "date":
        return "什么时候"
    if span.kind == "year":
        return "哪一年"
    if span.kind == "time":
        return "什么时间" if re.search(r"[-–~至到]", span.text) else "几点"
    if span.kind == "percent":
        return "多少"
    if span.kind == "phone":
        return "什么号码"
    unit = re.sub(r"^[\d,，.\s]+", "", span.text)
    if span.kind == "money":
        return "多少" + unit.split("/")[0]
    if unit in _DAY_UNITS and span.value is not None and span.value <= 10 and span.value == int(span.value):
        return "几" + unit
    return "多少" + unit


def _in_brackets(text: str, pos: int) -> bool:
    """True when pos lies inside （…）, (…), 《…》 or quotes: a qualifier or a name, not the sentence's fact."""
    depth = 0
    for ch in text[:pos]:
        if ch in "（(《“":
            depth += 1
        elif ch in "）)》”" and depth:
            depth -= 1
    return depth > 0


def zh_number_questions(sentence: str) -> list[Candidate]:
    """One candidate per key-fact span of a Chinese sentence. The answer is the question's clause with the
    fact in place of the question word ("净利润率目标不低于9%。"), not the whole sentence: a model tuned on
    whole sentences learned to copy them, and its answers to held-out questions were twice as long and
    lower in F1 than the untuned model's (bench/README.md, issue 3)."""
    out = []
    body = sentence.rstrip("。！？；")
    bounds = [0] + [m.end() for m in _CLAUSE.finditer(body)] + [len(body) + 1]
    for span in number_spans(body, "zh"):
        wh = zh_wh(span)
        if wh is None or _in_brackets(body, span.start) or re.search(r"[×xX*]\s*$", body[: span.start]):
            continue
        i = max(k for k in range(len(bounds) - 1) if bounds[k] <= span.start)
        clause_start, clause_end = bounds[i], min(bounds[i + 1] - 1, len(body))
        before = body[clause_start : span.start]
        rest = body[span.end : clause_end]
        if (
            span.kind in ("date", "year")
            and len(rest) < 2
            and (not before.strip() or re.search(r"(截至|截止)$", before))
        ):
            continue  # "截至2024年6月30日，公司共有员工642人": the date frames the fact, it is not one
        clause = (before.rstrip() + wh + rest.lstrip()).strip()
        fact = (before.rstrip() + span.text + rest.lstrip()).strip()
        # A condition ("超过6小时的，可改乘飞机") is only a question together with what follows it.
        ends_clause = not rest.strip()
        condition = re.search(r"的\S{0,6}$", clause) or (
            ends_clause and (i == 0 or re.search(r"(满|超过|达到|不满|累计)$", before))
        )
        if condition and i + 2 < len(bounds):
            then = "，" + body[bounds[i + 1] : min(bounds[i + 2] - 1, len(body))]
            clause, fact = clause + then, fact + then
        # A clause continuing an earlier subject ("…，并在出发后2个工作日内补交申请") needs that subject.
        prefix = ""
        if i > 0 and body[bounds[i - 1] : clause_start - 1].endswith("的"):
            prefix = body[bounds[i - 1] : clause_start]  # "已满1年不满10年的，年休假5天": keep the condition
        elif i > 0 and (clause.startswith(_CONTINUES) or len(before.strip()) < 3):
            prefix = body[:clause_start]
            if len(prefix) > 40:
                first = body[: bounds[1]]
                prefix = first if len(first) <= 40 else ""
                clause = re.sub(r"^(?:并且|并|且|同时)", "", clause)
                fact = re.sub(r"^(?:并且|并|且|同时)", "", fact)
        question = (prefix + clause).strip(" ，：") + "？"
        if len(question) < 6 or wh not in question:
            continue
        answer = end_sentence((prefix + fact).strip(" ，："), "zh")
        # The short reply is the fact with the measure word the question kept after its question word
        # ("提升至多少万台？" → "20万台").
        short = span.text + (m.group() if (m := _MEASURE.match(rest)) else "")
        out.append(Candidate(question, answer, span.text, "number", end_sentence(short, "zh")))
    return out


_ZH_DEF = re.compile(r"^(?P<a>[^，。；：:、“”\"（）()]{2,16}?)\s*(?P<v>是|为)\s*(?P<b>[^，。；].+)$")
_NOT_SUBJECT_END = tuple("但或就还只总于凡不也都即则要若需应须可将会能均仍")
_NOT_SUBJECT_HAS = tuple("须 应 可 将 在 由 按 把 被 如 请 对 若 当 不 得 需 会 提 进行 使用 以 每".split())


def zh_definition(sentence: str) -> Candidate | None:
    """A是B / A为B → "A是什么？", answer the sentence, gold B's first clause."""
    first = _CLAUSE.split(sentence.rstrip("。！？"), maxsplit=1)[0]
    m = _ZH_DEF.match(first.strip())
    if not m:
        return None
    a, b = m.group("a").strip(), m.group("b").strip()
    if (
        a.endswith(_NOT_SUBJECT_END)
        or any(w in a for w in _NOT_SUBJECT_HAS)
        or b.startswith(("否", "准", "期", "了"))
    ):
        return None
    if m.group("v") == "为" and not a.endswith(tuple("间准限例期址称式位额率费数价长量点码号箱级式格")):
        return None  # "为" is as often "for" as "is": only "<attribute>为<value>" is a definition
    if (
        a.endswith(tuple("作成认因行称视分划改定选变转更列评"))
        or first.endswith("的")
        or number_spans(a, "zh")
    ):
        return None
    spans = number_spans(b, "zh")
    if spans and spans[0].start <= 6:
        return None  # "A为3天" is a number fact; the number rule asks it better
    gold = b.strip('“”"')
    return Candidate(f"{a}是什么？", end_sentence(sentence, "zh"), gold, "definition", bounded_short(b, "zh"))


# ---------- English ----------

_AUX = r"must|should|can|cannot|may|will|is|are|has to|have to|need to|needs to"
_EN_CLAUSE = re.compile(
    r"^(?P<subj>[A-Z][\w\-()'\"/&.]*(?: [\w\-()'\"/&.]+){0,8}?) (?P<aux>" + _AUX + r") (?P<rest>.+?)[.;!]?$"
)
_DETERMINERS = {"A", "An", "The", "Each", "Every", "All", "Any", "Your", "Our", "This", "These", "Those"}
_PREPS = ("within", "after", "every", "for", "in", "at most", "up to", "at least", "by")


def _lower_subject(subj: str, text: str) -> str:
    """Lower-case the subject's first word unless it is a name (it appears capitalised mid-sentence)."""
    first, _, rest = subj.partition(" ")
    if first in _DETERMINERS or (
        first[1:].islower() and not re.search(rf"[a-z,] {re.escape(first)}\b", text)
    ):
        first = first.lower()
    return f"{first} {rest}".strip()


def _aux_front(aux: str) -> tuple[str, str]:
    """The auxiliary that moves to the front of the question, and what stays after the subject."""
    if aux in ("has to", "needs to"):
        return "does", aux.replace("has", "have").replace("needs", "need")
    if aux in ("have to", "need to"):
        return "do", aux
    if aux == "cannot":
        return "can", "not"
    return aux, ""


def _plural(unit: str) -> str:
    return unit if unit.endswith("s") else unit + "s"


def en_questions(sentence: str, text: str) -> list[Candidate]:
    """English candidates for one sentence (each ";" clause on its own): number questions that move a
    wh-phrase to the front, "What is X called?" and "What is X?". The answer is the whole sentence."""
    out: list[Candidate] = []
    answer = end_sentence(sentence, "en")
    for clause in re.split(r";\s+", sentence.strip()):
        m = _EN_CLAUSE.match(clause)
        if not m or re.search(r",| who | which | that | when | if ", f" {m.group('subj')} "):
            continue
        subj, aux, rest = _lower_subject(m.group("subj"), text), m.group("aux"), m.group("rest")
        front, after_subj = _aux_front(aux)
        for span in number_spans(rest, "en"):
            if _in_brackets(rest, span.start):
                continue
            before = rest[: span.start].rstrip()
            prep = next((p for p in _PREPS if before.lower().endswith(" " + p) or before.lower() == p), None)
            unit = re.sub(r"^[\d,.\-\s]+", "", span.text)
            if prep is None or not unit or span.kind != "count":
                continue
            stem = before[: len(before) - len(prep)].strip()
            tail = re.sub(r"^\s*(?:of \w+|from the \w+(?: \w+)?)", "", rest[span.end :]).strip(" .")
            verb = " ".join(p for p in (after_subj, stem, tail) if p)
            if prep == "every":
                q = f"How often {front} {subj} {verb}?"
            elif prep in ("at most", "up to", "at least"):
                q = f"How many {_plural(unit)} {front} {subj} {verb} {prep}?"
            else:
                q = f"{prep.capitalize()} how many {_plural(unit)} {front} {subj} {verb}?"
            short = f"Every {span.text}" if prep == "every" else span.text
            out.append(
                Candidate(re.sub(r"\s+", " ", q), answer, span.text, "number", end_sentence(short, "en"))
            )
        if aux in ("is", "are"):
            called = re.match(r"^called (?P<name>.+?)$", rest)
            if called:
                name = called.group("name").strip("\"' ")
                out.append(
                    Candidate(
                        f"What {aux} {subj} called?", answer, name, "definition", end_sentence(name, "en")
                    )
                )
            elif not re.match(r"^(?:not |also |only |\w+ed\b|\w+ing\b|run |made |done |held |kept )", rest):
                gold = re.split(r"[,;]| which | that ", rest, maxsplit=1)[0].strip()
                short = bounded_short(gold[:1].upper() + gold[1:], "en")
                out.append(Candidate(f"What {aux} {subj}?", answer, gold, "definition", short))
    return out
