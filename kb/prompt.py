"""Prompts: numbered sources for answering, and the yes/no answerability question.

Kept short and literal: the default generator is a 0.5B model, which follows one clear instruction
better than several. The language of the instructions follows the question's.
"""

from __future__ import annotations

import re

from kb.generate.base import Message
from kb.schema import Hit

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def language(text: str) -> str:
    """'zh' when CJK characters make up a real share of the letters, else 'en'."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "en"
    return "zh" if sum(bool(_CJK.match(c)) for c in letters) / len(letters) >= 0.2 else "en"


REFUSAL = {
    "zh": "抱歉，知识库的文档中没有找到这个问题的答案。",
    "en": "I don't know: the documents in the knowledge base do not answer this question.",
}

# No citation instruction: asked to cite "[1]", the 0.5B model answered "[1]" and nothing else for
# most questions. Citations are attributed after generation (kb.answer.resolve_citations), and
# markers a stronger model writes anyway are kept.
SYSTEM = {
    "zh": "你是公司内部知识库的问答助手。根据给出的资料，用一句话简短回答员工的问题。",
    "en": "You answer employees' questions from the company's documents. Answer in one short sentence "
    "using the numbered sources.",
}

SYSTEM_NO_RETRIEVAL = {
    "zh": "你是公司内部的问答助手。简短地回答员工的问题；不知道时就说不知道。",
    "en": "You are a company assistant. Answer employees' questions briefly; say you don't know when you don't.",
}

# What models say when they decline; matched after the fact to mark an answer as refused.
REFUSAL_PATTERNS = re.compile(
    r"(资料中没有|没有相关信息|没有提到|未提及|没有提及|无法回答|不知道|无法确定|没有找到|未找到|"
    r"do(?:es)? not contain|don't know|do not know|not mentioned|no information|cannot answer|"
    r"can't answer|not provided|not specified)",
    re.IGNORECASE,
)


def _block(n: int, h: Hit) -> str:
    c = h.chunk
    where = c.source + (f" p.{c.page}" if c.page else "")
    head = f" — {' > '.join(c.headings)}" if c.headings else ""
    return f"[{n}] ({where}{head})\n{c.text.strip()}"


def fit_sources(hits: list[Hit], max_chars: int) -> list[Hit]:
    """The leading hits whose numbered blocks fit in max_chars (always at least the first)."""
    used = 0
    for n, h in enumerate(hits, start=1):
        size = len(_block(n, h))
        if used and used + size > max_chars:
            return hits[: n - 1]
        used += size
    return hits


def format_sources(hits: list[Hit], max_chars: int) -> str:
    return "\n\n".join(_block(n, h) for n, h in enumerate(fit_sources(hits, max_chars), start=1))


def answer_messages(
    question: str, hits: list[Hit], max_chars: int, history: list[Message] | None = None
) -> list[Message]:
    lang = language(question)
    sources = format_sources(hits, max_chars)
    if lang == "zh":
        user = f"资料：\n{sources}\n\n问题：{question}"
    else:
        user = f"Sources:\n{sources}\n\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM[lang]}, *(history or []), {"role": "user", "content": user}]


def plain_messages(question: str, history: list[Message] | None = None) -> list[Message]:
    lang = language(question)
    return [
        {"role": "system", "content": SYSTEM_NO_RETRIEVAL[lang]},
        *(history or []),
        {"role": "user", "content": question},
    ]


def support_messages(question: str, hits: list[Hit], max_chars: int) -> list[Message]:
    """Ask whether the sources hold the answer; the reply's first token is scored yes vs no."""
    lang = language(question)
    sources = format_sources(hits, max_chars)
    if lang == "zh":
        user = f"资料：\n{sources}\n\n问题：{question}\n上面的资料中有没有这个问题的答案？只回答“是”或“否”。"
    else:
        user = (
            f"Sources:\n{sources}\n\nQuestion: {question}\n"
            "Do the sources above contain the answer to the question? Reply only yes or no."
        )
    return [{"role": "user", "content": user}]
