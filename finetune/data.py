"""Read instruction-tuning data in the common JSON shapes and normalise it to conversations.

Every example becomes a `Conversation`: a list of messages `{"role", "content"}` where role is one of
system, user, assistant, tool, observation. A system message may also carry ChatGLM3's `tools` (a list of
function schemas); an assistant message may carry ChatGLM3's `metadata` (the name of the tool it calls).

Shapes recognised per record (a JSONL line, or an item of a top-level JSON list):

- `{"conversations": [...]}` (ChatGLM3 finetune format; `{"messages": [...]}` is read the same way)
- `{"instruction", "input", "output"}` (alpaca; optional `system`, optional `history` of [q, a] pairs)
- `{"prompt", "response"}` (optional `system`, optional `history`)
- `{"content", "summary"}` (AdvertiseGen)

Broken JSON, text that is not UTF-8 and records of an unknown shape are errors naming `file:line` (the
file itself is wrong); a record whose conversation is unusable (bad role, wrong types, empty content, no
assistant turn, turns out of order, longer than `max_chars`) is skipped and counted in `DataStats`, or is
an error when `strict=True`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kb.errors import DataError

Conversation = list[dict[str, Any]]

ROLES = ("system", "user", "assistant", "tool", "observation")
# Tool results: ChatGLM3 calls them "observation", OpenAI/Qwen style data calls them "tool".
TOOL_ROLES = ("tool", "observation")
# How many line numbers DataStats keeps per skip reason: enough to find the pattern, not a dump.
KEEP_LINES = 5

# Skip reasons (the keys of DataStats.skipped).
BAD_MESSAGE = "message is not an object with a string role and content"
BAD_ROLE = "unknown role"
EMPTY = "empty content"
NO_ASSISTANT = "no assistant turn"
BAD_ORDER = "turns out of order"
TOO_LONG = "longer than data.max_example_chars"
OTHER_AUDIENCE = "restricted documents outside data.audience"


@dataclass
class DataStats:
    """What read_examples kept and skipped; `lines` holds the first few line numbers per skip reason."""

    path: str = ""
    records: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)

    def skip(self, reason: str, line: int) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        first = self.lines.setdefault(reason, [])
        if len(first) < KEEP_LINES:
            first.append(line)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        text = f"{self.path}: {self.kept} of {self.records} examples kept"
        for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]):
            where = ", ".join(str(x) for x in self.lines.get(reason, []))
            text += (
                f"\n  skipped {n}: {reason} (lines {where}{', ...' if n > len(self.lines[reason]) else ''})"
            )
        return text


class _Skip(Exception):
    """A record that is valid JSON of a known shape but not a usable conversation."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _records(path: Path) -> Iterator[tuple[int, str, Any]]:
    """Yield (number, where, record): the line number in JSONL, the 1-based item index in a JSON list."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
        except RecursionError:
            raise DataError(f"{path}: not valid JSON (nested too deeply)") from None
        for n, item in enumerate(items, start=1):
            yield n, f"{path}: item {n}", item
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        except RecursionError:
            raise DataError(f"{path}:{lineno}: not valid JSON (nested too deeply)") from None
        yield lineno, f"{path}:{lineno}", record


def _history(record: dict, where: str) -> Conversation:
    history = record.get("history") or []
    if not isinstance(history, list) or not all(isinstance(p, list) and len(p) == 2 for p in history):
        raise DataError(f"{where}: history must be a list of [question, answer] pairs")
    conv: Conversation = []
    for q, a in history:
        conv += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return conv


def _single_turn(record: dict, query: Any, answer: Any, where: str) -> Conversation:
    conv: Conversation = []
    if record.get("system"):
        conv.append({"role": "system", "content": record["system"]})
    conv += _history(record, where)
    conv += [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
    return conv


def _to_conversation(record: Any, where: str) -> Conversation:
    """Map one record to a conversation by its keys; unknown shapes are a DataError."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "conversations" in record or "messages" in record:
        conv = record.get("conversations", record.get("messages"))
        if not isinstance(conv, list):
            raise _Skip(BAD_MESSAGE, "conversations is not a list")
        conv = [dict(m) if isinstance(m, dict) else m for m in conv]
        tools = record.get("tools")
        if tools:
            # ChatGLM3 data may put tools beside the conversation; the template reads them off the system turn.
            if conv and isinstance(conv[0], dict) and conv[0].get("role") == "system":
                conv[0].setdefault("tools", tools)
            else:
                conv.insert(0, {"role": "system", "content": "", "tools": tools})
        return conv
    if "instruction" in record and "output" in record:
        query = record["instruction"]
        extra = record.get("input") or ""
        if isinstance(query, str) and isinstance(extra, str) and extra.strip():
            query = f"{query}\n{extra}"
        return _single_turn(record, query, record["output"], where)
    if "prompt" in record and "response" in record:
        return _single_turn(record, record["prompt"], record["response"], where)
    if "content" in record and "summary" in record:
        return _single_turn(record, record["content"], record["summary"], where)
    raise DataError(
        f"{where}: unknown record shape with keys {sorted(record)}; expected conversations, "
        "instruction/input/output, prompt/response or content/summary"
    )


