"""`kb eval-set append`: only approved items join the gold set, validated, with duplicate ids refused."""

from __future__ import annotations

import json
from pathlib import Path

from kb.cli import main
from kb.eval.runner import read_qa


def _export(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in items), encoding="utf-8")
    return path


def _item(id_: str, review: str, **kw) -> dict:
    """A line as `kb feedback export` writes it (ui/feedback.py: to_qa), after review."""
    d = {
        "id": id_,
        "question": "年假有几天？",
        "answers": ["10天"],
        "answerable": True,
        "source": "hr/leave.md",
        "evidence": "享有10天带薪年假",
        "lang": "zh",
        "review": review,
        "feedback": {"rating": "helpful", "comment": ""},
    }
    return {**d, **kw}


def test_appends_approved_items_only(tmp_path, capsys):
    gold = _export(
        tmp_path / "gold.jsonl", [{"id": "q1", "question": "x?", "answers": ["y"], "answerable": True}]
    )
    reviewed = _export(
        tmp_path / "review.jsonl",
        [
            _item("fb00001", "approved"),
            _item("fb00002", "pending", answers=[]),  # not reviewed yet: left out, even though invalid
            _item("fb00003", "rejected"),
            _item("fb00004", "approved", answers=[], answerable=False),
        ],
    )
    assert main(["eval-set", "append", str(gold), str(reviewed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "gold": str(gold),
        "appended": 2,
        "pending": 1,
        "rejected": 1,
    }
    items = read_qa(gold)
    assert [i.id for i in items] == ["q1", "fb00001", "fb00004"] and items[2].answerable is False
    lines = [json.loads(x) for x in gold.read_text(encoding="utf-8").splitlines()]
    assert "review" not in lines[1] and lines[1]["feedback"]["rating"] == "helpful"


def test_duplicate_ids_and_invalid_items_refused_without_writing(tmp_path, capsys):
    gold = _export(tmp_path / "gold.jsonl", [_item("fb00001", "approved")])
    before = gold.read_text(encoding="utf-8")
    cases = [
        ([_item("fb00009", "approved"), _item("fb00001", "approved")], "already in"),
        ([_item("fb00009", "approved"), _item("fb00009", "approved")], "repeats line 1"),
        ([_item("fb00009", "approved", answers=[])], "needs at least one gold answer"),
        ([_item("fb00009", "approved", answerable="yes")], "'answerable' must be true or false"),
        ([_item("fb00009", "approved", answers=["x"], answerable=False)], "unanswerable item must have no"),
        ([_item("fb00009", "approved", question="")], "'question' must be a non-empty string"),
        ([_item("fb00009", "done")], "'review' must be one of pending, approved, rejected"),
    ]
    for items, message in cases:
        reviewed = _export(tmp_path / "review.jsonl", items)
        assert main(["eval-set", "append", str(gold), str(reviewed)]) == 2
        err = capsys.readouterr().err
        assert message in err and "review.jsonl:" in err, (message, err)
        assert gold.read_text(encoding="utf-8") == before  # all or nothing


def test_creates_missing_gold_and_reports(tmp_path, capsys):
    gold = tmp_path / "sets" / "gold.jsonl"
    reviewed = _export(tmp_path / "review.jsonl", [_item("fb00001", "approved"), _item("fb00002", "pending")])
    assert main(["eval-set", "append", str(gold), str(reviewed)]) == 0
    assert "1 approved item(s)" in capsys.readouterr().out and [i.id for i in read_qa(gold)] == ["fb00001"]


def test_round_trip_from_a_real_feedback_export(tmp_path, capsys):
    from ui.feedback import record

    kb = tmp_path / "kb"
    entry = {
        "question": "年假有几天？",
        "answer": "10天 [1]",
        "citations": [{"source": "hr/leave.md", "text": "10天"}],
    }
    record(kb, {**entry, "lang": "zh"}, rating=1)
    record(kb, {**entry, "answer": "不知道"}, rating=0, comment="wrong")
    export = tmp_path / "review.jsonl"
    assert main(["feedback", "export", "--kb", str(kb), "--out", str(export)]) == 0
    assert "kb eval-set append" in capsys.readouterr().err
    lines = [json.loads(x) for x in export.read_text(encoding="utf-8").splitlines()]
    gold = tmp_path / "gold.jsonl"
    assert main(["eval-set", "append", str(gold), str(export)]) == 0  # nothing reviewed yet
    assert "0 approved" in capsys.readouterr().out and not gold.exists()
    lines[0]["review"] = "approved"  # the helpful answer, accepted as it is
    lines[1]["review"] = "approved"  # "not helpful": the reviewer must write the answer first
    _export(export, lines)
    assert main(["eval-set", "append", str(gold), str(export)]) == 2
    assert "needs at least one gold answer" in capsys.readouterr().err
    lines[1]["answers"] = ["10天"]
    _export(export, lines)
    assert main(["eval-set", "append", str(gold), str(export)]) == 0
    assert [(i.id, i.answers) for i in read_qa(gold)] == [("fb00001", ["10天"]), ("fb00002", ["10天"])]
