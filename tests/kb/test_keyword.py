import math
import random

import numpy as np
import pytest

from kb.keyword import BM25Index, tokenize


def test_tokenize_mixed():
    toks = tokenize("员工年假10天, VPN server vpn.example-corp.cn")
    assert (
        "员工" in toks
        and "#年假" in toks
        and "10" in toks
        and "vpn" in toks
        and "vpn.example-corp.cn" in toks
    )


def test_bm25_ranks_and_round_trips(tmp_path):
    docs = ["员工享有带薪年假十天", "病假需要医院证明", "VPN passwords expire every 90 days"]
    idx = BM25Index.build([10, 20, 30], [tokenize(d) for d in docs])
    assert idx.search("年假有几天", 3)[0][0] == 10
    assert idx.search("password expire", 3)[0][0] == 30
    assert idx.search("完全无关的词语xyz", 3) == []
    idx.save(tmp_path)
    again = BM25Index.load(tmp_path)
    assert again.search("病假证明", 2) == idx.search("病假证明", 2)


def test_bm25_pinned_score():
    # Two docs, query term in one of them once: idf = ln(1 + (2-1+0.5)/(1+0.5)) = ln 2,
    # tf part = 1*(1.2+1)/(1+1.2*(1-0.75+0.75*1/1)) = 1 → score = ln 2.
    idx = BM25Index.build([1, 2], [["a"], ["b"]])
    ((row, score),) = idx.search("a", 2)
    assert row == 1 and abs(score - 0.693147) < 1e-5


def _reference_bm25(
    docs: list[list[str]], query_terms: set[str], k1: float = 1.2, b: float = 0.75
) -> list[float]:
    """Okapi BM25 written out term by term, as the index documented it before counts were stored."""
    n = len(docs)
    avgdl = sum(map(len, docs)) / n
    out = []
    for d in docs:
        s = 0.0
        for t in query_terms:
            tf = d.count(t)
            if tf:
                df = sum(t in e for e in docs)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                s += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return out


def _random_docs(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)]
    return [[rng.choice(words[: rng.randint(5, 40)]) for _ in range(rng.randint(1, 30))] for _ in range(n)]


def test_bm25_scores_equal_reference_formula():
    docs = _random_docs(60, seed=3)
    idx = BM25Index.build(list(range(100, 160)), docs)
    for query in ["w1 w7", "w3", "w0 w2 w2 w39", "w5 nothing"]:
        ref = _reference_bm25(docs, set(query.split()))
        got = idx.search(query, 60)
        assert len(got) == sum(s > 0 for s in ref)
        for row, score in got:
            assert score == pytest.approx(ref[row - 100], rel=1e-5)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)


def test_updated_index_equals_a_fresh_build(tmp_path):
    docs = _random_docs(50, seed=5)
    first = BM25Index.build(list(range(1, 41)), docs[:40])
    removed = [3, 4, 17, 40]
    new_rows, new_docs = list(range(41, 51)), [d + ["fresh"] for d in docs[40:]]
    new_docs[0] = new_docs[0] + ["brandnew"]  # a term the first index never saw
    updated = first.updated(np.array(removed), new_rows, new_docs)
    kept = [(r, d) for r, d in zip(range(1, 41), docs[:40], strict=True) if r not in removed]
    fresh = BM25Index.build([r for r, _ in kept] + new_rows, [d for _, d in kept] + new_docs)
    updated.save(tmp_path)
    again = BM25Index.load(tmp_path)
    for query in ["w1 w7", "fresh w3", "brandnew", "w0 w2"]:
        want = fresh.search(query, 50)
        for idx in (updated, again):
            got = idx.search(query, 50)
            assert [r for r, _ in got] == [r for r, _ in want]
            assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-6)
    assert not {r for r, _ in updated.search("w1 w2 w3 w4 w5", 50)} & set(removed)
    assert updated.idf("fresh") == pytest.approx(fresh.idf("fresh"))
