import pytest

from kb.eval import metrics as M
from kb.eval.runner import flatten, summarize


def test_norm_and_contains():
    assert M.norm("  “Ext. 8021” ") == '"ext.8021"'
    assert M.contains_any("年假为 １０ 天。", ["10天"])
    assert not M.contains_any("年假为5天", ["10天"])


def test_token_f1_pinned():
    assert M.token_f1("年假10天", "10天") == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert M.token_f1("call extension 8021", "extension 8021") == pytest.approx(0.8)
    assert M.token_f1("", "x") == 0.0


def test_ranks_and_percentiles():
    hits = [("it/vpn.md", "no"), ("hr/leave.pdf", "年假 10 天"), ("x/leave.pdf", "10天")]
    assert M.first_relevant_rank(hits, "leave.pdf", ["10天"]) == 2
    ranks = [1, 2, None, 7, 12]
    assert M.hit_at(ranks, 1) == 0.2 and M.hit_at(ranks, 5) == 0.4
    assert M.mrr_at(ranks, 10) == pytest.approx((1 + 0.5 + 1 / 7) / 5)
    assert M.percentile([1, 2, 3, 4], 50) == 2 and M.percentile([1, 2, 3, 4], 95) == 4


def test_rouge_l_pinned():
    # LCS respects order where token F1 does not: "the on" is the longest common subsequence.
    assert M.lcs_length(["mat", "the", "on", "cat"], ["the", "cat", "on", "mat"]) == 2
    assert M.rouge_l("mat the on cat", "the cat on mat") == pytest.approx(0.5)
    assert M.token_f1("mat the on cat", "the cat on mat") == pytest.approx(1.0)
    # Chinese by character: LCS("年假是十天", "十天年假") = 2 → P 2/5, R 2/4.
    assert M.rouge_l("年假是十天", "十天年假") == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    # "10" is one token: 年 假 10 天 against 10 天 → LCS 2, P 2/4, R 1.
    assert M.best_rouge_l("年假10天", ["5天", "10天"]) == pytest.approx(2 / 3)
    assert M.rouge_l("", "x") == 0.0 and M.best_rouge_l("x", []) == 0.0


def test_citation_correctness_pinned():
    cited = ["年假为 10 天。", "病假5天，需医院证明"]
    assert M.citation_correctness(cited, ["10天"]) == 0.5
    assert M.citation_correctness(cited, ["10天"], evidence="病假5天") == 1.0
    assert M.citation_correctness(cited, [], evidence="") == 0.0
    assert M.citation_correctness([], ["10天"]) is None


def test_faithfulness_lexical_pinned():
    chunk = "员工入职满一年后享有10天带薪年假。"
    # Sentence 1 bigrams 员工 工有 有1 10 0天 天年 年假: 5 of 7 in the chunk (≥ 0.5); sentence 2: none;
    # "[1]" carries no text and is skipped.
    answer = "员工有10天年假。食堂七点开门。 [1]"
    assert M.sentence_support("员工有10天年假。", chunk) == pytest.approx(5 / 7)
    assert M.faithfulness(answer, [chunk]) == 0.5
    assert M.faithfulness(answer, ["食堂七点开门", chunk]) == 1.0  # any one cited chunk may support it
    assert M.faithfulness(answer, []) is None and M.faithfulness("[1]", [chunk]) is None


def test_faithfulness_judge_mode():
    from kb.eval.judge import Judge
    from kb.generate.fake import FakeGenerator

    class Recording(FakeGenerator):
        def yes_probability(self, messages):
            self.calls.append(messages)
            return super().yes_probability(messages)

    gen = Recording(yes=[0.9, 0.2])
    answer = "员工有10天年假。食堂七点开门。"
    assert M.faithfulness(answer, ["员工入职满一年后享有10天带薪年假。"], Judge(gen)) == 0.5
    first = gen.calls[0][0]["content"]
    assert "陈述：员工有10天年假。" in first and "[1] 员工入职满一年后享有10天带薪年假。" in first
    with pytest.raises(Exception, match="cannot score"):
        M.faithfulness(answer, ["x"], Judge(FakeGenerator()))


def test_bootstrap_ci_seeded_and_sane():
    values = [1.0] * 30 + [0.0] * 70

    def mean(xs):
        return sum(xs) / len(xs)

    lo, hi = M.bootstrap_ci(values, mean, resamples=500, seed=3)
    assert (lo, hi) == M.bootstrap_ci(values, mean, resamples=500, seed=3)
    assert 0.15 < lo < 0.3 < hi < 0.45  # binomial: 0.3 ± 1.96·0.046
    wide = M.bootstrap_ci(values[::10], mean, resamples=500, seed=3)
    assert wide[1] - wide[0] > hi - lo  # fewer items, wider interval
    assert M.bootstrap_ci([0.5] * 5, mean) == (0.5, 0.5)
    assert M.bootstrap_ci([], mean) is None


def test_summarize_pinned():
    def row(answerable, rank, refused, contains, f1, rouge_l, citation, faithfulness, seconds):
        return dict(
            answerable=answerable,
            rank=rank,
            refused=refused,
            contains=contains,
            f1=f1,
            rouge_l=rouge_l,
            citation=citation,
            faithfulness=faithfulness,
            seconds=seconds,
        )

    rows = [
        row(True, 1, False, True, 1.0, 0.5, 1.0, 1.0, 1.0),
        row(True, None, True, False, 0.0, 0.0, None, None, 2.0),
        row(False, None, True, False, 0.0, 0.0, None, None, 3.0),
        row(False, None, False, False, 0.0, 0.0, 0.0, 0.5, 4.0),
    ]
    s = summarize(rows)
    assert s["n"] == 4 and s["n_answerable"] == 2
    assert s["retrieval"] == {"hit@1": 0.5, "hit@5": 0.5, "mrr@10": 0.5}
    assert s["answer"] == {"contains": 0.5, "f1": 0.5, "rouge_l": 0.25}
    # citation: answerable items that cited something (row 1); faithfulness: every answered item (1, 4).
    assert s["grounding"] == {"citation": 1.0, "faithfulness": 0.75}
    assert s["refusal"] == {"precision": 0.5, "recall": 0.5}
    assert s["latency_s"] == {"p50": 2.0, "p95": 4.0}
    assert summarize(rows, retrieval=False)["grounding"] is None
    flat = flatten(s)
    assert flat["answer.rouge_l"] == 0.25 and flat["retrieval.hit@1"] == 0.5 and flat["latency_s.p95"] == 4.0


def test_citation_marks_are_not_answer_tokens():
    from kb.eval.metrics import best_f1, best_rouge_l, contains_any

    # "[1]" would otherwise match a gold "1" and count as a token of the answer.
    assert not contains_any("结转天数最多5天 [1]", ["1"])
    assert (
        best_f1("最多5天 [1]", ["5天"])
        == best_f1("最多5天", ["5天"])
        == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    )
    assert best_rouge_l("最多5天【2】", ["5天"]) == best_rouge_l("最多5天", ["5天"])
