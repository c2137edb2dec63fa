"""Short replies: the few-word answer a pair is trained to give when its question asks for one fact."""

from __future__ import annotations

import json

import pytest

from ingest.synth import synthesize
from ingest.synth.base import Candidate
from ingest.synth.facts import zh_number_questions
from ingest.synth.filters import MALFORMED, check, short_reply
from ingest.synth.raft import PLAIN, REFUSAL_REPLY, conversation
from ingest.synth.rules import RulesQA
from kb.errors import ConfigError
from kb.prompt import SYSTEM_NO_RETRIEVAL
from tests.ingest.test_synth import build, pairs_of, read_jsonl, view


def test_rules_give_short_replies_for_one_fact_questions():
    (num,) = [
        c
        for c in zh_number_questions("单个租户可接入的设备数量上限由5万台提升至20万台。")
        if c.gold == "20万"
    ]
    assert num.question == "单个租户可接入的设备数量上限由5万台提升至多少万台？"
    assert num.short == "20万台。"  # the measure word after the question word comes along

    text = "# 假期管理\n\n假期类型 天数 薪资待遇 证明材料\n婚假 13天 全薪 结婚证\n丧假 3天 全薪 关系证明\n"
    marriage = next(
        c for c in RulesQA().candidates(view(text, ["假期管理"]), 10) if c.question.startswith("婚假")
    )
    assert marriage.short == "13天。" and "结婚证" in marriage.answer

    kv = RulesQA().candidates(
        view("成立时间：2014年6月18日\n", ["基本信息"], title="青禾智联科技有限公司简介"), 5
    )
    assert kv[0].short == "2014年6月18日。"

    en = RulesQA().candidates(
        view("Passwords must be changed every 90 days.", ["Passwords"], "en", "IT Policy"), 5
    )
    assert any(
        c.question == "How often must passwords be changed?" and c.short == "Every 90 days." for c in en
    )


def test_section_questions_have_no_short_reply():
    cands = RulesQA().candidates(view("新员工入职当天上午领取工牌，下午领取电脑。", ["入职当天"]), 10)
    heading = [c for c in cands if c.kind == "heading"]
    assert heading and all(c.short == "" for c in heading)


def test_short_reply_must_be_in_the_evidence():
    cand = Candidate("婚假有几天？", "婚假：13天。", "13天", "table", "13天。")
    assert short_reply(cand, "婚假 13天 全薪") == "13天。"
    assert (
        short_reply(Candidate("婚假有几天？", "婚假：13天。", "13天", "table", "15天。"), "婚假 13天") == ""
    )
    assert short_reply(Candidate("婚假有几天？", "婚假：13天。", "13天", "table", "。"), "婚假 13天") == ""


@pytest.mark.parametrize("question,gold", [("-[的第一周清单是什么？", "]"), ("员工的清单是什么？", "]")])
def test_markup_questions_and_golds_are_malformed(question, gold):
    assert (
        check(Candidate(question, "第一周清单：完成个人信息填写。", gold, "heading"), "第一周清单")[0]
        == MALFORMED
    )


def test_pairs_from_before_short_replies_train_on_their_answer():
    pair = {
        "id": "p1",
        "question": "年假有几天？",
        "answer": "员工享有10天带薪年假。",
        "lang": "zh",
        "gold": "10天",
    }
    conv, _ = conversation(pair, PLAIN, None, None, 4000, 0)  # type: ignore[arg-type]
    assert conv[0]["content"] == SYSTEM_NO_RETRIEVAL["zh"] and conv[-1]["content"] == pair["answer"]
    conv, _ = conversation({**pair, "short": "10天。"}, PLAIN, None, None, 4000, 0)  # type: ignore[arg-type]
    assert conv[-1]["content"] == "10天。"


def test_reply_style_switches_without_regenerating(corpus, cfg, tmp_path):
    store = build(corpus, cfg)
    out = tmp_path / "out"
    synthesize(cfg, store, None, out_dir=out, use_llm=False, progress=False, validation_share=0.0)
    pairs = {p["question"]: p for p in pairs_of(cfg)}
    assert any(p["short"] for p in pairs.values()) and any(not p["short"] for p in pairs.values())

    def replies() -> dict[str, str]:
        got = {}
        for r in read_jsonl(out / "train.jsonl"):
            conv = r["conversations"]
            question = conv[-2]["content"].rsplit("问题：", 1)[-1].rsplit("Question: ", 1)[-1].strip()
            if question in pairs:
                got[question] = conv[-1]["content"]
        return got

    short = replies()
    report = synthesize(
        cfg, store, None, out_dir=out, use_llm=False, progress=False, validation_share=0.0, reply="sentence"
    )
    sentence = replies()
    assert report.pairs_new == 0 and short.keys() == sentence.keys() and len(short) >= 5
    for q, p in pairs.items():
        if q not in short:
            continue
        if short[q] in REFUSAL_REPLY.values():  # a refusal is the same sentence in either style
            assert sentence[q] == short[q]
            continue
        assert sentence[q].startswith(p["answer"])
        assert short[q].startswith(p["short"] or p["answer"])
    assert json.loads((out / "report.json").read_text())["train"] == report.train
    assert "reply: sentence" in (out / "config.yaml").read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="reply"):
        synthesize(cfg, store, None, out_dir=out, use_llm=False, progress=False, reply="long")
