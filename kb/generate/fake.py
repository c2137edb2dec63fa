"""A generator that replays queued replies: lets tests drive the answer flow without a model."""

from __future__ import annotations

from collections.abc import Iterator

from kb.config import GeneratorConfig
from kb.generate.base import Generator, Message


class FakeGenerator(Generator):
    name = "fake"

    def __init__(
        self,
        cfg: GeneratorConfig | None = None,
        replies: list[str] | None = None,
        yes: list[float] | None = None,
    ):
        self.replies = list(replies or [])
        self.yes = list(yes or [])
        self.calls: list[list[Message]] = []

    def stream(self, messages: list[Message], *, max_new_tokens: int | None = None) -> Iterator[str]:
        self.calls.append(messages)
        reply = self.replies.pop(0) if self.replies else ""
        for i in range(0, len(reply), 4):
            yield reply[i : i + 4]

    def yes_probability(self, messages: list[Message]) -> float | None:
        return self.yes.pop(0) if self.yes else None
