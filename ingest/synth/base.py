"""The question/answer generator interface and its registry.

A generator looks at one chunk and proposes candidates; the pipeline filters them (support, length,
near-duplicates) and keeps a few per chunk. Registry entries are import paths, as for embedders and
generators, so picking "rules" never imports torch.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass

from kb.errors import ConfigError
from kb.generate.base import Generator
from kb.schema import Chunk


@dataclass
class ChunkView:
    """One chunk as a question generator sees it: the chunk, its document's title, its language."""

    chunk: Chunk
    title: str
    lang: str  # "zh" | "en" (kb.prompt.language of the chunk text)
    seed: int = 0  # varies which candidates come first; the same seed gives the same pairs
    previous: str = ""  # the text of the chunk before it in the same document (a split table's header)


@dataclass
class Candidate:
    question: str
    answer: str  # the full assistant answer, a sentence grounded in the chunk
    gold: str  # the short key fact (a value, a number with its unit) for `kb eval` contains/F1
    kind: str  # what produced it: faq, kv, table, number, definition, heading, llm
    # The reply in a few words when the question asks for one fact ("20万台", "ext. 8200"); empty when
    # only the sentence answers it (a procedure, a section). `kb synth --reply short` trains on it.
    short: str = ""


class QAGenerator(ABC):
    name: str = ""
    uses_model: bool = False  # True when candidates() calls a language model (costly; counted)

    def __init__(self) -> None:
        self.calls = 0  # language model calls made
        self.dropped: Counter[str] = Counter()  # outputs dropped before they became candidates, by reason

    @abstractmethod
    def candidates(self, view: ChunkView, n: int) -> list[Candidate]:
        """Proposals for this chunk, best first. `n` is how many the pipeline will keep at most;
        cheap generators may return more (the pipeline picks), model-backed ones should not."""


QA_GENERATORS: dict[str, str] = {
    "rules": "ingest.synth.rules:RulesQA",  # patterns over key-value lines, tables, facts; no model
    "llm": "ingest.synth.llm:LLMQA",  # the configured generator, one greedy call per pair
}


def get_qa_generator(name: str, generator: Generator | None = None) -> QAGenerator:
    try:
        target = QA_GENERATORS[name]
    except KeyError:
        raise ConfigError(
            f"synth: unknown question generator {name!r} (known: {', '.join(sorted(QA_GENERATORS))})"
        ) from None
    module, _, cls = target.partition(":")
    factory = getattr(importlib.import_module(module), cls)
    if getattr(factory, "uses_model", False):
        if generator is None:
            raise ConfigError(f"synth: question generator {name!r} needs a language model; none was given")
        return factory(generator)
    return factory()
