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
