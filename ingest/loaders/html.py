"""HTML: the page's main content as markdown-like text (headings '#', list items '- ', rows 'a | b')."""

from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup, Comment, Doctype, NavigableString, ProcessingInstruction, Tag
from lxml import etree

from ingest.clean import normalize_text
from ingest.loaders.text import decode_bytes, read_bytes
from kb.config import IngestConfig
from kb.errors import FileSkipped, LoadError
from kb.schema import Document

# Never content, wherever they are.
_ALWAYS_DROP = (
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "canvas",
    "iframe",
    "form",
    "button",
    "select",
)
# Page chrome: dropped around the main content; inside <main>/<article> a <header> usually holds the title.
_CHROME = ("nav", "header", "footer", "aside")
# id/class words of boilerplate blocks; matched at the start of a '-'/'_' separated part ('main-nav',
# 'navbar', 'site_footer') so that words merely containing them ('unavailable') are not hit.
_CHROME_NAME = re.compile(
    r"(?:^|[-_\s])(?:nav|menu|sidebar|footer|header|breadcrumb|cookie|banner)", re.IGNORECASE
)
# Inside the main content, only the unambiguous ones: an 'article-header' holds the title.
_CHROME_NAME_INNER = re.compile(r"(?:^|[-_\s])(?:nav|menu|sidebar|breadcrumb|cookie|banner)", re.IGNORECASE)
_BLOCKS = frozenset(
    "p div section article main blockquote figure figcaption dl dt dd ul ol address details summary "
    "center body html hr".split()
)
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]+)""", re.IGNORECASE)
# Whitespace containing a line break between two Han characters is an artefact of source formatting
# (CSS Text 3 removes such segment breaks); elsewhere it is one space.
_CJK_BREAK = re.compile(
    r"(?<=[\u4e00-\u9fff\u3000-\u303f\uff01-\uff60])\s*\n\s*(?=[\u4e00-\u9fff\u3000-\u303f\uff01-\uff60])"
)
_SPACES = re.compile(r"\s+")


def _chrome(tag: Tag, pattern: re.Pattern[str]) -> bool:
    if tag.attrs is None:
        return False
    names = [tag.get("id") or "", *(tag.get("class") or [])]
    return any(pattern.search(str(n)) for n in names) or tag.get("role") in (
        "navigation",
        "banner",
        "contentinfo",
    )


def _hidden(tag: Tag) -> bool:
    if tag.attrs is None:
        return False
    style = str(tag.get("style") or "").replace(" ", "").lower()
    return tag.has_attr("hidden") or tag.get("aria-hidden") == "true" or "display:none" in style


def _prune(root: Tag, inner: bool) -> None:
    """Remove non-content elements below root (in place)."""
    for tag in root.find_all(_ALWAYS_DROP):
        tag.decompose()
    pattern = _CHROME_NAME_INNER if inner else _CHROME_NAME
    chrome = ("nav", "aside") if inner else _CHROME
    total = len(root.get_text(strip=True))
    for tag in root.find_all(True):
        if tag.decomposed:
            continue
        if tag.name in chrome or _hidden(tag):
            tag.decompose()
        # A class name is weaker evidence: a wrapper called 'layout-with-sidebar' that holds most of
        # the page's text is the page, not chrome.
        elif _chrome(tag, pattern) and len(tag.get_text(strip=True)) <= 0.5 * total:
            tag.decompose()


def _main_content(soup: BeautifulSoup) -> tuple[Tag, bool]:
    """The element holding the page's content, and whether it is an explicit main-content element."""
    candidates = soup.find_all("main") or soup.find_all(attrs={"role": "main"}) or soup.find_all("article")
    if candidates:
        # Several <article>s (a news list): take the largest; one <main>: that one.
        return max(candidates, key=lambda t: len(t.get_text())), True
    return soup.body or soup, False


def _inline(node: Tag) -> str:
    return _SPACES.sub(" ", _CJK_BREAK.sub("", node.get_text(" "))).strip()


