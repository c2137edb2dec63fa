import pytest

from kb.eval import metrics as M
from kb.eval.runner import summarize


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


def test_summarize_pinned():
    rows = [
        {"answerable": True, "rank": 1, "refused": False, "contains": True, "f1": 1.0, "seconds": 1.0},
        {"answerable": True, "rank": None, "refused": True, "contains": False, "f1": 0.0, "seconds": 2.0},
        {"answerable": False, "rank": None, "refused": True, "contains": False, "f1": 0.0, "seconds": 3.0},
        {"answerable": False, "rank": None, "refused": False, "contains": False, "f1": 0.0, "seconds": 4.0},
    ]
    s = summarize(rows)
    assert s["n"] == 4 and s["n_answerable"] == 2
    assert s["retrieval"] == {"hit@1": 0.5, "hit@5": 0.5, "mrr@10": 0.5}
    assert s["answer"] == {"contains": 0.5, "f1": 0.5}
    assert s["refusal"] == {"precision": 0.5, "recall": 0.5}
    assert s["latency_s"] == {"p50": 2.0, "p95": 4.0}
