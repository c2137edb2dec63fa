import pytest

from kb.grounding import bigrams, novel_support, same_language, unknown_terms


def test_bigrams_ignore_citations_punctuation_and_case():
    assert bigrams("Ab [1]，c") == {"ab", "bc"}


def test_novel_support_pinned():
    # answer bigrams: 有1 10 0天 (novel, not in the question) + 年假 假有 (in the question)
    share, n = novel_support("年假有10天", "年假有几天", ["入职满一年享10天年假"])
    assert n == 3 and share == pytest.approx(2 / 3)  # "10" and "0天" occur, "有1" does not
    assert novel_support("年假", "年假有几天", ["x"]) == (0.0, 0)


def test_unknown_terms():
    vocab = {"年假": 0, "员工": 1, "vpn": 2}
    assert unknown_terms(["员工", "哺乳", "年假", "几", "#年假", "what", "battery", "10"], vocab) == [
        "哺乳",
        "battery",
    ]


def test_same_language():
    assert same_language("年假几天", ["年假10天"]) and not same_language("How many days", ["年假10天"])
