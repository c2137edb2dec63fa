"""Each format loads from small fixtures built in tmp_path; each failure raises a specific LoadError."""

from __future__ import annotations

import zipfile
from pathlib import Path

import docx
import pytest
from docx.oxml import OxmlElement
from fpdf import FPDF
from pypdf import PdfWriter

from ingest.chunk import chunk_documents
from ingest.loaders import LOADERS, load
from ingest.loaders import docx as docx_loader
from kb.config import ChunkConfig
from kb.errors import LoadError


def _cjk_font() -> Path | None:
    """A CJK TrueType font, if the system has one (fonts-wqy-zenhei, fonts-noto-cjk)."""
    roots = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts")]
    for pattern in ("*wqy*.tt[cf]", "*NotoSansCJK*.tt[cf]", "*NotoSerifCJK*.tt[cf]", "*CJK*.tt[cf]"):
        for root in roots:
            found = sorted(root.rglob(pattern)) if root.is_dir() else []
            if found:
                return found[0]
    return None


CJK_FONT = _cjk_font()


class _HandbookPDF(FPDF):
    """Pages with a running header and a 'Page n of m' footer, like a company manual."""

    header_text = "ACME Corp | Employee Handbook"
    font_name = "Helvetica"

    def header(self) -> None:
        self.set_font(self.font_name, size=9)
        self.cell(0, 8, self.header_text, align="C")
        self.ln(12)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font(self.font_name, size=9)
        self.cell(0, 8, f"Page {self.page_no()} of {{nb}}", align="C")


def make_english_pdf(path: Path) -> Path:
    pdf = _HandbookPDF()
    sections = [
        (
            "Leave policy",
            "Employees receive fifteen days of paid annual leave. The infor-\nmation is kept by HR.",
        ),
        ("Working hours", "Core hours are from 10:00 to 16:00. Flexible start between 8:00 and 10:00."),
        ("Expenses", "Claims must be filed within 60 days. Receipts are required for every item."),
    ]
    for title, body in sections:
        pdf.add_page()
        pdf.set_font("Helvetica", size=14)
        pdf.cell(0, 10, title)
        pdf.ln(12)
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, body)
    pdf.output(str(path))
    return path


def make_chinese_pdf(path: Path, font: Path) -> Path:
    pdf = _HandbookPDF()
    pdf.add_font("cjk", fname=str(font))
    pdf.font_name = "cjk"
    pdf.header_text = "青禾科技 员工手册 内部资料"
    pages = [
        (
            "第一章 总则",
            "本手册适用于与公司签订劳动合同的全体员工，包括苏州总部、深圳研发中心及西安办事处的员工，实习生参照执行。",
        ),
        (
            "第二章 假期",
            "员工累计工作已满一年不满十年的，年休假五天；已满十年不满二十年的，年休假十天；已满二十年的，年休假十五天。",
        ),
        (
            "",
            "当年未休完的年假可结转至次年，结转天数最多五天，结转的年假须在次年三月三十一日前休完，逾期作废。",
        ),
    ]
    for title, body in pages:
        pdf.add_page()
        pdf.set_font("cjk", size=12)
        if title:
            pdf.cell(0, 10, title)
            pdf.ln(12)
        pdf.multi_cell(90, 7, body)  # a narrow column, so the sentence wraps mid-clause
    pdf.output(str(path))
    return path


# ---------------------------------------------------------------- PDF


def test_pdf_english_pages_headers_and_hyphenation(tmp_path: Path) -> None:
    docs = load(make_english_pdf(tmp_path / "handbook.pdf"), "hr/handbook.pdf")
    assert [d.page for d in docs] == [1, 2, 3]
    assert all(d.source == "hr/handbook.pdf" for d in docs)
    for doc in docs:
        assert "ACME Corp" not in doc.text, "running header left in"
        assert "Page" not in doc.text, "page-number footer left in"
    assert docs[0].text.startswith("Leave policy")
    assert "information is kept" in docs[0].text
    assert "Flexible start" in docs[1].text


