"""Growing a gold set from reviewed feedback (`kb eval-set append GOLD REVIEWED`).

`kb feedback export` writes QA items marked `"review": "pending"`. A reviewer corrects `answers` and
`answerable` and sets `review` to `"approved"` (or `"rejected"`). Appending takes the approved items
only, validates each against the QA schema, refuses ids already in the gold set (or repeated in the
file), and writes nothing unless every approved item is valid. The appended lines keep their fields
(the `feedback` provenance included) except `review`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kb.errors import DataError

REVIEW_STATES = ("pending", "approved", "rejected")


@dataclass
class AppendReport:
    gold: Path
    appended: int
    pending: int
    rejected: int

    def to_json(self) -> dict[str, Any]:
        return {
            "gold": str(self.gold),
            "appended": self.appended,
            "pending": self.pending,
            "rejected": self.rejected,
        }

    def summary(self) -> str:
        return (
            f"eval-set append: {self.appended} approved item(s) → {self.gold}; "
            f"skipped {self.pending} pending, {self.rejected} rejected"
        )


def validate_item(d: Any, where: str) -> dict[str, Any]:
    """One QA item checked strictly (the gold standard for a gold set); DataError names the line."""
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a JSON object")
    for key in ("id", "question", "answers", "answerable"):
        if key not in d:
            raise DataError(f"{where}: missing field {key!r}")
    if not isinstance(d["id"], str) or not d["id"].strip():
        raise DataError(f"{where}: 'id' must be a non-empty string")
    if not isinstance(d["question"], str) or not d["question"].strip():
        raise DataError(f"{where}: 'question' must be a non-empty string")
    if not isinstance(d["answerable"], bool):
        raise DataError(f"{where}: 'answerable' must be true or false")
    answers = d["answers"]
    if not isinstance(answers, list) or not all(isinstance(a, str) and a.strip() for a in answers):
        raise DataError(f"{where}: 'answers' must be a list of non-empty strings")
    if d["answerable"] and not answers:
        raise DataError(f"{where}: an answerable item needs at least one gold answer in 'answers'")
    if not d["answerable"] and answers:
        raise DataError(f"{where}: an unanswerable item must have no 'answers'")
    for key in ("source", "evidence", "lang"):
        if not isinstance(d.get(key, ""), str):
            raise DataError(f"{where}: {key!r} must be a string")
    return d


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return out


def append_reviewed(gold: Path, reviewed: Path) -> AppendReport:
    if not reviewed.is_file():
        raise DataError(f"{reviewed}: no such file")
    existing = (
        {str(d.get("id")) for _, d in _read_jsonl(gold) if isinstance(d, dict)} if gold.is_file() else set()
    )
    counts = dict.fromkeys(REVIEW_STATES, 0)
    approved: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for n, d in _read_jsonl(reviewed):
        where = f"{reviewed}:{n}"
        state = d.get("review", "pending") if isinstance(d, dict) else None
        if state not in REVIEW_STATES:
            raise DataError(f"{where}: 'review' must be one of {', '.join(REVIEW_STATES)}, got {state!r}")
        counts[state] += 1
        if state != "approved":
            continue
        item = validate_item(d, where)
        if item["id"] in existing:
            raise DataError(f"{where}: id {item['id']!r} is already in {gold}")
        if item["id"] in seen:
            raise DataError(f"{where}: id {item['id']!r} repeats line {seen[item['id']]}")
        seen[item["id"]] = n
        approved.append({k: v for k, v in item.items() if k != "review"})
    if approved:
        gold.parent.mkdir(parents=True, exist_ok=True)
        text = gold.read_text(encoding="utf-8") if gold.is_file() else ""
        lead = "\n" if text and not text.endswith("\n") else ""
        with open(gold, "a", encoding="utf-8") as f:
            f.write(lead + "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in approved))
    return AppendReport(gold, len(approved), counts["pending"], counts["rejected"])
