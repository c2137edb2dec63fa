"""Quoting the source sentence for quantity questions whose generated answer was refused (kb/fallback.py)."""

from __future__ import annotations

import pytest

from kb.fallback import answer_pattern, quantity_sentence

SOURCES = [
    "2.3 上班时间为9:00。当月迟到累计达到3次的，取消当月全勤奖（300元）。\n"
    "2.4 忘记打卡的，员工应在3个工作日内提交补卡申请，每月补卡次数不得超过3次。",
    "4.2 员工薪酬由基本工资、岗位津贴、绩效奖金和年终奖四部分组成。年终奖于次年1月发放。",
]
HEADS = ["员工考勤管理办法 > 第二章 工作时间与考勤", "薪酬福利制度 > 第四章 薪酬"]


def toks(*words: str) -> list[str]:
    return list(words)


@pytest.mark.parametrize(
    "question,sentence,ok",
    [
        ("忘记打卡每个月最多可以补几次？", "每月补卡次数不得超过3次。", True),
        ("忘记打卡每个月最多可以补几次？", "应在3个工作日内提交", False),  # a number, but not N次
        ("年终奖一般发几个月的工资？", "年终奖于次年1月发放。", False),  # 1月 is a date, not N个月
        ("年终奖一般发几个月的工资？", "年终奖为2个月工资。", True),
        ("西安办事处有多少名员工？", "搬迁至创新大厦11层", False),
        ("西安办事处有多少名员工？", "西安办事处共有员工23人", True),
        ("加班打车一次最多报销多少钱？", "单次不超过100元", True),
        ("加班打车一次最多报销多少钱？", "当日加班至21:00以后离开公司", False),
        ("P2故障要求多长时间内解决？", "P2 高 30分钟 1个工作日", True),
        ("付费软件一年费用超过多少需要财务审批？", "年度费用超过5000元的付费软件", True),
        ("How many days of annual leave do new hires get?", "New hires get 10 days of annual leave.", True),
        ("How many days of annual leave do new hires get?", "Leave is approved by the manager.", False),
    ],
)
def test_answer_pattern_checks_the_kind_of_quantity(question, sentence, ok):
    pattern = answer_pattern(question)
    assert pattern is not None
    assert bool(pattern.search(sentence)) is ok


@pytest.mark.parametrize("question", ["QH-G300网关支持PoE供电吗？", "Who is the CISO?", "VPN怎么连接？"])
def test_no_fallback_for_questions_that_ask_no_quantity(question):
    assert answer_pattern(question) is None


def test_quotes_the_aligned_sentence_holding_the_quantity():
    idf = {"忘记": 4.0, "打卡": 4.0}.get
    found = quantity_sentence(
        "忘记打卡每个月最多可以补几次？", toks("忘记", "打卡"), SOURCES, HEADS, lambda t: idf(t, 1.0), 0.75
    )
    # Not the 迟到 sentence (also N次, but not about 打卡), and only the sentence, not its chunk.
    assert found == (0, "2.4 忘记打卡的，员工应在3个工作日内提交补卡申请，每月补卡次数不得超过3次。")


def test_keeps_the_refusal_when_no_sentence_has_the_quantity_asked_for():
    # Every subject word is in the salary sentence (alignment 1.0), but it holds no "N个月".
    args = (toks("年终奖", "工资"), SOURCES, HEADS, lambda t: 1.0, 0.75)
    assert quantity_sentence("年终奖一般发几个月的工资？", *args) is None


def test_threshold_applies():
    # 2.4 holds "N次" and 打卡 but not 出差: alignment 0.5, quoted at a threshold of 0.5, not at 0.75.
    idf = lambda t: 1.0  # noqa: E731
    q = toks("出差", "打卡")
    assert quantity_sentence("出差时打卡每月最多补几次？", q, SOURCES, HEADS, idf, 0.75) is None
    found = quantity_sentence("出差时打卡每月最多补几次？", q, SOURCES, HEADS, idf, 0.5)
    assert found == (0, SOURCES[0].split("\n")[1])
