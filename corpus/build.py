"""Regenerate the binary / legacy-encoded documents of the sample corpus.

Run from the repository root:

    .venv/bin/python corpus/build.py

Needs: fpdf2 and python-docx (both in the project's dev dependencies) and a CJK TrueType font.
The font is looked up in the standard Debian paths; install it with

    apt-get install -y fonts-wqy-zenhei

(or point KB_CJK_FONT at a .ttf/.ttc file). WenQuanYi Zen Hei is the default on purpose: the
CFF-based Noto Sans CJK OTF/TTC fonts embed in a way that pypdf extracts as garbage (NUL bytes
between characters), so they are only a last resort.

The document text lives in corpus/src/*.py; this script only renders it. Output is deterministic
(fixed PDF creation dates, fixed DOCX core properties and zip timestamps), so rebuilding leaves
the committed files byte-identical.

Generated files:
    hr/employee_handbook.pdf                       (zh, header + "第 N 页 共 M 页" footer, table, align=J)
    it/it_handbook.pdf                             (zh, header + footer, SLA table, align=J)
    it/information_security_policy_en.pdf          (en, header + "Page N of M" footer, table, align=J)
    finance/travel_policy.pdf                      (zh, header + footer, table, distributed justification)
    product/qh_g300_user_manual.pdf                (zh, header + footer, spec tables)
    hr/expense_reimbursement.docx                  (zh, Heading 1/2, table)
    finance/budget_kickoff_minutes_2024-09-05.docx (zh, Heading 1/2, table)
    general/meeting_minutes_2024-03-12.txt         (zh, GBK, CRLF)
    general/office_guide.txt                       (zh, UTF-16 with BOM, CRLF)
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from src import (  # noqa: E402
    budget_meeting,
    employee_handbook,
    expense_reimbursement,
    g300_manual,
    it_handbook,
    security_policy_en,
    text_files,
    travel_policy,
)

FIXED_DATE = dt.datetime(2024, 9, 30, 9, 0, 0, tzinfo=dt.UTC)

# (path, index inside a .ttc collection). Order matters: TrueType-outline fonts first.
FONT_CANDIDATES = [
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", 0),
    ("/usr/share/fonts/truetype/arphic/uming.ttc", 0),
]


def find_cjk_font() -> tuple[str, int]:
    env = os.environ.get("KB_CJK_FONT")
    if env:
        if not Path(env).is_file():
            sys.exit(f"build.py: KB_CJK_FONT={env} does not exist")
        return env, 0
    for path, idx in FONT_CANDIDATES:
        if Path(path).is_file():
            return path, idx
    sys.exit(
        "build.py: no CJK TrueType font found. Install one with\n"
        "    apt-get install -y fonts-wqy-zenhei\n"
        "or set KB_CJK_FONT=/path/to/font.ttf. Looked in:\n    "
        + "\n    ".join(p for p, _ in FONT_CANDIDATES)
    )


# --------------------------------------------------------------------------------------------- PDF


def make_pdf_class():
    from fpdf import FPDF

    class DocPDF(FPDF):
        header_left = ""
        header_right = ""
        footer_fmt = "第 {n} 页 共 {{nb}} 页"
        body_font = "cjk"

        def header(self):
            if not (self.header_left or self.header_right):
                return
            self.set_font(self.body_font, "", 8)
            self.set_text_color(110, 110, 110)
            self.set_y(8)
            self.cell(0, 5, self.header_left, align="L")
            self.set_x(self.l_margin)
            self.cell(0, 5, self.header_right, align="R", new_x="LMARGIN", new_y="NEXT")
            self.set_draw_color(170, 170, 170)
            self.line(self.l_margin, 14, self.w - self.r_margin, 14)
            self.set_text_color(0, 0, 0)
            self.set_y(20)

        def footer(self):
            self.set_y(-14)
            self.set_font(self.body_font, "", 8)
            self.set_text_color(110, 110, 110)
            self.cell(0, 6, self.footer_fmt.format(n=self.page_no()), align="C")
            self.set_text_color(0, 0, 0)

    return DocPDF


CLOSING_PUNCT = set("，。、；：！？）》」』”’%．,.;:!?)]")
OPENING_PUNCT = set("（《「『“‘([")


def _tokens(text: str) -> list[str]:
    """Split into layout tokens: one token per CJK char, ASCII words kept whole, spaces separate."""
    out: list[str] = []
    buf = ""
    for ch in text:
        if ch == " ":
            if buf:
                out.append(buf)
                buf = ""
            out.append(" ")
        elif ord(ch) < 128 and ch not in ",.;:!?()[]":
            buf += ch
        else:
            if buf:
                out.append(buf)
                buf = ""
            out.append(ch)
    if buf:
        out.append(buf)
    return out


def layout_lines(pdf, text: str, width: float, tracking: float) -> list[list[str]]:
    """Break CJK text into lines at any character (Latin words are kept whole), with hanging
    closing punctuation and no opening punctuation at a line end, the way CJK word processors do."""
    lines: list[list[str]] = []
    cur: list[str] = []
    cur_w = 0.0
    for tok in _tokens(text):
        w = pdf.get_string_width(tok) + (tracking if cur else 0)
        if cur and cur_w + w > width:
            if tok in CLOSING_PUNCT:  # hanging punctuation: keep it on this line
                cur.append(tok)
                lines.append(cur)
                cur, cur_w = [], 0.0
                continue
            carry = []
            if cur[-1] in OPENING_PUNCT:
                carry = [cur.pop()]
            lines.append(cur)
            cur = carry
            cur_w = sum(pdf.get_string_width(t) for t in cur) + tracking * max(0, len(cur) - 1)
            if tok == " " and not cur:
                continue
            w = pdf.get_string_width(tok) + (tracking if cur else 0)
        cur.append(tok)
        cur_w += w
    if cur:
        lines.append(cur)
    out = []
    for line in lines:
        while line and line[-1] == " ":
            line.pop()
        while line and line[0] == " ":
            line.pop(0)
        if line:
            out.append(line)
    return out


def cjk_paragraph(pdf, text: str, line_h: float, mode: str, indent: float = 0.0) -> None:
    """Render a Chinese paragraph.

    mode "J": each full line is justified with PDF character spacing (Tc), as word processors do
    for CJK text; extraction stays clean.
    mode "distributed": every token is placed by its own text operation with widened tracking plus
    the justification slack (Word's "distributed" alignment / 字符间距加宽). Extractors then see gaps
    between CJK characters and insert spaces ("为 规 范 公 司") - the real-world problem the loader repairs.
    """
    left = pdf.l_margin + indent
    width = pdf.w - left - pdf.r_margin
    tracking = 0.8 if mode == "distributed" else 0.0
    lines = layout_lines(pdf, text, width, tracking)
    saved_c_margin, pdf.c_margin = pdf.c_margin, 0
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if pdf.will_page_break(line_h):
            pdf.add_page()
        y = pdf.get_y()
        if mode == "distributed":
            widths = [pdf.get_string_width(t) for t in line]
            gaps = len(line) - 1
            natural = sum(widths) + tracking * gaps
            extra = 0.0 if last or gaps == 0 else max(0.0, (width - natural) / gaps)
            x = left
            for tok, w in zip(line, widths, strict=True):
                if tok != " ":
                    pdf.set_xy(x, y)
                    pdf.cell(w, line_h, tok)
                x += w + tracking + extra
        else:
            s = "".join(line)
            natural = pdf.get_string_width(s)
            n = len(s)
            cs = 0.0 if last or n < 2 else (width - natural) / (n - 1)
            pdf.set_xy(left, y)
            if cs:
                pdf.set_char_spacing(cs * pdf.k)  # fpdf2 takes Tc in points
            pdf.cell(width, line_h, s)
            if cs:
                pdf.set_char_spacing(0)
        pdf.set_xy(pdf.l_margin, y + line_h)
    pdf.c_margin = saved_c_margin


def render_pdf(doc, out: Path, *, font: tuple[str, int] | None, lang: str, justify: str) -> None:
    DocPDF = make_pdf_class()
    pdf = DocPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(doc.TITLE)
    pdf.set_author("青禾智联科技有限公司" if lang == "zh" else "Qinghe Smartlink Technology Co., Ltd.")
    pdf.set_creator("corpus/build.py")
    pdf.set_producer("fpdf2")
    pdf.set_lang("zh-CN" if lang == "zh" else "en-US")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    if font is not None:
        path, idx = font
        for style in ("", "B"):
            pdf.add_font("cjk", style, path, collection_font_number=idx)
        family = "cjk"
    else:
        family = "helvetica"
    pdf.body_font = family
    pdf.header_left = doc.HEADER_LEFT
    pdf.header_right = doc.HEADER_RIGHT
    pdf.footer_fmt = "第 {n} 页 共 {{nb}} 页" if lang == "zh" else "Page {n} of {{nb}}"
    body_size, line_h = (11, 7) if lang == "zh" else (10.5, 5.6)
    bullet = "●" if lang == "zh" else "-"
    pdf.add_page()
    for block in doc.BLOCKS:
        kind = block[0]
        if kind == "title":
            pdf.set_font(family, "B", 20)
            pdf.multi_cell(0, 12, block[1], align="C", new_x="LMARGIN", new_y="NEXT")
        elif kind == "meta":
            pdf.ln(2)
            pdf.set_font(family, "", 9)
            pdf.set_text_color(90, 90, 90)
            pdf.multi_cell(0, 5, block[1], align="C", new_x="LMARGIN", new_y="NEXT")
            pdf.set_text_color(0, 0, 0)
            pdf.ln(4)
        elif kind == "h1":
            if pdf.will_page_break(24):
                pdf.add_page()
            pdf.ln(3)
            pdf.set_font(family, "B", 14)
            pdf.multi_cell(0, 9, block[1], align="L", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        elif kind == "h2":
            if pdf.will_page_break(18):
                pdf.add_page()
            pdf.ln(1)
            pdf.set_font(family, "B", 12)
            pdf.multi_cell(0, 8, block[1], align="L", new_x="LMARGIN", new_y="NEXT")
        elif kind == "p":
            pdf.set_font(family, "", body_size)
            if lang == "zh":
                cjk_paragraph(pdf, block[1], line_h, justify)
            else:
                pdf.multi_cell(0, line_h, block[1], align="J", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
        elif kind == "ul":
            pdf.set_font(family, "", body_size)
            for item in block[1]:
                if lang == "zh":
                    cjk_paragraph(pdf, f"{bullet} {item}", line_h, "J", indent=4)
                else:
                    pdf.set_x(pdf.l_margin + 4)
                    pdf.multi_cell(0, line_h, f"{bullet} {item}", align="L", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
        elif kind == "table":
            header, rows = block[1], block[2]
            widths = block[3] if len(block) > 3 else None
            pdf.set_font(family, "", body_size - 1.5)
            pdf.ln(1)
            with pdf.table(
                col_widths=widths,
                line_height=line_h - 1,
                text_align="LEFT",
                first_row_as_headings=True,
            ) as table:
                for row in [header, *rows]:
                    r = table.row()
                    for cell in row:
                        r.cell(cell)
            pdf.ln(3)
        elif kind == "break":
            pdf.add_page()
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))


# -------------------------------------------------------------------------------------------- DOCX


def render_docx(doc, out: Path) -> None:
    from docx import Document
    from docx.oxml.ns import qn
    from docx.shared import Pt

    d = Document()
    normal = d.styles["Normal"]
    normal.font.name = "Microsoft YaHei"
    normal.font.size = Pt(10.5)
    normal.element.rPr.rFonts.set(qn("w:eastAsia"), "微软雅黑")
    props = d.core_properties
    props.title = doc.TITLE
    props.author = "青禾智联科技有限公司"
    props.last_modified_by = "corpus/build.py"
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    props.revision = 1
    for block in doc.BLOCKS:
        kind = block[0]
        if kind == "title":
            d.add_heading(block[1], level=0)
        elif kind == "meta":
            p = d.add_paragraph(block[1])
            p.runs[0].italic = True
        elif kind == "h1":
            d.add_heading(block[1], level=1)
        elif kind == "h2":
            d.add_heading(block[1], level=2)
        elif kind == "p":
            d.add_paragraph(block[1])
        elif kind == "ul":
            for item in block[1]:
                d.add_paragraph(item, style="List Bullet")
        elif kind == "table":
            header, rows = block[1], block[2]
            t = d.add_table(rows=1 + len(rows), cols=len(header))
            t.style = "Table Grid"
            for r, row in enumerate([header, *rows]):
                for c, text in enumerate(row):
                    cell = t.cell(r, c)
                    cell.text = text
                    if r == 0:
                        cell.paragraphs[0].runs[0].bold = True
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    buf = io.BytesIO()
    d.save(buf)
    # Re-pack with fixed timestamps so that rebuilding is byte-stable.
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(2024, 9, 30, 9, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, src.read(info.filename))


# -------------------------------------------------------------------------------------------- TXT


def write_text(text: str, out: Path, encoding: str) -> None:
    data = text.replace("\n", "\r\n")
    raw = b"\xff\xfe" + data.encode("utf-16-le") if encoding == "utf-16" else data.encode(encoding)
    out.write_bytes(raw)


def main() -> None:
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    font = find_cjk_font()
    print(f"CJK font: {font[0]} (index {font[1]})")
    jobs = [
        (employee_handbook, "hr/employee_handbook.pdf", "zh", "J"),
        (it_handbook, "it/it_handbook.pdf", "zh", "J"),
        (security_policy_en, "it/information_security_policy_en.pdf", "en", "J"),
        (travel_policy, "finance/travel_policy.pdf", "zh", "distributed"),
        (g300_manual, "product/qh_g300_user_manual.pdf", "zh", "J"),
    ]
    for mod, rel, lang, justify in jobs:
        render_pdf(mod, HERE / rel, font=font if lang == "zh" else None, lang=lang, justify=justify)
        print(f"wrote {rel}")
    for mod, rel in [
        (expense_reimbursement, "hr/expense_reimbursement.docx"),
        (budget_meeting, "finance/budget_kickoff_minutes_2024-09-05.docx"),
    ]:
        render_docx(mod, HERE / rel)
        print(f"wrote {rel}")
    write_text(text_files.MEETING_MINUTES_GBK, HERE / "general/meeting_minutes_2024-03-12.txt", "gbk")
    print("wrote general/meeting_minutes_2024-03-12.txt (GBK)")
    write_text(text_files.OFFICE_GUIDE_UTF16, HERE / "general/office_guide.txt", "utf-16")
    print("wrote general/office_guide.txt (UTF-16 with BOM)")


if __name__ == "__main__":
    main()
