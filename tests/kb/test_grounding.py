import pytest

from kb.grounding import bigrams, novel_support


def test_bigrams_ignore_citations_punctuation_and_case():
    assert bigrams("Ab [1]，c") == {"ab", "bc"}


def test_novel_support_pinned():
    # answer bigrams: 有1 10 0天 (novel, not in the question) + 年假 假有 (in the question)
    share, n = novel_support("年假有10天", "年假有几天", ["入职满一年享10天年假"])
    assert n == 3 and share == pytest.approx(2 / 3)  # "10" and "0天" occur, "有1" does not
    assert novel_support("年假", "年假有几天", ["x"]) == (0.0, 0)


def test_alignment_ignores_question_words_and_weights_by_idf():
    from kb.grounding import alignment, supporting_window
    from kb.keyword import tokenize

    assert (
        alignment(tokenize("公司是哪一天成立的？", search=False), "- 成立时间：2014年6月18日", lambda t: 1.0)
        == 1.0
    )
    window, _ = supporting_window(
        "保额为100万元人民币。",
        "商业医疗保险保额是多少？",
        ["员工出差期间，公司为其购买意外保险，保额为100万元人民币。"],
    )
    assert "意外保险" in window
    idf = {"商业": 3.0, "医疗": 2.0, "保险": 1.0, "保额": 1.0}.get
    score = alignment(["商业", "医疗", "保险", "保额"], window, lambda t: idf(t, 1.0))
    assert score == pytest.approx(2 / 7)  # only 保险 and 保额 of 3+2+1+1 occur


def test_alignment_gives_partial_credit_for_words_cut_differently():
    from kb.grounding import alignment

    # jieba keeps 发工资 whole; the handbook says 发放上月工资: one of its two bigrams (工资) occurs.
    window = "公司实行月薪制，每月10日发放上月工资。"
    assert alignment(["发工资"], window, lambda t: 1.0) == pytest.approx(0.5)
    # English plural against singular: 7 of the 8 bigrams of "referrals" occur in "referral".
    assert alignment(["referrals"], "Send each referral to HR.", lambda t: 1.0) == pytest.approx(7 / 8)
    # Whole words still count in full, and a word with no shared bigram counts nothing.
    idf = {"年假": 2.0, "结转": 1.0}.get
    assert alignment(["年假", "结转"], "年假可顺延", lambda t: idf(t, 1.0)) == pytest.approx(2 / 3)


def test_short_answer_with_one_new_bigram_is_an_answer():
    from kb.config import AnswerConfig

    share, n = novel_support("3天", "新员工入职培训持续几天？", ["所有新员工须参加为期3天的集中培训"])
    assert (share, n) == (1.0, 1)
    assert n >= AnswerConfig().min_novel  # the default keeps it (it was refused at min_novel=2)


def test_a_percentage_is_a_fact_not_punctuation():
    from kb.grounding import clean_text

    # A LoRA model tuned on short replies answered "8%。 [2]"; cleaned to "8" it was refused as empty.
    assert clean_text("8%。 [2]") == "8%"
    assert novel_support("8%。", "2025年人员编制最多能增长多少？", ["人员编制增长上限为8%"]) == (1.0, 1)


def test_window_carries_its_source_heading_path():
    from kb.grounding import alignment, supporting_window

    # The subject (青禾云 V3.2) is named only in the heading of the release note the number comes from.
    question = "青禾云V3.2每个租户最多能接多少台设备？"
    sources = [
        "单个租户可接入的设备数量上限由5万台提升至20万台。",
        "QH-G300 单台网关最多可接入 128 台下位设备。",
    ]
    heads = ["青禾云 V3.2 发布说明 > 新功能", "QH-G300 用户手册 > 规格"]
    bare, _ = supporting_window("20万台", question, sources)
    window, _ = supporting_window("20万台", question, sources, heads)
    assert window.startswith("青禾云 V3.2 发布说明") and "20万台" in window and "128" not in window
    words = ["青禾云", "V3.2", "租户", "设备"]
    assert alignment(words, window, lambda t: 1.0) == 1.0
    assert alignment(words, bare, lambda t: 1.0) == pytest.approx(0.5)  # 租户 and 设备 only


def test_file_name_words_count_whole_and_without_numbers():
    from kb.grounding import alignment, name_tokens, supporting_window

    names = name_tokens("product/qh_g300_user_manual.pdf")
    assert names == {"qh", "g300", "user", "manual"}
    assert name_tokens("general/meeting_minutes_2024-03-12.txt") == {"meeting", "minutes"}
    # The G300 manual's spec table never repeats "G300": the file name says what it is about.
    window = "项目 规格 工作温度 -40℃ ~ 75℃"
    assert alignment(["g300", "工作温度"], window, lambda t: 1.0) == pytest.approx(0.5)
    assert alignment(["g300", "工作温度"], window, lambda t: 1.0, names) == 1.0
    # Whole words only: no bigram credit from a file name ("ma" of "manual" is not "mac").
    assert alignment(["mac"], "nothing here", lambda t: 1.0, names) == 0.0
    text, n = supporting_window("-40℃ ~ 75℃", "G300网关的工作温度范围是多少？", ["无关内容。", window])
    assert n == 1 and "工作温度" in text
    assert supporting_window("完全无关", "问题？", ["abc"]) == ("", -1)


def test_figures_read_digits_thousands_and_chinese_numerals():
    from kb.grounding import figures

    assert figures("年假三十天，两千五百元，十二个月，一〇八号 [3]") == {"30", "2500", "12", "108"}
    assert figures("出货1,000台，融资1.5亿，ＱＨ－Ｓ２０") == {"1000", "1.5", "20"}  # full-width digits too
    assert figures("一万二千人") == {"12000"} and figures("万无一失") == {"1"}  # a lone 万 is no number


def test_unsupported_figures_names_made_up_numbers_only():
    from kb.grounding import unsupported_figures

    sources = ["QH-S20 无线温湿度传感器：采用LoRa无线通信。", "报销须在出差结束后三十天内提交。"]
    made_up = "QH-S20无线温湿度传感器的电池能用约1000小时。 [1]"
    assert unsupported_figures(made_up, "QH-S20的电池能用多久？", sources) == ["1000"]
    assert unsupported_figures("须在30天内提交 [2]", "报销期限是多久？", sources) == []  # 三十 = 30
    # a figure the question gave is the employee's, not the model's; citation marks are not figures
    assert unsupported_figures("2024年的报销须在30天内提交 [2]", "2024年报销期限？", sources) == []