@pytest.mark.skipif(
    CJK_FONT is None, reason="no CJK TrueType font under /usr/share/fonts (apt install fonts-wqy-zenhei)"
)
def test_pdf_chinese_lines_joined_headings_carried(tmp_path: Path) -> None:
    assert CJK_FONT is not None
    docs = load(make_chinese_pdf(tmp_path / "zh.pdf", CJK_FONT), "zh.pdf")
    assert [d.page for d in docs] == [1, 2, 3]
    for doc in docs:
        assert "青禾科技" not in doc.text and "Page" not in doc.text
    assert docs[0].text.split("\n")[0] == "# 第一章 总则"
    # The wrapped sentence is one line again.
    assert "已满十年不满二十年的，年休假十天；已满二十年的，年休假十五天。" in docs[1].text.replace("\n", "|")
    # Page 3 has no heading of its own: it continues chapter two.
    assert docs[2].headings == ["第二章 假期"]
    chunks = chunk_documents(docs, ChunkConfig())
    assert chunks[-1].headings == ["第二章 假期"] and chunks[-1].page == 3


def test_pdf_encrypted_with_password_is_refused(tmp_path: Path) -> None:
    writer = PdfWriter(clone_from=make_english_pdf(tmp_path / "plain.pdf"))
    writer.encrypt(user_password="secret", owner_password="owner")
    path = tmp_path / "locked.pdf"
    writer.write(path)
    with pytest.raises(LoadError, match="encrypted PDF: a password is required"):
        load(path, "locked.pdf")


def test_pdf_encrypted_with_empty_user_password_loads(tmp_path: Path) -> None:
    writer = PdfWriter(clone_from=make_english_pdf(tmp_path / "plain.pdf"))
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-128")
    path = tmp_path / "restricted.pdf"
    writer.write(path)
    assert len(load(path, "restricted.pdf")) == 3


@pytest.mark.parametrize("damage", ["truncated", "not a pdf"])
def test_pdf_corrupt(tmp_path: Path, damage: str) -> None:
    data = make_english_pdf(tmp_path / "whole.pdf").read_bytes()
    path = tmp_path / "bad.pdf"
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"a text file named .pdf")
    with pytest.raises(LoadError, match="corrupt or truncated PDF"):
        load(path, "bad.pdf")


def test_pdf_without_text_layer(tmp_path: Path) -> None:
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.rect(20, 20, 100, 60, style="F")  # a drawing stands in for a scanned image
    path = tmp_path / "scan.pdf"
    pdf.output(str(path))
    with pytest.raises(LoadError, match=r"no text layer \(scanned\?\); OCR is not supported"):
        load(path, "scan.pdf")


# ---------------------------------------------------------------- DOCX


def make_docx(path: Path) -> Path:
    d = docx.Document()
    d.add_heading("员工手册", level=1)
    wrapped = d.add_paragraph("本手册适用于全体员工。")
    # Put that paragraph inside a content control (w:sdt), as some templates do with the whole body.
    sdt, content = OxmlElement("w:sdt"), OxmlElement("w:sdtContent")
    sdt.append(content)
    wrapped._p.addprevious(sdt)
    content.append(wrapped._p)
    d.add_heading("年假", level=2)
    d.add_paragraph("年假天数见下表：")
    table = d.add_table(rows=3, cols=3)
    for r, row in enumerate(
        [("工龄", "天数", "薪资"), ("1-10年", "5天", "全薪"), ("10年以上", "10天", "全薪")]
    ):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.add_paragraph("未休年假可结转至次年。")
    d.add_paragraph("结转最多五天", style="List Bullet")
    d.add_heading("病假", level=2)
    d.add_paragraph("病假须提供医院证明。")
    d.save(str(path))
    return path


def test_docx_order_headings_tables(tmp_path: Path) -> None:
    (doc,) = load(make_docx(tmp_path / "handbook.docx"), "handbook.docx")
    lines = [line for line in doc.text.split("\n") if line]
    assert lines == [
        "# 员工手册",
        "本手册适用于全体员工。",
        "## 年假",
        "年假天数见下表：",
        "工龄 | 天数 | 薪资",
        "1-10年 | 5天 | 全薪",
        "10年以上 | 10天 | 全薪",
        "未休年假可结转至次年。",
        "- 结转最多五天",
        "## 病假",
        "病假须提供医院证明。",
    ]
    chunks = chunk_documents([doc], ChunkConfig(size=60, overlap=10, min_size=5))
    by_heading = {tuple(c.headings) for c in chunks}
    assert ("员工手册", "年假") in by_heading and ("员工手册", "病假") in by_heading
    table_chunk = next(c for c in chunks if "1-10年 | 5天" in c.text)
    assert table_chunk.headings == ["员工手册", "年假"]


