from kb.answer import Answerer, cited_numbers, resolve_citations
from kb.config import load_config
from kb.generate.fake import FakeGenerator
from kb.prompt import REFUSAL, language
from kb.schema import Chunk, Hit


def _hits() -> list[Hit]:
    texts = ["员工入职满一年后享有10天带薪年假。", "Call the IT helpdesk at extension 8021."]
    return [
        Hit(Chunk(f"c{i}", t, f"doc{i}.md", i + 1, ["H"], 0, len(t), "h"), 1.0 / (i + 1), dense=0.8)
        for i, t in enumerate(texts)
    ]


def test_cited_numbers():
    assert cited_numbers("a [2] b 【1】 c [1, 2] [9]", 2) == [2, 1]


def test_citation_fallback_uses_overlap():
    text, cits = resolve_citations("extension 8021", _hits())
    assert text.endswith("[2]") and cits[0].source == "doc1.md" and cits[0].page == 2


class _Retr:
    def __init__(self, hits):
        self.hits = hits

    def search(self, q, k=None, user=None):
        return self.hits[:k]


def test_answer_with_citation():
    gen = FakeGenerator(replies=["有10天带薪年假 [1]。"], yes=[0.9])
    ans = Answerer(_Retr(_hits()), gen, load_config(data={})).answer("年假几天？")
    assert not ans.refused and ans.citations[0].chunk_id == "c0" and "10天" in ans.answer


def test_refuses_when_support_is_low_without_generating():
    gen = FakeGenerator(replies=["不该生成"], yes=[0.1])
    cfg = load_config(data={"answer": {"support_check": True}})
    ans = Answerer(_Retr(_hits()), gen, cfg).answer("公司有健身房吗？")
    assert ans.refused and ans.answer == REFUSAL["zh"] and gen.replies == ["不该生成"]


def test_refuses_when_model_says_not_in_sources():
    gen = FakeGenerator(replies=["The sources do not contain this information."], yes=[0.9])
    ans = Answerer(_Retr(_hits()), gen, load_config(data={})).answer("Is there a gym?")
    assert ans.refused and ans.answer == REFUSAL["en"] and ans.citations == []


def test_refuses_with_no_hits():
    ans = Answerer(_Retr([]), FakeGenerator(replies=["x"]), load_config(data={})).answer("随便问问")
    assert ans.refused


def test_language():
    assert language("年假有几天？") == "zh" and language("How many days of leave?") == "en"
    assert language("VPN 密码多久过期") == "zh"


def test_refuses_answer_that_only_restates_the_question():
    gen = FakeGenerator(replies=["员工入职满一年后享有带薪年假。"])
    ans = Answerer(_Retr(_hits()), gen, load_config(data={})).answer("员工入职满一年后享有带薪年假吗？")
    assert ans.refused and "restates" in ans.why


def test_refuses_answer_with_facts_not_in_sources():
    gen = FakeGenerator(replies=["哺乳期员工每天有两小时哺乳时间，由部门经理批准。"])
    ans = Answerer(_Retr(_hits()), gen, load_config(data={})).answer("哺乳假有多长时间？")
    assert ans.refused and "found in the sources" in ans.why


def test_degenerate_answer_refused():
    ans = Answerer(_Retr(_hits()), FakeGenerator(replies=["[1]"]), load_config(data={})).answer("年假几天？")
    assert ans.refused and ans.why == "empty answer"


def test_fit_sources_keeps_whole_blocks_and_counts_hits_not_text():
    from kb.prompt import fit_sources, format_sources

    hits = _hits()
    hits[0].chunk.text = "表格\n\n[注] 见下文"  # text that looks like a block boundary must not count as one
    assert fit_sources(hits, 10) == hits[:1]  # the first always fits
    assert fit_sources(hits, 10_000) == hits
    # Counting separators in the text (the old way) would have said 3 sources for these 2.
    assert format_sources(hits, 10_000).count("\n\n[") + 1 == 3


def test_quotes_the_source_sentence_when_a_quantity_answer_is_refused():
    """The model copies the 迟到 rule for a 补卡 question; the grounding check refuses it, and the
    sentence that names 忘记打卡 and holds "N次" is quoted with its citation instead."""
    from types import SimpleNamespace

    texts = ["当月迟到累计达到3次的，取消当月全勤奖（300元）。", "- 忘记打卡的，每月补卡次数不得超过3次。"]
    hits = [
        Hit(Chunk(f"c{i}", t, "hr/attendance.md", None, ["考勤"], 0, len(t), "h"), 1.0)
        for i, t in enumerate(texts)
    ]
    retr = _Retr(hits)
    retr.store = SimpleNamespace(keyword=SimpleNamespace(idf=lambda t: 1.0))
    question = "忘记打卡每个月最多可以补几次？"
    wrong = "当月迟到累计达到3次的，取消当月全勤奖。"
    ans = Answerer(retr, FakeGenerator(replies=[wrong]), load_config(data={})).answer(question)
    assert not ans.refused and "quoted the source" in ans.why
    assert ans.answer == f"{texts[1][2:]} [2]" and [c.chunk_id for c in ans.citations] == ["c1"]
    off = load_config(data={"answer": {"quote_min_alignment": 0}})
    ans = Answerer(retr, FakeGenerator(replies=[wrong]), off).answer(question)
    assert ans.refused and "about something else" in ans.why


def test_check_figures_refuses_a_number_no_source_holds():
    on = load_config(data={"answer": {"check_figures": True}})
    made_up = FakeGenerator(replies=["员工入职满一年后享有15天带薪年假。 [1]"])
    ans = Answerer(_Retr(_hits()), made_up, on).answer("年假有几天？")
    assert ans.refused and ans.why == "15: in no source"
    right = FakeGenerator(replies=["员工入职满一年后享有10天带薪年假。 [1]"])
    assert not Answerer(_Retr(_hits()), right, on).answer("年假有几天？").refused
    # off (the default): the bigram support check alone lets the made-up figure through
    made_up = FakeGenerator(replies=["员工入职满一年后享有15天带薪年假。 [1]"])
    assert not Answerer(_Retr(_hits()), made_up, load_config(data={})).answer("年假有几天？").refused
