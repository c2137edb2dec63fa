"""Text repairs, on strings."""

from __future__ import annotations

import pytest

from ingest.clean import (
    dehyphenate,
    fix_cjk_spaces,
    is_page_number,
    join_broken_urls,
    join_cjk_lines,
    mark_headings,
    normalize_text,
    repair_pdf_page,
    strip_page_furniture,
)


@pytest.mark.parametrize(
    ("raw", "fixed"),
    [
        ("公 司 的 年 假", "公司的年假"),
        ("员 工 出 差 须 提 前 3 个 工 作 日 申 请 。", "员工出差须提前3个工作日申请。"),
        ("标 准 的 1 . 5 倍 执 行 。", "标准的1.5倍执行。"),
        ('须 在 " 青 禾 费 控 " 中 登 记', '须在"青禾费控"中登记'),
        # Real separators stay: between CJK words, table columns, Latin words, CJK and Latin.
        ("第一章 总则", "第一章 总则"),
        ("婚假 13天 全薪 结婚证", "婚假 13天 全薪 结婚证"),
        ("使用 VPN 客户端 QH-Connect 连接", "使用 VPN 客户端 QH-Connect 连接"),
        ("the quick brown fox", "the quick brown fox"),
        ("张 三", "张 三"),  # too short a run to call it letter-spacing
        ("费用 。", "费用。"),  # space before Chinese closing punctuation
    ],
)
def test_fix_cjk_spaces(raw: str, fixed: str) -> None:
    assert fix_cjk_spaces(raw) == fixed


def test_fix_cjk_spaces_short_tail_of_letter_spaced_paragraph() -> None:
    text = "境 外 出 差 补 贴 标 准 为 每 人 每 天 60 美\n元 。"
    assert fix_cjk_spaces(text) == "境外出差补贴标准为每人每天60美\n元。"


@pytest.mark.parametrize(
    ("raw", "fixed"),
    [
        ("“年假”和‘病假’", "\"年假\"和'病假'"),
        ("第一章\u3000总则", "第一章 总则"),
        ("ＰＤＦ版本２", "PDF版本2"),
        ("a\r\nb\rc", "a\nb\nc"),
        ("x\x00y\x07z", "xyz"),
        ("one  \ntwo\n\n\n\nthree", "one\ntwo\n\nthree"),
        ("零宽\u200b空格", "零宽空格"),
        ("全角标点，。！？保留", "全角标点，。！？保留"),
    ],
)
def test_normalize_text(raw: str, fixed: str) -> None:
    assert normalize_text(raw) == fixed


def test_dehyphenate() -> None:
    assert dehyphenate("the infor-\nmation is here") == "the information is here"
    assert dehyphenate("well-known") == "well-known"
    assert dehyphenate("Jean-\nPaul") == "Jean-\nPaul"  # capitalised continuation: a real hyphen


def test_join_broken_urls() -> None:
    assert join_broken_urls("邮箱（security@qinghe-tech.\ncom）") == "邮箱（security@qinghe-tech.com）"
    assert join_broken_urls("地址为 vpn.\nqinghe-tech.com，登录") == "地址为 vpn.qinghe-tech.com，登录"
    assert join_broken_urls("for example e.g.\nthe end") == "for example e.g.\nthe end"


def test_join_cjk_lines_joins_mid_sentence_breaks() -> None:
    text = (
        "公司员工每年享有带薪年假，具体天数根据员工的累计工龄确定，工龄满一年不满十\n"
        "年的，年假五天；满十年不满二十年的，年假十天；满二十年的，年假十五天。\n"
        "员工请假须通过系统提前提交申请，经部门负责人审批后方可休假，未经审批擅自\n"
        "离岗的按旷工处理。"
    )
    assert join_cjk_lines(text) == (
        "公司员工每年享有带薪年假，具体天数根据员工的累计工龄确定，工龄满一年不满十"
        "年的，年假五天；满十年不满二十年的，年假十天；满二十年的，年假十五天。\n"
        "员工请假须通过系统提前提交申请，经部门负责人审批后方可休假，未经审批擅自"
        "离岗的按旷工处理。"
    )


