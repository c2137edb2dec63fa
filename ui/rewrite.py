"""Follow-up questions → standalone questions, by rule.

Why rules and not the model: the default generator is a 0.5B model on a CPU. Asking it to rewrite
costs a second prefill (seconds) before retrieval even starts, and small models often answer the
question instead of rewriting it. Retrieval (BM25 + dense) only needs the topic's words to be
present, so a follow-up that is short or leans on a pronoun gets the previous question's topic
attached; a question that stands on its own is left untouched and starts a new topic.

The answer prompt then sees the standalone question alone (no chat history): on a CPU the prompt's
length dominates answer time, and the 0.5B model answers the latest turn better without earlier
turns competing with the sources.
"""

from __future__ import annotations

import re

from kb.prompt import language

# "该" but not "应该"; "其"/"此" left out: 其他, 因此 and 此外 rarely point back.
_ZH_REFERS = re.compile(r"(它|这个|那个|这些|那些|这项|那项|这种|那种|(?<!应)该|上述|前者|后者|这样|那样)")
_ZH_LEADS = re.compile(r"^(那|那么|还有|另外|以及|而且)")
_ZH_TAIL = re.compile(r"呢[？?。！!\s]*$")  # "那病假呢？" asks the previous question about something else
_EN_REFERS = {"it", "its", "this", "that", "these", "those", "they", "them", "their", "there", "such"}
_EN_LEADS = {"and", "also", "what about", "how about", "then"}
_CJK = re.compile(r"[\u3400-\u9fff]")
_WORD = re.compile(r"[A-Za-z0-9']+")
ZH_SHORT = 3  # CJK characters: "多少钱？" names no topic of its own
EN_SHORT = 3  # words: "how much?"
KEEP = 3  # questions of one topic kept together; older ones fall off so the text stays short


def is_follow_up(question: str) -> bool:
    """True when the question probably leans on the previous one (short, pronoun, 'and …')."""
    q = question.strip()
    if language(q) == "zh":
        return len(_CJK.findall(q)) <= ZH_SHORT or bool(
            _ZH_REFERS.search(q) or _ZH_LEADS.match(q) or _ZH_TAIL.search(q)
        )
    words = [w.lower() for w in _WORD.findall(q)]
    lead = " ".join(words[:2])
    return (
        len(words) <= EN_SHORT
        or any(w in _EN_REFERS for w in words)
        or bool(words and (words[0] in _EN_LEADS or lead in _EN_LEADS))
    )


def topic_chain(question: str, previous: list[str]) -> list[str]:
    """The questions of the current topic, this one last. `previous` is the chain of the last turn."""
    if not previous or not is_follow_up(question) or language(previous[-1]) != language(question):
        return [question]
    return [*previous, question][-KEEP:]


def standalone(chain: list[str]) -> str:
    """The question the knowledge base is asked: the latest one, with its topic's earlier questions
    in front. Phrased so the model still reads the last question as the one to answer."""
    *earlier, question = chain
    if not earlier:
        return question
    context = " ".join(q.strip() for q in earlier)
    if language(question) == "zh":
        return f"（接着问：{context}）{question.strip()}"
    return f"(Following up on: {context}) {question.strip()}"
