"""Synthetic instruction pairs: rules and LLM generators, filters, RAFT conversations, change-awareness,
the split by document, and the output formats. Model-free: hashing embedder, FakeGenerator."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ingest.pipeline import ingest
from ingest.synth import REFUSAL_REPLY, ChunkView, Shares, synthesize
from ingest.synth.filters import QuestionIndex, check
from ingest.synth.llm import parse_reply
from ingest.synth.raft import assign_modes, split_sources
from ingest.synth.rules import KINDS, RulesQA
from kb.embed import get_embedder
from kb.errors import ConfigError
from kb.generate.fake import FakeGenerator
from kb.prompt import REFUSAL_PATTERNS, SYSTEM, SYSTEM_NO_RETRIEVAL
from kb.schema import Chunk
from kb.store import Store
from tests.conftest import write_corpus

PAIR_KEYS = {
    "id",
    "question",
    "answer",
    "gold",
    "short",
    "lang",
    "kind",
    "generator",
    "chunk_id",
    "chunk_hash",
    "source",
    "collection",
    "departments",
    "page",
    "doc_sha256",
    "support",
}


def build(corpus: Path, cfg) -> Store:
    ingest([corpus], cfg, get_embedder(cfg.embedder), progress=False)
    return Store.open(cfg.kb_dir)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pairs_of(cfg) -> list[dict]:
    return read_jsonl(Path(cfg.kb_dir) / "synth" / "pairs.jsonl")


def run(cfg, store, tmp_path, gen=None, **kw):
    kw.setdefault("use_llm", gen is not None)
    return synthesize(cfg, store, gen, out_dir=tmp_path / "out", progress=False, **kw)


def view(text: str, headings: list[str], lang: str = "zh", title: str = "员工手册") -> ChunkView:
    chunk = Chunk(
        id="c1", text=text, source="hr/x.md", page=None, headings=headings, start=0, end=len(text), hash="h"
    )
    return ChunkView(chunk, title, lang)


# ---------- the rules generator ----------


def test_rules_table_row_kv_and_number_sentences():
    text = "# 假期管理\n\n假期类型 天数 薪资待遇 证明材料\n婚假 13天 全薪 结婚证\n丧假 3天 全薪 关系证明\n"
    cands = RulesQA().candidates(view(text, ["假期管理"]), 10)
    marriage = next(c for c in cands if c.question.startswith("婚假"))
    assert marriage.kind == "table" and marriage.gold == "13天" and "有" in marriage.question
    assert "13天" in marriage.answer and "结婚证" in marriage.answer

    kv = RulesQA().candidates(
        view("成立时间：2014年6月18日\n", ["基本信息"], title="青禾智联科技有限公司简介"), 5
    )
    assert kv[0].kind == "kv" and kv[0].gold == "2014年6月18日"
    assert kv[0].question == "青禾智联科技有限公司的成立时间是什么时候？"

    num = RulesQA().candidates(view("员工出差须至少提前3个工作日提交出差申请。", ["出差申请"]), 5)
    q = next(c for c in num if c.kind == "number")
    assert q.question == "员工出差须至少提前几个工作日提交出差申请？" and q.gold == "3个工作日"

    en = RulesQA().candidates(
        view("Passwords must be changed every 90 days.", ["Passwords"], "en", "IT Policy"), 5
    )
    assert any(c.question == "How often must passwords be changed?" and c.gold == "90 days" for c in en)


def test_rules_pairs_carry_metadata(corpus, cfg, tmp_path):
    store = build(corpus, cfg)
    report = run(cfg, store, tmp_path)
    pairs = pairs_of(cfg)
    assert report.pairs_new == len(pairs) == report.pairs_total > 0
    chunks = {c.id: c for c in store.iter_chunks()}
    shas = {f.source: f.sha256 for f in store.files()}
    for p in pairs:
        assert set(p) == PAIR_KEYS and p["generator"] == "rules" and p["kind"] in KINDS
        c = chunks[p["chunk_id"]]
        assert (p["chunk_hash"], p["source"], p["doc_sha256"]) == (c.hash, c.source, shas[c.source])
        assert p["support"] >= 0.6 and p["question"].endswith(("？", "?"))
    assert {p["lang"] for p in pairs} == {"zh", "en"}
    assert any(p["gold"] == "10天" for p in pairs)  # 员工入职满一年后享有10天带薪年假
    assert max(sum(p["chunk_id"] == cid for p in pairs) for cid in chunks) <= 2  # per_chunk


# ---------- the LLM generator and the filters ----------


def one_doc(tmp_path: Path, cfg) -> Store:
    root = write_corpus(tmp_path / "one", {"hr/leave.md": "# 年假\n\n员工入职满一年后享有10天带薪年假。\n"})
    return build(root, cfg)


def test_llm_pairs_kept_when_supported(tmp_path, cfg):
    store = one_doc(tmp_path, cfg)
    gen = FakeGenerator(replies=["问题：入职一年的员工能休多少天年假？\n答案：10天带薪年假。"])
    run(cfg, store, tmp_path, gen, per_chunk=1)
    llm = [p for p in pairs_of(cfg) if p["generator"] == "llm"]
    assert len(gen.calls) == 1 and [p["answer"] for p in llm] == ["10天带薪年假。"]
    assert "资料：年假：员工入职满一年后享有10天带薪年假。" in gen.calls[0][-1]["content"]


def test_unsupported_llm_answer_dropped(tmp_path, cfg):
    store = one_doc(tmp_path, cfg)
    gen = FakeGenerator(replies=["问题：年假可以累积吗？\n答案：可以无限累积到退休，并折算成现金发放。"])
    report = run(cfg, store, tmp_path, gen, per_chunk=1)
    assert report.skipped.get("unsupported") == 1
    assert not [p for p in pairs_of(cfg) if p["generator"] == "llm"]


def test_malformed_llm_output_dropped(tmp_path, cfg):
    store = one_doc(tmp_path, cfg)
    gen = FakeGenerator(replies=["年假是10天。"])
    report = run(cfg, store, tmp_path, gen, per_chunk=1)
    assert report.skipped.get("malformed") == 1 and report.model_calls == 1
    assert not [p for p in pairs_of(cfg) if p["generator"] == "llm"]


def test_parse_reply_formats():
    assert parse_reply("问题：婚假几天？\n答案：13天。", "zh") == ("婚假几天？", "13天。")
    assert parse_reply("**问题**：婚假几天\n\n**答案**：13天", "zh") == ("婚假几天？", "13天")
    assert parse_reply("Question: How long?\nAnswer: 90 days.", "en") == ("How long?", "90 days.")
    assert parse_reply("答案：13天", "zh") is None
    assert parse_reply("问题：婚假是13天。\n答案：13天", "zh") is None  # a statement is not a question


def test_near_duplicate_questions():
    index = QuestionIndex()
    index.add("婚假有几天？")
    assert index.near("婚假有几天?") and index.near("婚假有几天")
    assert not index.near("产假有几天？")  # Jaccard 3/5 = 0.6


def test_duplicate_llm_question_dropped(tmp_path, cfg):
    store = one_doc(tmp_path, cfg)
    rules_q = RulesQA().candidates(ChunkView(store.iter_chunks()[0], "年假", "zh"), 1)[0].question
    gen = FakeGenerator(replies=[f"问题：{rules_q}\n答案：10天带薪年假。"])
    report = run(cfg, store, tmp_path, gen, per_chunk=1)
    assert report.skipped.get("duplicate") == 1


def test_length_filter():
    from ingest.synth.base import Candidate

    assert check(Candidate("几天？", "10天", "10天", "llm"), "10天")[0] == "too_short"
    assert check(Candidate("年假几天？", "10天" * 400, "10天", "llm"), "10天")[0] == "too_long"
    echo = Candidate("整个过程约需3分钟？", "整个过程约需3分钟。", "整个过程约需3分钟", "llm")
    assert check(echo, "整个过程约需3分钟。")[0] == "answer_in_question"
    assert check(Candidate("整个过程约需几分钟？", "约需3分钟。", "3分钟", "llm"), "整个过程约需3分钟。") == (
        None,
        1.0,
    )


# ---------- RAFT conversations ----------


def sources_of(user: str) -> dict[int, str]:
    """{n: text} of the numbered sources in an answer prompt."""
    body = user.split("\n\n问题：")[0].split("\n\nQuestion: ")[0]
    blocks = re.split(r"\n\[(\d+)\] \([^\n]*\)\n", body)
    unwrap = re.compile(r"^<source>\n(.*)\n</source>$", re.DOTALL)  # kb.prompt delimits each source
    return {
        int(n): unwrap.sub(r"\1", text.strip()) for n, text in zip(blocks[1::2], blocks[2::2], strict=True)
    }


def test_raft_modes_and_shares():
    modes = assign_modes([f"p{i}" for i in range(100)], Shares(), seed=0)
    assert sorted(modes.values()).count("oracle") == 70
    assert list(modes.values()).count("distractor") == 15 and list(modes.values()).count("plain") == 15
    assert assign_modes([f"p{i}" for i in range(100)], Shares(), seed=0) == modes
    with pytest.raises(ConfigError):
        Shares(0.5, 0.5, 0.5).validate()


def test_raft_conversations_follow_the_answer_prompt(corpus, cfg, tmp_path):
    store = build(corpus, cfg)
    report = run(cfg, store, tmp_path, per_chunk=3, shares=Shares(0.5, 0.3, 0.2), validation_share=0.0)
    pairs = {p["question"]: p for p in pairs_of(cfg)}
    chunks = {c.id: c for c in store.iter_chunks()}
    convs = [r["conversations"] for r in read_jsonl(tmp_path / "out" / "train.jsonl")]
    assert len(convs) == len(pairs) == report.train and report.validation == 0
    seen = {"oracle": 0, "distractor": 0, "plain": 0}
    for conv in convs:
        system, user, reply = conv[0]["content"], conv[-2]["content"], conv[-1]["content"]
        if system in SYSTEM_NO_RETRIEVAL.values():
            seen["plain"] += 1
            assert (pairs[user]["short"] or pairs[user]["answer"]) == reply
            continue
        assert system in SYSTEM.values()
        question = re.search(r"(?:问题：|Question: )(.*?)(?:\n|$)", user).group(1)
        pair = pairs[question]
        srcs = sources_of(user)
        assert 2 <= len(srcs) <= 4
        gold = chunks[pair["chunk_id"]].text.strip()
        if REFUSAL_PATTERNS.search(reply):
            seen["distractor"] += 1
            assert reply == REFUSAL_REPLY[pair["lang"]]
            assert gold not in srcs.values()
        else:
            seen["oracle"] += 1
            n = int(re.search(r"\[(\d+)\]$", reply).group(1))
            assert srcs[n].strip() == gold and reply.startswith(pair["short"] or pair["answer"])
            assert sum(t.strip() == gold for t in srcs.values()) == 1
    n = len(convs)
    for mode, share in (("oracle", 0.5), ("distractor", 0.3), ("plain", 0.2)):
        assert abs(seen[mode] - share * n) < 1
    assert report.modes == seen


def test_refusal_replies_match_patterns():
    for reply in REFUSAL_REPLY.values():
        assert REFUSAL_PATTERNS.search(reply)


# ---------- change-awareness ----------


def test_rerun_on_unchanged_kb_adds_nothing_and_calls_no_model(corpus, cfg, tmp_path):
    store = build(corpus, cfg)
    gen = FakeGenerator(replies=["问题：员工入职满一年后有几天带薪年假？\n答案：10天带薪年假。"])
    first = run(cfg, store, tmp_path, gen)
    calls = len(gen.calls)
    out_before = (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8")
    second = run(cfg, store, tmp_path, gen)
    assert first.pairs_new > 0 and calls > 0
    assert (second.pairs_new, second.chunks_new, second.pairs_dropped, second.model_calls) == (0, 0, 0, 0)
    assert len(gen.calls) == calls and second.pairs_total == first.pairs_total
    assert (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8") == out_before


def test_changed_document_replaces_its_pairs(corpus, cfg, tmp_path):
    store = build(corpus, cfg)
    run(cfg, store, tmp_path)
    old = [p for p in pairs_of(cfg) if p["source"] == "hr/leave.md"]
    (corpus / "hr" / "leave.md").write_text(
        "# 休假制度\n\n## 年假\n\n员工入职满一年后享有12天带薪年假。\n", encoding="utf-8"
    )
    store = build(corpus, cfg)
    report = run(cfg, store, tmp_path)
    new = [p for p in pairs_of(cfg) if p["source"] == "hr/leave.md"]
    assert old and new and report.pairs_dropped == len(old) and report.pairs_new == len(new)
    assert not {p["id"] for p in old} & {p["id"] for p in new}
    assert any(p["gold"] == "12天" for p in new) and not any("10天" in p["answer"] for p in new)
    live = {(c.id, c.hash) for c in store.iter_chunks()}
    assert all((p["chunk_id"], p["chunk_hash"]) in live for p in pairs_of(cfg))


def test_deleted_document_drops_its_pairs(corpus, cfg, tmp_path):
    store = build(corpus, cfg)
    run(cfg, store, tmp_path)
    n_canteen = sum(p["source"] == "general/canteen.txt" for p in pairs_of(cfg))
    (corpus / "general" / "canteen.txt").unlink()
    store = build(corpus, cfg)
    report = run(cfg, store, tmp_path)
    assert n_canteen > 0 and report.pairs_dropped == n_canteen and report.pairs_new == 0
    assert not [p for p in pairs_of(cfg) if p["source"] == "general/canteen.txt"]
    state = json.loads((Path(cfg.kb_dir) / "synth" / "state.json").read_text(encoding="utf-8"))
    assert {e["source"] for e in state["chunks"].values()} == {"hr/leave.md", "it/vpn.md"}


# ---------- split and output formats ----------


def test_split_by_document(tmp_path, cfg):
    docs = {
        f"d{i}/doc{i}.md": f"# 文档{i}\n\n第{i}号仓库的面积为{100 + i}平方米，租期为{i + 2}年。\n"
        for i in range(10)
    }
    store = build(write_corpus(tmp_path / "many", docs), cfg)
    report = run(cfg, store, tmp_path)
    pairs = {p["question"]: p for p in pairs_of(cfg)}
    val_sources = split_sources([p["source"] for p in pairs.values()], 0.2)
    assert len(val_sources) == 2

    def sources(name: str) -> set[str]:
        found = set()
        for r in read_jsonl(tmp_path / "out" / f"{name}.jsonl"):
            user = r["conversations"][-2]["content"]
            q = re.search(r"问题：(.*?)(?:\n|$)", user).group(1) if "问题：" in user else user
            found.add(pairs[q]["source"])
        return found

    assert sources("validation") == val_sources and not sources("train") & val_sources
    for r in read_jsonl(tmp_path / "out" / "train.jsonl"):  # validation text is not even a distractor
        shown = re.findall(r"\n\[\d+\] \(([^ )]+)", r["conversations"][-2]["content"])
        assert not set(shown) & val_sources
    qa = read_jsonl(tmp_path / "out" / "validation_qa.jsonl")
    assert len(qa) == report.validation and {q["source"] for q in qa if q["answerable"]} <= val_sources
    for item in qa:
        assert set(item) >= {"id", "question", "answers", "source", "evidence", "answerable", "lang"}
        if item["answerable"]:
            assert item["answers"][0] in item["evidence"]
        else:  # a refusal pair: no answer among the sources it was trained with
            assert item["answers"] == [] and len(item["context"]) >= 2


def test_split_sources_edge_cases():
    assert split_sources(["a.md"], 0.2) == set()
    assert len(split_sources(["a.md", "b.md"], 0.2)) == 1
    assert split_sources([f"{i}.md" for i in range(20)], 0.2) == split_sources(
        [f"{i}.md" for i in range(20)], 0.2
    )


def test_alpaca_output(corpus, cfg, tmp_path):
    store = build(corpus, cfg)
    report = run(cfg, store, tmp_path, fmt="alpaca")
    rows = read_jsonl(tmp_path / "out" / "train.jsonl") + read_jsonl(tmp_path / "out" / "validation.jsonl")
    assert len(rows) == report.train + report.validation > 0
    for r in rows:
        assert (
            set(r) == {"instruction", "input", "output", "system", "departments", "collection"}
            and r["output"]
        )


def test_bad_arguments(corpus, cfg, tmp_path):
    store = build(corpus, cfg)
    with pytest.raises(ConfigError, match="format"):
        run(cfg, store, tmp_path, fmt="csv")
    with pytest.raises(ConfigError, match="generator"):
        run(cfg, store, tmp_path, None, use_llm=True)


class InterruptingGenerator(FakeGenerator):
    """Stops the run (as Ctrl-C would) on its second call."""

    def stream(self, messages, *, max_new_tokens=None):
        if len(self.calls) == 1:
            raise KeyboardInterrupt
        yield from super().stream(messages, max_new_tokens=max_new_tokens)


def test_interrupted_run_keeps_finished_chunks(corpus, cfg, tmp_path):
    store = build(corpus, cfg)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, store, tmp_path, InterruptingGenerator(), per_chunk=1)
    state = json.loads((Path(cfg.kb_dir) / "synth" / "state.json").read_text(encoding="utf-8"))
    # Chunks both generators finished before the interruption (the interrupted one has "rules" only).
    done = sum(sorted(e["generators"]) == ["llm", "rules"] for e in state["chunks"].values())
    assert 1 <= done < len(store.iter_chunks())
    report = run(cfg, store, tmp_path, FakeGenerator(), per_chunk=1)
    assert report.chunks_new == len(store.iter_chunks()) - done


def test_number_answer_is_the_question_clause_with_the_fact():
    from ingest.synth.facts import zh_number_questions

    got = {
        c.gold: (c.question, c.answer)
        for c in zh_number_questions(
            "结合行业形势，管理层提出2025年度营业收入目标为6.8亿元，净利润率目标不低于9%。"
        )
    }
    assert got["9%"] == ("净利润率目标不低于多少？", "净利润率目标不低于9%。")
    assert got["6.8亿元"] == (
        "管理层提出2025年度营业收入目标为多少亿元？",
        "管理层提出2025年度营业收入目标为6.8亿元。",
    )
    # A condition keeps what follows it, in the answer as in the question.
    (c,) = zh_number_questions("超过6小时的，可改乘飞机。")
    assert (c.question, c.answer) == ("超过几小时的，可改乘飞机？", "超过6小时的，可改乘飞机。")
