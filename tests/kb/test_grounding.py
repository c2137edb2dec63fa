import pytest

from kb.grounding import bigrams, novel_support


def test_bigrams_ignore_citations_punctuation_and_case():
    assert bigrams("Ab [1]，c") == {"ab", "bc"}


def test_novel_support_pinned():
    # answer bigrams: 有1 10 0天 (novel, not in the question) + 年假 假有 (in the question)
    share, n = novel_support("年假有10天", "年假有几天", ["入职满一年享10天年假"])
    assert n == 3 and share == pytest.approx(2 / 3)  # "10" and "0天" occur, "有1" does not
    assert novel_support("年假", "年假有几天", ["x"]) == (0.0, 0)