def test_docx_without_text(tmp_path: Path) -> None:
    path = tmp_path / "blank.docx"
    docx.Document().save(str(path))
    with pytest.raises(LoadError, match="no text in the DOCX body"):
        load(path, "blank.docx")


def test_docx_not_a_zip_or_not_word(tmp_path: Path) -> None:
    path = tmp_path / "old.docx"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100)  # an OLE2 .doc renamed
    with pytest.raises(LoadError, match="not a valid DOCX: not a zip archive"):
        load(path, "old.docx")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "not a word document")
    with pytest.raises(LoadError, match="word/document.xml is missing"):
        load(path, "old.docx")


def test_docx_zip_bomb_ratio(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/document.xml", b"\0" * (docx_loader.RATIO_MIN_SIZE + 1024 * 1024))
    assert path.stat().st_size < 100_000
    with pytest.raises(LoadError, match="compression ratio .* zip bomb"):
        load(path, "bomb.docx")


def test_docx_zip_bomb_total_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docx_loader, "MAX_UNCOMPRESSED", 1000)
    with pytest.raises(LoadError, match="unpacks to .* zip bomb"):
        load(make_docx(tmp_path / "big.docx"), "big.docx")


# ---------------------------------------------------------------- HTML

PAGE = """<!DOCTYPE html>
<html><head><meta charset="{charset}"><title>报销指南</title>
<style>body {{ color: red; }}</style><script>var tracking = "按钮";</script></head>
<body>
<header><a href="/">首页</a> 登录</header>
<nav><ul><li>导航一</li><li>导航二</li></ul></nav>
<div class="breadcrumb">首页 &gt; 财务</div>
<main>
  <h1>费用报销指南</h1>
  <p>员工应在费用发生后
  60天内提交报销。</p>
  <h2>报销标准</h2>
  <ul><li>加班交通费不超过100元</li><li>业务招待费人均不超过300元</li></ul>
  <table><tr><th>类别</th><th>标准</th></tr><tr><td>通讯费</td><td>每月300元</td></tr></table>
  <div class="share-menu">分享到微信</div>
</main>
<aside>相关文章</aside>
<footer>版权所有 © 2024</footer>
</body></html>
"""


def _check_html_text(text: str) -> None:
    lines = [line for line in text.split("\n") if line]
    assert lines == [
        "# 费用报销指南",
        "员工应在费用发生后 60天内提交报销。",
        "## 报销标准",
        "- 加班交通费不超过100元",
        "- 业务招待费人均不超过300元",
        "类别 | 标准",
        "通讯费 | 每月300元",
    ]


def test_html_main_content_utf8(tmp_path: Path) -> None:
    path = tmp_path / "guide.html"
    path.write_text(PAGE.format(charset="utf-8"), encoding="utf-8")
    (doc,) = load(path, "guide.html")
    _check_html_text(doc.text)
    assert doc.meta["title"] == "报销指南"


def test_html_declared_gbk(tmp_path: Path) -> None:
    path = tmp_path / "guide.htm"
    # Declared GB2312, but © lies outside it: decoding as GB18030 (a superset) still works.
    path.write_bytes(PAGE.format(charset="gb2312").encode("gb18030"))
    (doc,) = load(path, "guide.htm")
    _check_html_text(doc.text)
    assert doc.meta["encoding"] == "gb18030"


def test_html_without_main_drops_chrome(tmp_path: Path) -> None:
    path = tmp_path / "plain.html"
    path.write_text(
        "<html><body><div class='page has-sidebar'><div id='top-nav'>菜单</div><div class='sidebar'>侧栏</div>"
        "<div class='content'><h2>VPN</h2><p>Use the client.<br>Then log in.</p></div>"
        "<div id='cookie-banner'>We use cookies</div></div><footer>Contact</footer></body></html>",
        encoding="utf-8",
    )
    (doc,) = load(path, "plain.html")
    assert doc.text == "## VPN\n\nUse the client.\nThen log in."


