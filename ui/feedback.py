"""Answer feedback from the chat page, in <kb_dir>/feedback.sqlite, and its export for review.

No Streamlit here: `kb feedback export` imports this module, and the CLI stays light.

The export writes the QA format `kb eval` reads (id, question, answers, answerable, source,
evidence, lang). Feedback is an employee's opinion, not a checked gold answer, so every exported
line carries "review": "pending" and the rating and comment; a reviewer fixes `answers` and
`answerable` before the file joins an evaluation set.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE = "feedback.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    question TEXT NOT NULL,          -- as the employee typed it
    standalone TEXT NOT NULL,        -- what was searched and answered (follow-ups rewritten)
    answer TEXT NOT NULL,
    citations TEXT NOT NULL,         -- JSON list of {n, source, page, heading, chunk_id, text}
    refused INTEGER NOT NULL,
    rating INTEGER,                  -- 1 helpful, 0 not helpful
    comment TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    adapter TEXT NOT NULL DEFAULT '',
    lang TEXT NOT NULL DEFAULT '',
    generation INTEGER,              -- knowledge base generation that answered
    seconds REAL
);
"""

_MARKS = re.compile(r"\s*[\[【]\s*\d+(?:\s*[,，、]\s*\d+)*\s*[\]】]")


@dataclass
class FeedbackRow:
    id: int
    created: float
    updated: float
    question: str
    standalone: str
    answer: str
    citations: list[dict[str, Any]]
    refused: bool
    rating: int | None
    comment: str
    model: str
    adapter: str
    lang: str
    generation: int | None
    seconds: float | None


def _connect(kb_dir: str | Path) -> sqlite3.Connection:
    path = Path(kb_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10)  # several browser sessions may write at once
    db.executescript(SCHEMA)
    return db


def record(kb_dir: str | Path, entry: dict[str, Any], rating: int | None, comment: str = "") -> int:
    """Store one rated answer; `entry` holds the answer's fields (see SCHEMA). Returns the row id."""
    now = time.time()
    with closing(_connect(kb_dir)) as db, db:
        cur = db.execute(
            "INSERT INTO feedback (created, updated, question, standalone, answer, citations, refused, rating,"
            " comment, model, adapter, lang, generation, seconds) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                now,
                now,
                entry["question"],
                entry.get("standalone", entry["question"]),
                entry["answer"],
                json.dumps(entry.get("citations", []), ensure_ascii=False),
                int(bool(entry.get("refused"))),
                rating,
                comment,
                entry.get("model", ""),
                entry.get("adapter", ""),
                entry.get("lang", ""),
                entry.get("generation"),
                entry.get("seconds"),
            ),
        )
        return int(cur.lastrowid)


def update(kb_dir: str | Path, row_id: int, *, rating: int | None = None, comment: str | None = None) -> None:
    """Change the rating and/or comment of a stored row (an employee changing their mind)."""
    sets, values = ["updated = ?"], [time.time()]
    if rating is not None:
        sets.append("rating = ?")
        values.append(rating)
    if comment is not None:
        sets.append("comment = ?")
        values.append(comment)
    with closing(_connect(kb_dir)) as db, db:
        db.execute(f"UPDATE feedback SET {', '.join(sets)} WHERE id = ?", (*values, row_id))


def rows(kb_dir: str | Path) -> list[FeedbackRow]:
    if not (Path(kb_dir) / FILE).is_file():
        return []
    with closing(_connect(kb_dir)) as db:
        out = []
        for r in db.execute("SELECT * FROM feedback ORDER BY id"):
            values = list(r)
            values[6] = json.loads(values[6])
            values[7] = bool(values[7])
            out.append(FeedbackRow(*values))
        return out


def to_qa(row: FeedbackRow) -> dict[str, Any]:
    """One feedback row as a QA item for `kb eval`, marked for review.

    Draft labels: a helpful answer becomes the draft gold answer (citation marks removed); a helpful
    refusal says the documents do not hold the answer (answerable false); anything rated not
    helpful is presumed answerable with the answer left for the reviewer to write.
    """
    helpful = row.rating == 1
    first = row.citations[0] if row.citations else {}
    answers = [_MARKS.sub("", row.answer).strip()] if helpful and not row.refused else []
    return {
        "id": f"fb{row.id:05d}",
        "question": row.standalone or row.question,
        "answers": answers,
        "answerable": not (helpful and row.refused),
        "source": first.get("source", ""),
        "evidence": first.get("text", ""),
        "lang": row.lang,
        "review": "pending",
        "feedback": {
            "rating": {1: "helpful", 0: "not helpful"}.get(row.rating, "unrated"),
            "comment": row.comment,
            "asked": row.question,
            "answer": row.answer,
            "refused": row.refused,
            "model": row.model,
            "adapter": row.adapter,
            "generation": row.generation,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(row.created)),
        },
    }


def export_lines(kb_dir: str | Path) -> Iterator[str]:
    for row in rows(kb_dir):
        yield json.dumps(to_qa(row), ensure_ascii=False)