def _check(conv: Conversation) -> None:
    """Raise _Skip unless conv is a usable conversation.

    Order rule: an optional system turn first; then user; a user turn is answered by the assistant; an
    assistant turn is followed by a user turn or by tool results (assistant called a tool), and tool
    results are followed by more tool results or the assistant. The last turn must be the assistant's,
    since a trailing question would never be trained on.
    """
    for i, msg in enumerate(conv):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise _Skip(BAD_MESSAGE, f"turn {i + 1}")
        if msg["role"] not in ROLES:
            raise _Skip(BAD_ROLE, f"turn {i + 1} has role {msg['role']!r}")
        if not isinstance(msg.get("content"), str):
            raise _Skip(BAD_MESSAGE, f"turn {i + 1} content is {type(msg.get('content')).__name__}")
        if not msg["content"].strip() and not (msg["role"] == "system" and msg.get("tools")):
            raise _Skip(EMPTY, f"turn {i + 1} ({msg['role']})")
    roles = [m["role"] for m in conv]
    if "assistant" not in roles:
        raise _Skip(NO_ASSISTANT, f"roles {roles}")
    allowed_next = {
        "system": {"user"},
        "user": {"assistant"},
        "assistant": {"user", *TOOL_ROLES},
        "tool": {"assistant", *TOOL_ROLES},
        "observation": {"assistant", *TOOL_ROLES},
    }
    body = roles[1:] if roles[0] == "system" else roles
    if not body or body[0] != "user" or body[-1] != "assistant":
        raise _Skip(BAD_ORDER, f"roles {roles}")
    for a, b in zip(body, body[1:], strict=False):
        if b not in allowed_next[a]:
            raise _Skip(BAD_ORDER, f"{a} followed by {b} in roles {roles}")


def _check_length(conv: Conversation, max_chars: int | None) -> None:
    if max_chars:
        n = sum(len(m["content"]) for m in conv)
        if n > max_chars:
            raise _Skip(TOO_LONG, f"{n} characters (limit {max_chars})")


def read_examples(
    path: str | Path,
    strict: bool = False,
    max_chars: int | None = None,
    keep: Callable[[dict], bool] | None = None,
) -> tuple[list[Conversation], DataStats]:
    """Read a JSONL file (or a JSON list) of training examples as conversations.

    Broken JSON, non-UTF-8 text or an unknown record shape raises DataError naming `file:line`. Unusable
    conversations (and those over `max_chars` characters) are skipped and counted in the returned
    DataStats; with `strict=True` the first one raises DataError.
    """
    path = Path(path)
    stats = DataStats(path=str(path))
    conversations: list[Conversation] = []
    for lineno, where, record in _records(path):
        stats.records += 1
        if keep is not None and isinstance(record, dict) and not keep(record):
            stats.skip(OTHER_AUDIENCE, lineno)  # not an error even when strict: excluded on purpose
            continue
        try:
            conv = _to_conversation(record, where)
            _check(conv)
            _check_length(conv, max_chars)
        except _Skip as skip:
            if strict:
                raise DataError(f"{where}: {skip}") from None
            stats.skip(skip.reason, lineno)
            continue
        conversations.append(conv)
        stats.kept += 1
    return conversations, stats


def _alpaca(conv: Conversation) -> dict[str, Any]:
    """One alpaca record: the last user/assistant pair, earlier pairs as history, the system prompt."""
    body = [m for m in conv if m["role"] != "system"]
    if any(m["role"] not in ("user", "assistant") for m in body):
        raise DataError("alpaca format has no place for tool turns; write it as conversations")
    pairs = [[q["content"], a["content"]] for q, a in zip(body[::2], body[1::2], strict=True)]
    record: dict[str, Any] = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
    if conv[0]["role"] == "system":
        record["system"] = conv[0]["content"]
    if len(pairs) > 1:
        record["history"] = pairs[:-1]
    return record


def write_examples(
    path: str | Path,
    conversations: Iterable[Conversation],
    fmt: str = "conversations",
    meta: list[dict[str, Any]] | None = None,
) -> int:
    """Write conversations as JSONL in `fmt` ("conversations" or "alpaca"); returns the number written.
    `meta[i]` adds keys to record i (kb synth's `departments` and `collection`)."""
    if fmt not in ("conversations", "alpaca"):
        raise DataError(f"{path}: unknown output format {fmt!r}; use conversations or alpaca")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for conv in conversations:
            record = {"conversations": conv} if fmt == "conversations" else _alpaca(conv)
            if meta is not None:
                record.update(meta[n])
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n