def test_join_cjk_lines_keeps_headings_lists_and_tables() -> None:
    text = (
        "第一章 总则\n"
        "本制度适用于公司全体员工，包括总部、研发中心及各地办事处的正式员工和试用\n"
        "期员工。具体假期标准如下：\n"
        "假期类型 天数 薪资\n"
        "年假 5天 全薪\n"
        "● 婚假须在领取结婚证之日起一年内一次性休完，不可拆分使用，逾期视为自动放\n"
        "弃。\n"
        "附则\n"
        "第二条 本制度自发布之日起施行。"
    )
    lines = join_cjk_lines(text).split("\n")
    assert lines[0] == "第一章 总则"
    assert lines[1].endswith("试用期员工。具体假期标准如下：")
    assert "假期类型 天数 薪资" in lines and "年假 5天 全薪" in lines
    assert any(line.endswith("逾期视为自动放弃。") for line in lines)
    assert "附则" in lines and lines[-1] == "第二条 本制度自发布之日起施行。"


def test_join_cjk_lines_leaves_english_alone() -> None:
    text = "This policy applies to all employees of the company and\nits subsidiaries."
    assert join_cjk_lines(text) == text


@pytest.mark.parametrize(
    "line",
    [
        "第 3 页",
        "第3页 共7页",
        "第 3 页 / 共 7 页",
        "Page 3 of 7",
        "page 12",
        "- 3 -",
        "— 12 —",
        "3",
        "3 / 7",
    ],
)
def test_page_number_lines(line: str) -> None:
    assert is_page_number(line)


@pytest.mark.parametrize("line", ["2024", "第三条 附则", "3.5 天", "Page layout", "共享文件夹"])
def test_not_page_number_lines(line: str) -> None:
    assert not is_page_number(line)


def test_strip_page_furniture_removes_running_header_and_footer() -> None:
    pages = [
        f"ACME Corp | Employee Handbook\nConfidential\nBody text of page {n} starts here.\n"
        f"More text {n}.\nACME internal use only\nPage {n} of 4"
        for n in range(1, 5)
    ]
    pages[2] = pages[2].replace("Confidential\n", "")  # a header line missing on one page
    out = strip_page_furniture(pages)
    for n, page in enumerate(out, start=1):
        assert page.startswith(f"Body text of page {n}")
        assert page.endswith(f"More text {n}.")
        assert "ACME" not in page and "Page" not in page


def test_strip_page_furniture_keeps_body_lines_and_short_documents() -> None:
    pages = ["公司手册\n第一章 总则\n内容一。\n第 1 页", "公司手册\n第二章 考勤\n内容二。\n第 2 页"]
    # Two pages: too few to call a repeated line furniture, but page numbers still go.
    assert strip_page_furniture(pages) == [
        "公司手册\n第一章 总则\n内容一。",
        "公司手册\n第二章 考勤\n内容二。",
    ]
    bodies = [
        "考勤规定如下。",
        "年假规定如下。",
        "病假规定如下。",
        "婚假规定如下。",
        "结束语，只在最后一页。",
    ]
    pages = [f"公司手册\n{body}\n第 {n} 页" for n, body in enumerate(bodies, start=1)]
    pages[4] = "公司手册\n结束语，只在最后一页。"
    assert strip_page_furniture(pages) == bodies


def test_mark_headings() -> None:
    text = (
        "第一章 总则\n第一节 目的\n第三条 适用范围\n一、总体要求\n（一）基本原则\n"
        "第三条 员工应当遵守本制度。\n第一章 总则 ........ 3\n第二章总则"
    )
    assert mark_headings(text).split("\n") == [
        "# 第一章 总则",
        "## 第一节 目的",
        "### 第三条 适用范围",
        "#### 一、总体要求",
        "##### （一）基本原则",
        "第三条 员工应当遵守本制度。",  # a sentence, not a heading
        "第一章 总则 ........ 3",  # table of contents
        "# 第二章总则",
    ]


def test_repair_pdf_page_end_to_end() -> None:
    page = (
        "第 二 章 考 勤 管 理\n"
        "员 工 须 通 过 系 统 进 行 上 下 班 打 卡 ， 因 外 出 办 事 等 原 因 无 法 打 卡 的 ， 应 在\n"
        "系 统 中 提 交 外 勤 申 请 。\n"
        "Staff who forget to clock in must file the infor-\nmation within 3 days."
    )
    assert repair_pdf_page(page).split("\n") == [
        "# 第二章考勤管理",
        "员工须通过系统进行上下班打卡，因外出办事等原因无法打卡的，应在系统中提交外勤申请。",
        "Staff who forget to clock in must file the information within 3 days.",
    ]
