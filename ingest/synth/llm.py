"""The "llm" question generator: the configured generator writes one question/answer pair per call.

The prompt is built for a 0.5B model: one instruction, one worked example, a fixed two-line output
("问题：…\\n答案：…" / "Question: …\\nAnswer: …"), and a single sentence of the chunk as the material, so the
model copies rather than composes. Decoding is whatever the generator is configured for (greedy by default),
so each call gets a different focus sentence to make the pairs of one chunk differ. Replies that do not
parse into both lines are dropped and counted as malformed.
"""

from __future__ import annotations

import re

from ingest.synth.base import Candidate, ChunkView, QAGenerator
from ingest.synth.filters import MALFORMED
from ingest.synth.text import (
    body_lines,
    clean_heading,
    has_marker,
    join_items,
    number_spans,
    sentences,
    strip_marker,
)
from kb.generate.base import Generator, Message

MAX_NEW_TOKENS = 96

# The instruction goes in the system turn and the one worked example is a previous user/assistant
# exchange: a 0.5B chat model imitates a turn it has "already made" far more reliably than an example
# quoted inside the instruction (which it tends to echo). The example is about nothing in a company's
# documents, so a copied example fails the support filter.
SYSTEM = {
    "zh": "你根据资料出一道问答题。用资料里的原话简短回答。只输出两行：第一行以“问题：”开头，第二行以“答案：”开头。",
    "en": "You write one quiz question about the text and answer it briefly with words from the text. "
    "Output exactly two lines: the first starts with 'Question:', the second with 'Answer:'.",
}
EXAMPLE = {
    "zh": (
        "资料：市图书馆每周一闭馆，读者每次最多可借阅5本书，借期为30天。",
        "问题：市图书馆的借期是多少天？\n答案：借期为30天。",
    ),
    "en": (
        "Text: The city library is closed on Mondays and lends up to 5 books for 30 days.",
        "Question: How many books does the city library lend at a time?\nAnswer: Up to 5 books.",
    ),
}
MATERIAL = {"zh": "资料：{text}", "en": "Text: {text}"}

_ZH = re.compile(r"问题\s*[:：]\s*(?P<q>[^\n]+?)\s*\n+\s*答案\s*[:：]\s*(?P<a>[^\n]+)")
_EN = re.compile(r"Question\s*:\s*(?P<q>[^\n]+?)\s*\n+\s*Answer\s*:\s*(?P<a>[^\n]+)", re.IGNORECASE)


def build_messages(text: str, lang: str) -> list[Message]:
    example_in, example_out = EXAMPLE[lang]
    return [
        {"role": "system", "content": SYSTEM[lang]},
        {"role": "user", "content": example_in},
        {"role": "assistant", "content": example_out},
        {"role": "user", "content": MATERIAL[lang].format(text=text)},
    ]


def parse_reply(reply: str, lang: str) -> tuple[str, str] | None:
    """(question, answer) from a reply, or None when it does not follow the format."""
    cleaned = reply.replace("*", "").replace("#", "").strip()
    m = (_ZH if lang == "zh" else _EN).search(cleaned) or (_EN if lang == "zh" else _ZH).search(cleaned)
    if not m:
        return None
    q, a = m.group("q").strip(), m.group("a").strip()
    if not q or not a or q == a or re.search(r"问题|答案|Question:|Answer:", a):
        return None
    if not re.search(r"[?？]$", q):
        if re.search(r"[。.!！]$", q):
            return None  # a statement, not a question
        q += "？" if lang == "zh" else "?"
    return q, a


def focus_sentences(view: ChunkView, n: int) -> list[str]:
    """The n sentences of the chunk most worth asking about: those with the most numbers, dates and
    amounts first (they make checkable answers), then the longer ones; kept in reading order."""
    lines = [(has_marker(line), strip_marker(line)) for line in body_lines(view.chunk)]
    items = join_items(lines, view.lang)
    sents = [s for item in items for s in sentences(item, view.lang) if len(s) >= 8]
    ranked = sorted(
        range(len(sents)), key=lambda i: (-len(number_spans(sents[i], view.lang)), -len(sents[i]), i)
    )
    return [sents[i] for i in sorted(ranked[:n])]


class LLMQA(QAGenerator):
    name = "llm"
    uses_model = True

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def candidates(self, view: ChunkView, n: int) -> list[Candidate]:
        out = []
        heading = clean_heading(view.chunk.headings[-1]) if view.chunk.headings else ""
        for sentence in focus_sentences(view, n):
            text = f"{heading}：{sentence}" if heading and view.lang == "zh" else sentence
            self.calls += 1
            reply = self.generator.generate(build_messages(text, view.lang), max_new_tokens=MAX_NEW_TOKENS)
            parsed = parse_reply(reply, view.lang)
            if parsed is None:
                self.dropped[MALFORMED] += 1
                continue
            q, a = parsed
            out.append(Candidate(q, a, a.rstrip("。.！!"), "llm"))
        return out
