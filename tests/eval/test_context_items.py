"""QA items with `context` (kb synth's refusal items) are answered from those chunks, not retrieved ones."""

from __future__ import annotations

import json

import pytest

from kb.answer import Answerer
from kb.config import load_config
from kb.errors import DataError
from kb.eval.runner import read_qa, run_items
from kb.generate.fake import FakeGenerator
from kb.service import open_retriever
from kb.store import Store


def _answerer(kb, replies):
    cfg = load_config(overrides=[f"kb_dir={kb}", "embedder.name=hashing"])
    return Answerer(open_retriever(cfg), FakeGenerator(replies=replies), cfg)


def test_context_item_is_answered_from_its_chunks(kb_env, tmp_path):
    kb, _, _ = kb_env
    chunks = Store.open(kb).iter_chunks()
    vpn = next(c for c in chunks if c.source.endswith("vpn.md"))
    qa = tmp_path / "qa.jsonl"
    items = [
        {"id": "live", "question": "年假有几天？", "answers": ["10天"], "answerable": True},
        {"id": "ctx", "question": "年假有几天？", "answers": [], "answerable": False, "context": [vpn.id]},
    ]
    qa.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in items), encoding="utf-8")
    answerer = _answerer(kb, ["员工享有10天带薪年假。", "资料中没有相关信息。"])
    recs = list(run_items(read_qa(qa), answerer, progress=False))
    live_prompt, ctx_prompt = (m[-1]["content"] for m in answerer.generator.calls)
    assert "年假" in live_prompt.split("问题：")[0]  # retrieval found the leave policy
    assert vpn.text.strip()[:20] in ctx_prompt and "10天" not in ctx_prompt.split("问题：")[0]
    assert [h["chunk_id"] for h in recs[1]["retrieved"]] == [vpn.id]
    assert recs[1]["refused"] and not recs[0]["refused"]


def test_context_must_name_chunks_of_this_knowledge_base(kb_env, tmp_path):
    kb, _, _ = kb_env
    qa = tmp_path / "qa.jsonl"
    bad = {"id": "x", "question": "q?", "answers": [], "answerable": False, "context": ["nope"]}
    qa.write_text(json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="item x: context chunk\\(s\\) nope are not in the knowledge base"):
        list(run_items(read_qa(qa), _answerer(kb, []), progress=False))
    qa.write_text(json.dumps({**bad, "context": "nope"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="'context' must be a list of chunk ids"):
        read_qa(qa)
