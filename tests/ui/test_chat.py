"""The chat page through streamlit's AppTest: a fake generator with queued replies, hashing embedder."""

from __future__ import annotations

import json
import re

from ingest.pipeline import ingest
from kb.cli import main as kb_main
from kb.embed.hashing import HashingEmbedder
from kb.eval.runner import read_qa
from kb.prompt import REFUSAL
from tests.ui.conftest import UIEnv
from ui import feedback

LEAVE = "员工入职满一年后享有10天带薪年假 [1]。"


def _assistant_texts(at) -> list[str]:
    """Markdown of the assistant's messages with the page's escaping undone."""
    return [
        re.sub(r"\\(.)", r"\1", e.value) for m in at.chat_message if m.name == "assistant" for e in m.markdown
    ]


def test_answer_is_shown_with_its_sources(ui_env: UIEnv) -> None:
    at = ui_env.app()
    assert not at.exception and at.chat_input
    ui_env.generator().replies.append(LEAVE)
    at.chat_input[0].set_value("年假有几天？").run()
    assert not at.exception
    assert any("10天带薪年假" in text for text in _assistant_texts(at))
    labels = [e.label for e in at.expander]
    assert labels and labels[0].startswith("[1] hr/leave.md")
    # The expander holds the document, its section and the quoted chunk, and offers the file.
    inside = [e.value for e in at.expander[0].markdown]
    assert any("休假制度" in v for v in inside) and any(v.startswith("> ") for v in inside)
    assert at.download_button and at.download_button[0].label == "下载原文件"
    assert any("用时" in c.value and "1 个来源" in c.value for c in at.caption)


def test_refusal_says_so_and_shows_the_closest_sources(ui_env: UIEnv) -> None:
    at = ui_env.app()
    at.chat_input[0].set_value("公司有健身房吗？").run()  # the fake generator replies "": nothing grounded
    assert not at.exception
    assert REFUSAL["zh"] in _assistant_texts(at)
    assert at.warning and "没有找到可靠的答案" in at.warning[0].value
    labels = [e.label for e in at.expander]
    assert labels and all(label.startswith("最接近的资料") for label in labels)


def test_feedback_is_stored_and_exported_for_review(ui_env: UIEnv, tmp_path) -> None:
    at = ui_env.app()
    ui_env.generator().replies.append(LEAVE)
    at.chat_input[0].set_value("年假有几天？").run()
    at.feedback[0].set_value(1).run()
    rows = feedback.rows(ui_env.cfg.kb_dir)
    assert len(rows) == 1
    row = rows[0]
    assert row.rating == 1 and not row.refused and row.question == "年假有几天？"
    assert "10天" in row.answer and row.citations[0]["source"] == "hr/leave.md"
    assert row.model == "fake" and row.lang == "zh" and row.generation == 1
    at.text_input[0].input("很清楚").run()
    at.button(key=at.text_input[0].key.replace("cm_", "cb_")).click().run()
    assert feedback.rows(ui_env.cfg.kb_dir)[0].comment == "很清楚"

    out = tmp_path / "review.jsonl"
    assert kb_main(["feedback", "export", "--kb", ui_env.cfg.kb_dir, "--out", str(out)]) == 0
    (item,) = read_qa(out)  # the format kb eval reads
    assert item.answerable and item.source == "hr/leave.md" and "10天带薪年假" in item.answers[0]
    line = json.loads(out.read_text(encoding="utf-8"))
    assert line["review"] == "pending" and line["feedback"]["comment"] == "很清楚"


def test_follow_up_is_asked_with_the_previous_topic(ui_env: UIEnv) -> None:
    at = ui_env.app()
    gen = ui_env.generator()
    gen.replies += [LEAVE, "病假需要提供医院证明，每年带薪病假为5天 [1]。"]
    at.chat_input[0].set_value("年假有几天？").run()
    at.chat_input[0].set_value("那病假呢？").run()
    assert not at.exception
    prompt = gen.calls[-1][-1]["content"]
    assert "问题：（接着问：年假有几天？）那病假呢？" in prompt
    assert any("按上下文检索为" in c.value for c in at.caption)
    assert len([m for m in at.chat_message if m.name == "assistant"]) == 2


def test_interface_language_toggle_and_answer_language(ui_env: UIEnv) -> None:
    at = ui_env.app()
    assert at.title[0].value == "知识库问答"
    at.sidebar.radio[0].set_value("en").run()
    assert at.title[0].value == "Ask the knowledge base"
    at.sidebar.radio[0].set_value("zh").run()
    at.chat_input[0].set_value("Is there a gym in the office?").run()
    # Chinese labels, but the answer follows the English question.
    assert REFUSAL["en"] in _assistant_texts(at)


def test_a_new_generation_is_used_at_the_next_question(ui_env: UIEnv) -> None:
    at = ui_env.app()
    (ui_env.root / "general" / "gym.md").write_text(
        "# 健身房\n\n公司健身房在3楼，每天早上6点开放。\n", encoding="utf-8"
    )
    ingest([ui_env.root], ui_env.cfg, HashingEmbedder(), progress=False)  # as the admin page would
    ui_env.generator().replies.append("公司健身房在3楼 [1]。")
    at.chat_input[0].set_value("公司健身房在几楼？").run()
    assert [e.label for e in at.expander][0].startswith("[1] general/gym.md")
    assert at.session_state["messages"][-1]["generation"] == 2
