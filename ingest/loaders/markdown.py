"""Markdown: the text as written, minus front matter; headings stay for the chunker."""

from __future__ import annotations

import re
from pathlib import Path

from ingest.clean import normalize_text
from ingest.loaders.text import read_text
from kb.config import IngestConfig
from kb.errors import FileSkipped
from kb.schema import Document

# YAML ('---') or TOML ('+++') front matter at the very top.
_FRONT_MATTER = re.compile(r"\A(?:---|\+\+\+)[ \t]*\n.*?\n(?:---|\.\.\.|\+\+\+)[ \t]*(?:\n|\Z)", re.DOTALL)
_TITLE = re.compile(r"^title\s*[:=]\s*['\"]?(.*?)['\"]?\s*$", re.MULTILINE)
# Setext headings ('Title\n=====') become ATX ('# Title'): the chunker only reads the '#' form.
# The text line must not itself be a list item, quote, table row or heading.
_SETEXT = re.compile(r"^(?![ \t]*$)(?![ \t]*[-*+>|#])([^\n]+)\n[ \t]*(=+|-+)[ \t]*$", re.MULTILINE)


def strip_front_matter(text: str) -> tuple[str, str]:
    """Return (text without front matter, its title field or '')."""
    match = _FRONT_MATTER.match(text)
    # A document may also open with a '---' rule: only 'key: value' / 'key = value' lines are front matter.
    if not match or not re.search(r"^[\w-]+\s*[:=]", match.group(0)[3:], re.MULTILINE):
        return text, ""
    title = _TITLE.search(match.group(0))
    return text[match.end() :], title.group(1) if title else ""


def _setext_to_atx(text: str) -> str:
    out = []
    in_fence = False
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and i + 1 < len(lines) and _SETEXT.match(line + "\n" + lines[i + 1]):
            level = "#" if lines[i + 1].strip()[0] == "=" else "##"
            out.append(f"{level} {line.strip()}")
            i += 2
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def load_markdown(path: Path, source: str, *, limits: IngestConfig | None = None) -> list[Document]:
    raw, encoding = read_text(path)
    body, title = strip_front_matter(raw.lstrip("\ufeff"))
    text = normalize_text(_setext_to_atx(body.replace("\r\n", "\n")))
    if not text:
        raise FileSkipped(str(path), "empty file (nothing after the front matter)")
    return [
        Document(text=text, source=source, meta={"format": "markdown", "encoding": encoding, "title": title})
    ]
