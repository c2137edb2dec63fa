"""Faithfulness by a judge model (`eval.judge`): is this answer sentence supported by the cited chunks?

The judge is any Generator that can score a yes/no reply (`Generator.yes_probability`); the sentence
counts as supported when P(yes) ≥ `JUDGE_MIN`. Cheaper than generating: one prefill per sentence.
"""

from __future__ import annotations

import dataclasses

from kb.config import Config
from kb.errors import ModelError
from kb.generate.base import Generator, Message
from kb.prompt import language

JUDGE_MIN = 0.5


def judge_messages(sentence: str, sources: list[str]) -> list[Message]:
    blocks = "\n\n".join(f"[{n}] {s.strip()}" for n, s in enumerate(sources, start=1))
    if language(sentence) == "zh":
        user = f"资料：\n{blocks}\n\n陈述：{sentence}\n上面的资料是否支持这个陈述？只回答“是”或“否”。"
    else:
        user = (
            f"Sources:\n{blocks}\n\nStatement: {sentence}\n"
            "Do the sources above support the statement? Reply only yes or no."
        )
    return [{"role": "user", "content": user}]


class Judge:
    """Callable as the `supported(sentence, cited_texts)` test of `metrics.faithfulness`."""

    def __init__(self, generator: Generator, name: str = ""):
        self.generator, self.name = generator, name or generator.name

    def __call__(self, sentence: str, sources: list[str]) -> bool:
        p = self.generator.yes_probability(judge_messages(sentence, sources))
        if p is None:
            raise ModelError(f"eval.judge: the judge model {self.name!r} cannot score a yes/no reply")
        return p >= JUDGE_MIN


def open_judge(cfg: Config) -> Judge | None:
    """The judge configured by `eval.judge` (a model, as generator.model takes), or None for lexical."""
    if not cfg.eval.judge:
        return None
    from kb.generate import get_generator

    gcfg = dataclasses.replace(cfg.generator, model=cfg.eval.judge, adapter="none")
    return Judge(get_generator(gcfg), cfg.eval.judge)
