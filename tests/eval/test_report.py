"""`kb eval --report`: Markdown and HTML with the figures, confidence intervals and the worst items."""

from __future__ import annotations

from kb.cli import main
from kb.eval.report import item_score, worst_items
from tests.eval.conftest import fake_adapter


def test_report_for_a_matrix(kb_env, capsys, tmp_path):
    kb, qa, common = kb_env
    fake_adapter(kb, "lora-v1")
    out = tmp_path / "report"
    assert main(["eval", str(qa), "--adapters", "lora-v1", "--report", str(out), *common]) == 0
    assert "report.md" in capsys.readouterr().err
    for png in ("metrics.png", "hit_at_k.png", "latency.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    md = (out / "report.md").read_text(encoding="utf-8")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "| base +retrieval | 1.000 [1.00, 1.00]" in md  # hit@1 with its interval
    assert (
        "## The 10 worst items: base +retrieval" in md and "## The 10 worst items: lora-v1 +retrieval" in md
    )
    assert "-retrieval" not in md.split("## The 10 worst items")[1]  # no-retrieval rows have no sources
    worst_tuned = md.split("## The 10 worst items: lora-v1 +retrieval")[1]
    first_row = worst_tuned.split("\n|")[3]
    assert first_row.startswith(" q1 | 0.00 | 年假有几天？ | 10天 | (refused:")
    assert "hr/leave.md" in first_row and "(relevant at 1)" in first_row
    assert (
        '<img src="metrics.png"' in page
        and "<td>年假有几天？</td>" in page
        and "<th>retrieved sources</th>" in page
    )


def test_single_run_report_and_worst_order(kb_env, capsys, tmp_path):
    kb, qa, common = kb_env
    out = tmp_path / "single"
    assert main(["eval", str(qa), "--no-retrieval", "--report", str(out), *common]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## The 10 worst items: base -retrieval" in md and "hit_at_k.png" not in md  # nothing retrieved
    rows = [
        {
            "id": "a",
            "answerable": True,
            "refused": True,
            "contains": False,
            "f1": 0.0,
            "rouge_l": 0.0,
            "rank": 1,
        },
        {
            "id": "b",
            "answerable": True,
            "refused": False,
            "contains": True,
            "f1": 0.5,
            "rouge_l": 0.2,
            "rank": 1,
        },
        {
            "id": "c",
            "answerable": False,
            "refused": False,
            "contains": False,
            "f1": 0.0,
            "rouge_l": 0.0,
            "rank": None,
        },
        {
            "id": "d",
            "answerable": False,
            "refused": True,
            "contains": False,
            "f1": 0.0,
            "rouge_l": 0.0,
            "rank": None,
        },
    ]
    for r in rows:
        r["answer"] = "x"
    assert item_score(rows[1]) == (1 + 0.5 + 0.2) / 3 and item_score(rows[3]) == 1.0
    # a and c both score 0: the one whose relevant chunk is missing (c) comes first.
    assert [r["id"] for r in worst_items(rows)] == ["c", "a", "b", "d"]
