"""The real bundled Qwen2.5 0.5B: conversion (once, cached in ~/.cache/kb) and two behaviours we rely on."""

from __future__ import annotations

import json

import pytest

from kb.config import GeneratorConfig
from kb.generate.bundled import BUNDLED, ensure_bundled

pytestmark = pytest.mark.model

CONTEXT = "资料：星河科技的内部报销系统名为“青鸟”。员工提交报销单后，财务部会在5个工作日内完成审核。"


@pytest.fixture(scope="module")
def qwen():
    from kb.generate.hf import HFGenerator

    return HFGenerator(GeneratorConfig(model="bundled:qwen2.5-0.5b", max_new_tokens=40))


def test_conversion_is_cached_with_manifest() -> None:
    out = ensure_bundled("qwen2.5-0.5b")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sha256"] == BUNDLED["qwen2.5-0.5b"].sha256
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))


def test_answers_chinese_question_from_context(qwen) -> None:
    messages = [
        {"role": "system", "content": "请只根据给出的资料回答问题。"},
        {"role": "user", "content": CONTEXT + "\n问题：星河科技的内部报销系统叫什么名字？"},
    ]
    pieces = list(qwen.stream(messages))
    assert len(pieces) > 1  # streamed, not one block
    assert "青鸟" in "".join(pieces)


def test_yes_probability_separates_answerable(qwen) -> None:
    def ask(question: str) -> float:
        return qwen.yes_probability(
            [
                {"role": "system", "content": "判断资料中是否包含问题的答案。只回答“是”或“否”。"},
                {"role": "user", "content": CONTEXT + "\n问题：" + question},
            ]
        )

    answerable = ask("星河科技的内部报销系统叫什么名字？")
    unanswerable = ask("星河科技的总部在哪个城市？")
    assert 0.0 <= unanswerable < answerable <= 1.0