def test_html_only_boilerplate(tmp_path: Path) -> None:
    path = tmp_path / "empty.html"
    path.write_text("<html><body><nav>菜单</nav><script>x()</script></body></html>", encoding="utf-8")
    with pytest.raises(LoadError, match="no text content"):
        load(path, "empty.html")


# ---------------------------------------------------------------- Markdown and text


def test_markdown_front_matter_and_headings(tmp_path: Path) -> None:
    path = tmp_path / "leave.md"
    path.write_text(
        "---\ntitle: 休假制度\ntags: [hr]\n---\n休假制度\n========\n\n## 年假\n\n员工享有年假。\n\n"
        "```bash\n# not a heading\n```\n",
        encoding="utf-8",
    )
    (doc,) = load(path, "leave.md")
    assert doc.meta["title"] == "休假制度"
    assert doc.text.startswith("# 休假制度\n\n## 年假\n\n员工享有年假。")
    assert "tags:" not in doc.text
    chunks = chunk_documents([doc], ChunkConfig())
    assert all(c.headings == ["休假制度", "年假"] for c in chunks)


TEXT = "食堂营业时间为早上7点到晚上8点。\n午餐时间是11:30到13:30。\n"


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (TEXT.encode("utf-8"), "utf-8"),
        (TEXT.encode("utf-8-sig"), "utf-8-sig"),
        (TEXT.encode("gbk"), "gb18030"),
        (TEXT.encode("gb18030"), "gb18030"),
        (TEXT.encode("utf-16"), "utf-16"),  # with BOM (little-endian here)
        (b"\xfe\xff" + TEXT.encode("utf-16-be"), "utf-16"),
    ],
)
def test_text_encodings(tmp_path: Path, data: bytes, encoding: str) -> None:
    path = tmp_path / "canteen.txt"
    path.write_bytes(data)
    (doc,) = load(path, "canteen.txt")
    assert doc.text == TEXT.strip()
    assert doc.meta["encoding"] == encoding


def test_text_utf8_with_one_damaged_byte(tmp_path: Path) -> None:
    path = tmp_path / "cut.txt"
    path.write_bytes((TEXT * 5).encode("utf-8")[:-2])  # the last character cut in half
    (doc,) = load(path, "cut.txt")
    assert doc.text.startswith("食堂营业时间") and "1 bad bytes replaced" in doc.meta["encoding"]


def test_text_binary(tmp_path: Path) -> None:
    path = tmp_path / "image.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(LoadError, match="binary data, not text"):
        load(path, "image.txt")


def test_text_undecodable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ingest.loaders.text as text_loader

    class _NoGuess:
        def best(self) -> None:
            return None

    # Bytes that are neither UTF-8 nor GB18030 (0x80 is not a GB18030 lead byte) and no detector guess.
    monkeypatch.setattr(text_loader, "from_bytes", lambda data: _NoGuess())
    path = tmp_path / "odd.txt"
    path.write_bytes(b"abc \x80\x80\x80 def " * 20)
    with pytest.raises(LoadError, match="undecodable text"):
        load(path, "odd.txt")


# ---------------------------------------------------------------- dispatch


@pytest.mark.parametrize("suffix", sorted(LOADERS))
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(LoadError, match="empty file") as info:
        load(path, path.name)
    assert info.value.path == str(path)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "sheet.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(LoadError, match="unsupported file type '.xlsx'"):
        load(path, "sheet.xlsx")


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "NOTES.TXT"
    path.write_bytes(TEXT.encode("utf-8"))
    assert load(path, "NOTES.TXT")[0].text == TEXT.strip()


def test_text_utf16_bom_with_binary_payload(tmp_path: Path) -> None:
    path = tmp_path / "tricky.txt"
    path.write_bytes(b"\xff\xfe" + ("\x01\x02\x03\x04 data" * 50).encode("utf-16-le"))
    with pytest.raises(LoadError, match="binary data, not text"):
        load(path, "tricky.txt")