def _render(node: Tag, out: list[str]) -> None:
    """Append node's text to out; block elements are separated by blank lines."""
    for child in node.children:
        if isinstance(child, (Comment, Doctype, ProcessingInstruction)):
            continue
        if isinstance(child, NavigableString):
            out.append(_SPACES.sub(" ", _CJK_BREAK.sub("", str(child))))
            continue
        if not isinstance(child, Tag):
            continue
        name = child.name
        if name in _HEADINGS:
            text = _inline(child)
            if text:
                out.append(f"\n\n{'#' * _HEADINGS[name]} {text}\n\n")
        elif name == "br":
            out.append("\n")
        elif name == "li":
            out.append("\n- ")
            _render(child, out)
            out.append("\n")
        elif name == "table":
            out.append("\n\n")
            for row in child.find_all("tr"):
                # Rows of nested tables are found by find_all too; skip them here, they are
                # rendered through their own cell's text.
                if row.find_parent("table") is not child:
                    continue
                cells = [_inline(c) for c in row.find_all(["td", "th"], recursive=False)]
                if any(cells):
                    out.append(" | ".join(cells) + "\n")
            out.append("\n")
        elif name == "pre":
            out.append("\n\n" + child.get_text().strip("\n") + "\n\n")
        elif name in _BLOCKS:
            out.append("\n\n")
            _render(child, out)
            out.append("\n\n")
        else:
            _render(child, out)


def html_to_text(markup: str) -> tuple[str, str]:
    """Return (main content as text, page title)."""
    soup = BeautifulSoup(markup, "lxml")
    title = _inline(soup.title) if soup.title else ""
    root, explicit = _main_content(soup)
    _prune(root, inner=explicit)
    out: list[str] = []
    _render(root, out)
    lines = [line.strip() for line in "".join(out).split("\n")]
    # Source indentation between <li> elements leaves blank lines; items of one list stay together.
    kept = [
        line
        for i, line in enumerate(lines)
        if line
        or not (_last_filled(lines, i, -1).startswith("- ") and _last_filled(lines, i, 1).startswith("- "))
    ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip(), title


def _last_filled(lines: list[str], i: int, step: int) -> str:
    """The nearest non-empty line before (step -1) or after (step 1) index i."""
    i += step
    while 0 <= i < len(lines) and not lines[i]:
        i += step
    return lines[i] if 0 <= i < len(lines) else ""


class _TooDeep(Exception):
    pass


class _DepthProbe:
    """lxml parser target that only tracks element nesting, stopping as soon as it passes the limit."""

    def __init__(self, limit: int):
        self.limit, self.depth, self.deepest = limit, 0, 0

    def start(self, tag: str, attrib: dict) -> None:
        self.depth += 1
        if self.depth > self.deepest:
            self.deepest = self.depth
            if self.deepest > self.limit:
                raise _TooDeep

    def end(self, tag: str) -> None:
        self.depth -= 1

    def data(self, text: str) -> None:
        pass

    def close(self) -> int:
        return self.deepest


def check_depth(markup: str, path: str, limit: int) -> None:
    """Raise FileSkipped when elements nest deeper than `limit`, as the HTML parser (with its implicit
    closing of <p>, <li>, ...) sees them. Checked before BeautifulSoup builds the tree: its parsing
    slows down sharply with depth (100 000 nested <div> in 1 MB never finished) and rendering below
    is recursive. One pass of lxml's C parser with no tree costs milliseconds per megabyte."""
    parser = etree.HTMLParser(target=_DepthProbe(limit), recover=True)
    try:
        parser.feed(markup)
        parser.close()
    except _TooDeep:
        raise FileSkipped(
            path, f"elements nested more than {limit} levels deep (ingest.max_html_depth)"
        ) from None
    except etree.LxmlError as e:  # recover=True makes this rare; BeautifulSoup would choke as well
        raise LoadError(path, f"unparsable HTML: {e}") from e


def load_html(path: Path, source: str, *, limits: IngestConfig | None = None) -> list[Document]:
    limits = limits or IngestConfig()
    data = read_bytes(path)
    declared = _META_CHARSET.search(data[:4096])
    markup, encoding = decode_bytes(data, str(path), declared.group(1).decode("ascii") if declared else None)
    check_depth(markup, str(path), limits.max_html_depth)
    text, title = html_to_text(markup)
    text = normalize_text(text)
    if not text:
        raise LoadError(str(path), "no text content in the HTML page (after removing navigation and scripts)")
    return [Document(text=text, source=source, meta={"format": "html", "encoding": encoding, "title": title})]
