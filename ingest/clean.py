"""Text repairs for extracted text, PDF text above all.

Each function takes and returns plain strings so it can be unit-tested without files.
`normalize_text` is safe for every format (and for queries: apply it to both sides so they match);
the others undo artefacts of PDF layout and are applied by the PDF loader only (`repair_pdf_page`
per page after `strip_page_furniture` over all pages).
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
# What the last line of a paragraph ends with: a sentence end, possibly inside closing quotes/brackets.
_CLOSES = SENTENCE_END + "：:\"'）)》」』】."
_BULLETS = "●•◦▪■□◆◇○►-*–—"

# Chinese document structure, outermost first: 第X章 chapter, 第X节 section, 第X条 article, 一、 item,
# （一） sub-item. Each becomes a markdown heading of that level when it stands alone on a line.
_CN_NUM = "[一二三四五六七八九十百零〇两]+"
_NUM = "[一二三四五六七八九十百零〇两\\d]+"
_STRUCTURE = (
    re.compile(f"^第\\s*{_NUM}\\s*[章编部分]"),
    re.compile(f"^第\\s*{_NUM}\\s*节"),
    re.compile(f"^第\\s*{_NUM}\\s*条"),
    re.compile(f"^{_CN_NUM}、"),
    re.compile(f"^[(（]{_CN_NUM}[)）]"),
)
# Table-of-contents lines ('第一章 总则 ........ 3') look like headings but are not.
_TOC_LINE = re.compile(r"(\.{3,}|…|·{3,}|\s\d+$)")
# Lines that start a new unit; a line break before them is never a mid-sentence break.
_UNIT_START = re.compile(
    f"^(?:第\\s*{_NUM}\\s*[章节条编部分]|{_NUM}、|[(（]{_NUM}[)）]|\\d+(?:\\.\\d+)+|\\d+[.、)）]\\s)"
)
# Space between two CJK characters: a table row or a layout line, not running text.
_TABULAR = re.compile(f"[{_CJK}][ \\t]+[{_CJK}]")

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
    {
        c: chr(c - 0xFEE0)
        for lo, hi in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
        for c in range(lo, hi + 1)
    }
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


_SINGLE_CJK = re.compile(f"^[{_CJK}]$")
_SINGLE_MARK = re.compile(r"^[^\w\s]$")  # one punctuation or symbol character: '.', '"', '×'
_GAP = re.compile(r"([ \t]+)")
# Spaces before Chinese closing punctuation or after opening punctuation are never meaningful.
_PUNCT_SPACE = re.compile("[ \\t]+(?=[。，、；：！？）》」』】])|(?<=[（《「『【])[ \\t]+")


def _letter_spaced(tokens: list[str], share: float) -> bool:
    """Set with a space after every character: mostly one-character tokens, some of them CJK."""
    singles = sum(len(t) == 1 for t in tokens)
    return singles >= share * len(tokens) and any(_SINGLE_CJK.match(t) for t in tokens)


def _fix_line(line: str, spaced: bool, min_run: int) -> str:
    parts = _GAP.split(line)  # token, gap, token, gap, ...
    tokens, gaps = parts[0::2], parts[1::2]
    if spaced:
        # A gap next to a lone CJK character or punctuation mark is spacing, not a word break;
        # a gap between two longer tokens ('ext 8302', 'VPN client') is real.
        keep = [
            not any(_SINGLE_CJK.match(t) or _SINGLE_MARK.match(t) for t in (tokens[i], tokens[i + 1]))
            for i in range(len(gaps))
        ]
    else:
        # Only runs of >= min_run lone CJK characters: '公 司 的 年 假' but not '第一章 总则'.
        keep = [True] * len(gaps)
        i = 0
        while i < len(tokens):
            j = i
            while j + 1 < len(tokens) and _SINGLE_CJK.match(tokens[j]) and _SINGLE_CJK.match(tokens[j + 1]):
                j += 1
            if j - i + 1 >= min_run:
                keep[i:j] = [False] * (j - i)
            i = j + 1
    out = [tokens[0]]
    for gap, token, kept in zip(gaps, tokens[1:], keep, strict=True):
        out.append((gap if kept else "") + token)
    return _PUNCT_SPACE.sub("", "".join(out))


def fix_cjk_spaces(text: str, min_run: int = 3) -> str:
    """Undo letter-spacing: '公 司 的 年 假' → '公司的年假'.

    Justified or letter-spaced PDF lines put a space between every character. Spaces between CJK words
    ('第一章 总则', table columns '婚假 3天 全薪') are real separators and stay, as do spaces between Latin
    words. In a line that is letter-spaced as a whole (or the short tail line of such a paragraph),
    spaces next to lone punctuation go too ('1 . 5 倍' → '1.5倍'); elsewhere only runs of at least
    `min_run` lone CJK characters are joined.
    """
    out = []
    spaced = False
    for line in text.split("\n"):
        tokens = line.split()
        # The last line of a letter-spaced paragraph can be short ('元 。'): judge it more leniently.
        spaced = bool(tokens) and (
            (len(tokens) >= 4 and _letter_spaced(tokens, 0.6)) or (spaced and _letter_spaced(tokens, 0.4))
        )
        out.append(_fix_line(line, spaced, min_run))
    return "\n".join(out)


# 'infor-\nmation' → 'information'. Lower-case continuation only: 'Jean-\nPaul' is a real hyphen.
_HYPHEN_BREAK = re.compile(r"([A-Za-z]{2,})-\n[ \t]*([a-z]{2,})")


def dehyphenate(text: str) -> str:
    """Join English words hyphenated across a line break."""
    return _HYPHEN_BREAK.sub(r"\1\2", text)


# An e-mail address or host name wrapped after a dot or '@': 'security@qinghe-tech.\ncom'.
_URL_BREAK = re.compile(r"(?<![A-Za-z0-9_.@-])([A-Za-z0-9_.@-]+[.@])\n[ \t]*([a-z0-9][A-Za-z0-9_.-]*)")
_HOST = re.compile(
    r"^[A-Za-z0-9_.-]*(?:@[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+|\.(?:com|cn|net|org|io|gov|edu|info|biz|co|hk|sg|uk|de|jp))$"
)


def join_broken_urls(text: str) -> str:
    """Rejoin e-mail addresses and host names that a line break cut after a '.' or '@'."""

    def fix(match: re.Match[str]) -> str:
        joined = match.group(1) + match.group(2)
        return joined if _HOST.match(joined) else match.group(0)

    return _URL_BREAK.sub(fix, text)


def _width(line: str) -> int:
    """Display width: CJK characters are twice as wide as Latin ones."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def _reference_width(widths: list[int]) -> int:
    """The width of a full line: the 90th percentile, so one overlong line does not set the margin."""
    ranked = sorted(widths, reverse=True)
    return ranked[min(len(ranked) - 1, len(ranked) // 10)]


def _continues(prev: str, nxt: str) -> bool:
    """Could the sentence at the end of prev go on at the start of nxt (character-wise)?"""
    if prev[-1] in SENTENCE_END + "：:" or nxt[0] in _BULLETS or _UNIT_START.match(nxt):
        return False  # a colon introduces a list or table; bullets and numbers start new units
    return bool(_CJK_CHAR.match(prev[-1]) or _CJK_CHAR.match(nxt[0]))


def join_cjk_lines(text: str, full: float = 0.8) -> str:
    """Join lines that a PDF broke mid-sentence in Chinese; keep real paragraph breaks.

    A break is joined (with no space) when
    - the line before is "full" (≥ `full` × the usual widest line): a heading such as '第一章 总则' ends
      where the author ended it, not at the right margin;
    - it does not end a sentence or introduce a list, the next line does not start a numbered or bulleted
      unit ('第三条', '一、', '1.2', '●'), and one side of the break is a CJK character;
    - neither line is tabular (spaces between CJK words separate columns);
    - the next line is full too, or ends a sentence: a short line without a full stop after a full line
      is a heading or a label, not the tail of a paragraph.
    """
    lines = text.split("\n")
    if len(lines) < 2:
        return text
    widths = [_width(line.strip()) for line in lines]
    ref = _reference_width(widths)
    out = [lines[0]]
    for prev_raw, line, prev_width, width in zip(lines, lines[1:], widths, widths[1:], strict=False):
        prev, nxt = prev_raw.strip(), line.strip()
        if (
            prev
            and nxt
            and prev_width >= full * ref
            and _continues(prev, nxt)
            and not _TABULAR.search(prev)
            and not _TABULAR.search(nxt)
            and (width >= full * ref or nxt[-1] in _CLOSES)
        ):
            out[-1] = out[-1].rstrip() + nxt
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
    """Turn standalone structure lines into markdown headings: '第一章 总则' → '# 第一章 总则'.

    Levels: 第X章 '#', 第X节 '##', 第X条 '###', 一、 '####', （一） '#####'. Only short lines that do not
    end a sentence count: '第三条 员工应当遵守本制度。' is body text.
    """
    out = []
    for line in text.split("\n"):
        s = line.strip()
        if 0 < len(s) <= max_len and s[-1] not in SENTENCE_END + "，,：:" and not _TOC_LINE.search(s):
            for level, pattern in enumerate(_STRUCTURE, start=1):
                if pattern.match(s):
                    line = "#" * level + " " + s
                    break
        out.append(line)
    return "\n".join(out)


def repair_pdf_page(text: str) -> str:
    """Repairs for one page's text once headers and footers are gone."""
    text = fix_cjk_spaces(text)
    text = dehyphenate(text)
    text = join_broken_urls(text)
    text = join_cjk_lines(text)
    return mark_headings(text)
