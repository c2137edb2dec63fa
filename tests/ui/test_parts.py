"""The UI's plain-Python parts: safe file handling, follow-up rewriting, feedback export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kb.config import load_config
from ui import docs, feedback, rewrite

SUFFIXES = [".md", ".pdf", ".txt"]


@pytest.mark.parametrize(
    "name",
    [
        "../evil.md",
        "a/../../evil.md",
        "/etc/passwd.md",
        "..\\evil.md",
        ".env.md",
        "",
        " x.md",
        "a\x00.md",
        "x.exe",
        "..",
    ],
)
def test_unsafe_upload_names_are_refused(name: str) -> None:
    assert docs.check_upload_name(name, SUFFIXES) is not None


@pytest.mark.parametrize("name", ["员工手册.pdf", "vpn guide (2024).md", "notes.TXT"])
def test_ordinary_upload_names_are_accepted(name: str) -> None:
    assert docs.check_upload_name(name, SUFFIXES) is None


def test_save_upload_enforces_size_and_stays_in_its_folder(tmp_path: Path) -> None:
    cfg = load_config(data={"kb_dir": str(tmp_path / "kb"), "ingest": {"max_file_mb": 0.001}})
    folder = tmp_path / "uploads"
    assert docs.save_upload(folder, "ok.md", b"# hi\n", cfg) == folder / "ok.md"
    with pytest.raises(ValueError, match="limit"):
        docs.save_upload(folder, "big.md", b"x" * 2000, cfg)
    with pytest.raises(ValueError):
        docs.save_upload(folder, "../up.md", b"x", cfg)
    assert sorted(p.name for p in tmp_path.rglob("*.md")) == ["ok.md"]


def test_resolve_source_never_leaves_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "hr").mkdir(parents=True)
    (root / "hr" / "leave.md").write_text("x")
    secret = tmp_path / "secret.md"
    secret.write_text("secret")
    os.symlink(secret, root / "link.md")
    single = tmp_path / "single.txt"
    single.write_text("y")
    roots = [root.resolve(), single.resolve()]
    assert docs.resolve_source(roots, "hr/leave.md") == (root / "hr" / "leave.md").resolve()
    assert docs.resolve_source(roots, "single.txt") == single.resolve()
    for bad in ["../secret.md", "link.md", "/etc/passwd", "hr/../../secret.md", "missing.md", ""]:
        assert docs.resolve_source(roots, bad) is None, bad
    with pytest.raises(ValueError):
        docs.delete_source(roots, "../secret.md")
    assert secret.exists()


@pytest.mark.parametrize(
    ("previous", "question", "expected"),
    [
        ("年假有几天？", "那病假呢？", "（接着问：年假有几天？）那病假呢？"),
        ("年假有几天？", "它可以累积吗？", "（接着问：年假有几天？）它可以累积吗？"),
        (
            "How do I connect to the VPN?",
            "and the password?",
            "(Following up on: How do I connect to the VPN?) and the password?",
        ),
        (
            "年假有几天？",
            "打印机在几楼？应该找谁？",
            "打印机在几楼？应该找谁？",
        ),  # stands alone ("应该" is no pronoun)
        ("How do I connect to the VPN?", "那病假呢？", "那病假呢？"),  # language changed: a new topic
        (
            "How do I connect to the VPN?",
            "How many days of annual leave do I get?",
            "How many days of annual leave do I get?",
        ),
    ],
)
def test_follow_up_rewrite(previous: str, question: str, expected: str) -> None:
    chain = rewrite.topic_chain(previous, [])
    assert rewrite.standalone(rewrite.topic_chain(question, chain)) == expected


def test_topic_chain_keeps_the_last_questions_only() -> None:
    chain: list[str] = []
    for q in ["年假有几天？", "那病假呢？", "它需要证明吗？", "这个怎么申请？"]:
        chain = rewrite.topic_chain(q, chain)
    assert chain == ["那病假呢？", "它需要证明吗？", "这个怎么申请？"]


def _row(**changes) -> feedback.FeedbackRow:
    base = dict(
        id=7,
        created=0.0,
        updated=0.0,
        question="公司有健身房吗？",
        standalone="公司有健身房吗？",
        answer="抱歉，知识库的文档中没有找到这个问题的答案。",
        citations=[],
        refused=True,
        rating=1,
        comment="",
        model="m",
        adapter="",
        lang="zh",
        generation=3,
        seconds=1.0,
    )
    return feedback.FeedbackRow(**{**base, **changes})


def test_export_labels_are_drafts_for_review() -> None:
    agreed_refusal = feedback.to_qa(_row())
    assert agreed_refusal["answerable"] is False and agreed_refusal["answers"] == []
    wrong_refusal = feedback.to_qa(_row(rating=0, comment="员工手册第3章有"))
    assert wrong_refusal["answerable"] is True and wrong_refusal["answers"] == []
    good = feedback.to_qa(
        _row(refused=False, answer="有10天带薪年假 [1]。", citations=[{"source": "hr/a.md", "text": "10天"}])
    )
    assert good["answers"] == ["有10天带薪年假。"] and good["source"] == "hr/a.md" and good["id"] == "fb00007"
    assert all(x["review"] == "pending" for x in (agreed_refusal, wrong_refusal, good))
