"""The Generator interface and its registry.

A message is {"role": "system" | "user" | "assistant", "content": str}.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator

from kb.config import GeneratorConfig
from kb.errors import ConfigError

Message = dict[str, str]


class Generator(ABC):
    name: str = ""

    @abstractmethod
    def stream(self, messages: list[Message], *, max_new_tokens: int | None = None) -> Iterator[str]:
        """Yield the reply to `messages` piece by piece (greedy unless configured otherwise)."""

    def generate(self, messages: list[Message], *, max_new_tokens: int | None = None) -> str:
        return "".join(self.stream(messages, max_new_tokens=max_new_tokens))

    def yes_probability(self, messages: list[Message]) -> float | None:
        """P("yes") against P("no") as the first word of the reply, or None if this generator
        cannot score (then callers skip the check). Used for the answerability check."""
        return None


GENERATORS: dict[str, str] = {
    "hf": "kb.generate.hf:HFGenerator",  # transformers causal LM (+ optional peft adapter)
    "fake": "kb.generate.fake:FakeGenerator",  # queued replies, for tests
}


def get_generator(cfg: GeneratorConfig, **kwargs) -> Generator:
    try:
        target = GENERATORS[cfg.name]
    except KeyError:
        raise ConfigError(
            f"generator.name: unknown generator {cfg.name!r} (known: {', '.join(sorted(GENERATORS))})"
        ) from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(cfg, **kwargs)
