"""Text repairs for extracted text, PDF text above all.

Each function takes and returns plain strings so it can be unit-tested without files.
`normalize_text` is safe for every format (and for queries: apply it to both sides so they match);
the others undo artefacts of PDF layout and are applied by the PDF loader only.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# Han ideographs (basic, extension A, compatibility) and the CJK punctuation / full-width forms blocks.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = _HAN + "\u3001-\u303f\uff01-\uff60\u2018-\u201f\u2026\u00b7"
_CJK_CHAR = re.compile(f"[{_CJK}]")

# Sentence-final punctuation: a line that ends with one of these may end a paragraph.
SENTENCE_END = "。！？；!?;"

# Chinese document structure: '第一章 总则' is a chapter, '第二节 考勤' a section. Articles ('第三条')
# are left as text: they are short and would cut the text into too many tiny sections.
_NUM = "[一二三四五六七八九十百零〇两\\d]+"
_CHAPTER = re.compile(f"^第\\s*{_NUM}\\s*[章编部分]+(?:\\s.*)?$")
_SECTION = re.compile(f"^第\\s*{_NUM}\\s*节(?:\\s.*)?$")
# Table-of-contents lines ('第一章 总则 ........ 3') look like headings but are not.
_TOC_LINE = re.compile(r"(\.{3,}|…|·{3,}|\s\d+$)")
# Lines that start a new structural unit; a line break before them is never a mid-sentence break.
_UNIT_START = re.compile(f"^(?:第\\s*{_NUM}\\s*[章节条编部分]|{_NUM}、|[(（]{_NUM}[)）])")


_QUOTES = str.maketrans(
    {
        "\u201c": '"',  # “
        "\u201d": '"',  # ”
        "\u201e": '"',  # „
        "\u2018": "'",  # ‘
        "\u2019": "'",  # ’
        "\u201a": "'",  # ‚
        "\u00a0": " ",  # no-break space
        "\u3000": " ",  # ideographic (full-width) space
        "\u2002": " ",
        "\u2003": " ",
        "\u2009": " ",
        "\u200b": "",  # zero-width space: invisible, but splits words for matching
        "\ufeff": "",  # a BOM left inside the text
        "\u00ad": "",  # soft hyphen
    }
)
# Full-width Latin letters and digits (Ｐ Ｄ Ｆ ０-９) → ASCII, so "ＰＤＦ" matches "PDF".
# Full-width punctuation (，。！？) is left alone: it carries sentence boundaries.
_FULLWIDTH_ALNUM = str.maketrans(
    {c: chr(c - 0xFEE0) for r in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A)) for c in range(r[0], r[1] + 1)}
)
# Control characters other than tab and newline say nothing and confuse tokenizers.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normalize_text(text: str) -> str:
    """Normalize quotes, spaces, line endings and full-width alphanumerics; drop control characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.translate(_QUOTES).translate(_FULLWIDTH_ALNUM)
    text = _CONTROL.sub("", text)
    # NFC only: NFKC would also turn Chinese ，！？ into ASCII and change the text more than needed.
    text = unicodedata.normalize("NFC", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# Spaces between two CJK characters: justified PDF lines spread characters apart with real spaces.
_CJK_SPACE = re.compile(f"(?<=[{_CJK}])[ \t]+(?=[{_CJK}])")


def fix_cjk_spaces(text: str) -> str:
    """'公 司 的 年 假' → '公司的年假'; spaces next to Latin words or digits are kept."""
    return _CJK_SPACE.sub("", text)


# 'infor-\nmation' → 'information'. Lower-case continuation only: 'Jean-\nPaul' is a real hyphen.
_HYPHEN_BREAK = re.compile(r"([A-Za-z]{2,})-\n[ \t]*([a-z]{2,})")


def dehyphenate(text: str) -> str:
    """Join English words hyphenated across a line break."""
    return _HYPHEN_BREAK.sub(r"\1\2", text)


def _width(line: str) -> int:
    """Display width: CJK characters are twice as wide as Latin ones."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def join_cjk_lines(text: str, full: float = 0.8) -> str:
    """Join lines that a PDF broke mid-sentence in Chinese; keep real paragraph breaks.

    A break is joined when the line before ends in a CJK character that is not sentence-final, the next
    line starts with a CJK character, and the line before is "full" (≥ `full` × the widest line): a short
    line such as a heading ('第一章 总则') ends where the author ended it, not at the margin.
    """
    lines = text.split("\n")
    if len(lines) < 2:
        return text
    widest = max(_width(line.strip()) for line in lines)
    out = [lines[0]]
    for line in lines[1:]:
        prev = out[-1].rstrip()
        nxt = line.lstrip()
        if (
            prev
            and nxt
            and _CJK_CHAR.match(prev[-1])
            and prev[-1] not in SENTENCE_END
            and _CJK_CHAR.match(nxt[0])
            and not _UNIT_START.match(nxt)
            and _width(prev.strip()) >= full * widest
        ):
            out[-1] = prev + nxt
        else:
            out.append(line)
    return "\n".join(out)


# Lines that are only a page number: '第 3 页', '第3页 共7页', 'Page 3 of 7', '- 3 -', '3', '3 / 7'.
_PAGE_NUMBER = re.compile(
    r"^\s*(?:"
    r"第\s*\d+\s*页(?:\s*[,，/]?\s*共\s*\d+\s*页)?"
    r"|共\s*\d+\s*页\s*[,，/]?\s*第\s*\d+\s*页"
    r"|(?:page|p\.)\s*\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?"
    r"|[-–—~]*\s*\d{1,3}\s*[-–—~]*"  # a bare number: up to 3 digits, so a year such as '2024' stays
    r"|\d{1,4}\s*/\s*\d{1,4}"
    r")\s*$",
    re.IGNORECASE,
)


def is_page_number(line: str) -> bool:
    return bool(_PAGE_NUMBER.match(line))


def _furniture_key(line: str) -> str:
    """Compare header/footer candidates with digits masked: 'Page 3' and 'Page 4' are the same line."""
    return re.sub(r"\d+", "#", re.sub(r"\s+", " ", line.strip()))


def strip_page_furniture(
    pages: list[str], edge: int = 2, min_share: float = 0.6, min_pages: int = 3
) -> list[str]:
    """Remove running headers/footers and page-number lines from a document's pages.

    A line among the first or last `edge` non-empty lines of a page is furniture when (digits masked)
    it sits at that edge on at least `min_share` of the pages, in documents of at least `min_pages`
    pages. Page-number lines at an edge are removed in documents of any length.
    """
    split = [page.split("\n") for page in pages]
    top: Counter[str] = Counter()
    bottom: Counter[str] = Counter()
    for lines in split:
        filled = [ln for ln in lines if ln.strip()]
        top.update({_furniture_key(ln) for ln in filled[:edge]})
        bottom.update({_furniture_key(ln) for ln in filled[-edge:]})
    threshold = max(2, min_share * len(pages))
    use_repeats = len(pages) >= min_pages

    def furniture(line: str, counts: Counter[str]) -> bool:
        return is_page_number(line) or (use_repeats and counts[_furniture_key(line)] >= threshold)

    out = []
    for lines in split:
        idx = [i for i, ln in enumerate(lines) if ln.strip()]
        drop: set[int] = set()
        for i in idx[:edge]:
            if not furniture(lines[i], top):
                break
            drop.add(i)
        for i in reversed(idx[-edge:]):
            if not furniture(lines[i], bottom):
                break
            drop.add(i)
        out.append("\n".join(ln for i, ln in enumerate(lines) if i not in drop).strip("\n"))
    return out


def mark_headings(text: str, max_len: int = 40) -> str:
    """Turn standalone '第X章 …' / '第X节 …' lines into markdown headings ('# ', '## ')."""
    out = []
    for line in text.split("\n"):
        s = line.strip()
        if 0 < len(s) <= max_len and s[-1] not in SENTENCE_END + "，," and not _TOC_LINE.search(s):
            if _CHAPTER.match(s):
                line = "# " + s
            elif _SECTION.match(s):
                line = "## " + s
        out.append(line)
    return "\n".join(out)


def repair_pdf_page(text: str) -> str:
    """Repairs for one page's text once headers and footers are gone."""
    text = fix_cjk_spaces(text)
    text = dehyphenate(text)
    text = join_cjk_lines(text)
    return mark_headings(text)
