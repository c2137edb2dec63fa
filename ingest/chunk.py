"""Split Documents into Chunks: markdown headings, then paragraphs, then sentences, then characters.

Spans are honest: for every chunk, `chunk.text == doc.text[chunk.start:chunk.end]` exactly (chunk edges
sit on non-space characters, so the text is already stripped). The heading line of a section is part of
the text of the section's first chunk (it helps retrieval) simply because the span starts at the heading
line, which sits right before the body in the document; later chunks of the section carry the heading
only in `Chunk.headings`. A heading line never forms a chunk on its own.

Sizes are in characters: `end - start <= cfg.size` for every chunk. Consecutive chunks of a section share
their trailing sentences, up to `cfg.overlap` characters, so the context across a boundary is in both.
A sentence longer than `cfg.size` is cut into windows (at a comma or space when possible) that overlap by
up to `cfg.overlap` characters. Chunks shorter than `cfg.min_size` are folded into the previous chunk of
their section when that fits, else dropped, unless nothing of at least `cfg.min_size` would remain.

Heading paths: `Document.headings` is the path in effect where the text starts (a PDF page continuing a
chapter). Its levels are `Document.meta["heading_levels"]` when given, else 1..n; a '#'-line of level k
in the text replaces the path from level k down.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from kb.config import ChunkConfig
from kb.schema import Chunk, Document

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# Sentence ends: Chinese and ASCII terminators (with the closing quotes/brackets that follow them),
# an English period before whitespace, and a line break (list items, table rows, PDF lines).
_SENTENCE_END = re.compile(r"[。！？；!?;…]+[\"'”’）)\]】」』]*|\.(?=\s)|\n")
# Where a sentence longer than a chunk may be cut: the last such place in the window's second half.
_SOFT_BREAK = re.compile(r"[，,、：:）)\s]")


@dataclass
class _Atom:
    start: int
    end: int
    sticky: bool = False  # a heading line: must be followed by body text in its chunk


@dataclass
class _Section:
    headings: list[str]
    prefix: list[_Atom]  # heading lines that open the section
    start: int  # body span
    end: int


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _sections(text: str, base: list[str], levels: list[int]) -> list[_Section]:
    """Cut the text at heading lines (outside code fences)."""
    if len(levels) != len(base):
        levels = list(range(1, len(base) + 1))
    stack = list(zip(levels, base, strict=True))
    sections: list[_Section] = []
    current = _Section([t for _, t in stack], [], 0, len(text))
    pending: list[tuple[int, _Atom]] = []  # heading lines of sections that had no body yet
    in_fence = False
    pos = 0
    for line in text.split("\n"):
        line_start, pos = pos, pos + len(line) + 1
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if not match:
            continue
        current.end = line_start
        if text[current.start : current.end].strip():
            sections.append(current)
            pending = []
        level, title = len(match.group(1)), match.group(2).strip()
        stack = [(lv, t) for lv, t in stack if lv < level] + [(level, title)]
        # An empty parent heading ('# 第一章' right before '## 第一节') stays in front of its child.
        pending = [(lv, a) for lv, a in pending if lv < level]
        head = _Atom(*_trim(text, line_start, line_start + len(line)), sticky=True)
        pending.append((level, head))
        current = _Section([t for _, t in stack], [a for _, a in pending], min(pos, len(text)), len(text))
    current.end = len(text)
    if text[current.start : current.end].strip():
        sections.append(current)
    return sections


def _sentences(text: str, start: int, end: int) -> list[_Atom]:
    atoms = []
    cur = start
    for match in _SENTENCE_END.finditer(text, start, end):
        s, e = _trim(text, cur, match.end())
        if e > s:
            atoms.append(_Atom(s, e))
        cur = match.end()
    s, e = _trim(text, cur, end)
    if e > s:
        atoms.append(_Atom(s, e))
    return atoms


def _paragraphs(text: str, start: int, end: int) -> list[list[_Atom]]:
    groups = []
    cur = start
    for match in _PARAGRAPH_BREAK.finditer(text, start, end):
        groups.append(_sentences(text, cur, match.start()))
        cur = match.end()
    groups.append(_sentences(text, cur, end))
    return [g for g in groups if g]


def hard_split(text: str, start: int, end: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Cut text[start:end] into windows of at most `size` characters overlapping by up to `overlap`.

    Each cut is made after the last comma/space in the second half of the window, when there is one.
    """
    spans = []
    s, end = _trim(text, start, end)
    while s < end:
        if end - s <= size:
            spans.append((s, end))
            break
        cut = s + size
        breaks = [m.end() for m in _SOFT_BREAK.finditer(text, s + size // 2, s + size)]
        if breaks:
            cut = breaks[-1]
        ws, we = _trim(text, s, cut)
        if we > ws:
            spans.append((ws, we))
        nxt = max(cut - overlap, s + max(1, (cut - s) // 2))  # always move on by half a window or more
        s, _ = _trim(text, nxt, end)
    return spans


class _Packer:
    """Greedy packing of atoms into spans of at most `size` characters, with sentence overlap."""

    def __init__(self, text: str, size: int, overlap: int, min_size: int):
        self.text, self.size, self.overlap, self.min_size = text, size, overlap, min_size
        self.cur: list[_Atom] = []
        self.spans: list[tuple[int, int]] = []

    def _fits(self, atoms: list[_Atom], extra: list[_Atom]) -> bool:
        first = atoms[0] if atoms else extra[0]
        return extra[-1].end - first.start <= self.size

    def _flush(self) -> list[_Atom]:
        """Emit the current chunk; return the trailing sentences to carry into the next one."""
        cur, self.cur = self.cur, []
        if not cur or all(a.sticky for a in cur):
            return []  # a heading line alone is not a chunk
        self.spans.append((cur[0].start, cur[-1].end))
        carry: list[_Atom] = []
        for atom in reversed(cur[1:]):  # never the whole chunk: the next one would contain it
            if atom.sticky or cur[-1].end - atom.start > self.overlap:
                break
            carry.insert(0, atom)
        return carry

    def _start(self, carry: list[_Atom], atoms: list[_Atom]) -> None:
        while carry and not self._fits(carry, atoms):
            carry = carry[1:]
        self.cur = carry + atoms

    def _waiting(self) -> bool:
        """Only heading lines so far: they must stay with the text that follows."""
        return bool(self.cur) and all(a.sticky for a in self.cur)

    def add_paragraph(self, group: list[_Atom]) -> None:
        if self.cur and self._fits(self.cur, group):
            self.cur += group
        elif not self._waiting() and self._fits([], group):
            self._start(self._flush(), group)
        else:
            for atom in group:
                self.add_sentence(atom)

    def add_sentence(self, atom: _Atom) -> None:
        if atom.end - atom.start > self.size:
            # Heading lines waiting for body text, or a fragment too short to stand alone, go in front
            # of the first window instead of becoming a chunk of their own.
            if self.cur and (self._waiting() or self.cur[-1].end - self.cur[0].start < self.min_size):
                start = self.cur[0].start
            else:
                start = atom.start
                self._flush()
            self.cur = []
            self.spans += hard_split(self.text, start, atom.end, self.size, self.overlap)
        elif self._fits(self.cur, [atom]):
            self.cur.append(atom)
        else:
            self._start(self._flush(), [atom])

    def finish(self) -> list[tuple[int, int]]:
        self._flush()
        return self.spans


def _merge_small(spans: list[tuple[int, int]], size: int, min_size: int) -> list[tuple[int, int]]:
    """Fold a chunk shorter than min_size into the chunk before it when the result still fits."""
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if out and e - s < min_size and e - out[-1][0] <= size:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def chunk_id(source: str, page: int | None, start: int, text: str) -> str:
    key = f"{source}|{'' if page is None else page}|{start}|{text}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def chunk_document(doc: Document, cfg: ChunkConfig) -> list[Chunk]:
    """Chunks of one Document, in text order."""
    text = doc.text
    pieces: list[tuple[list[str], int, int]] = []
    for section in _sections(text, list(doc.headings), list(doc.meta.get("heading_levels") or [])):
        groups = _paragraphs(text, section.start, section.end)
        if not groups:
            continue
        groups[0] = section.prefix + groups[0]
        packer = _Packer(text, cfg.size, cfg.overlap, cfg.min_size)
        for group in groups:
            packer.add_paragraph(group)
        spans = _merge_small(packer.finish(), cfg.size, cfg.min_size)
        pieces += [(section.headings, s, e) for s, e in spans]
    # Drop fragments below min_size, but never a document's last remaining text.
    if any(e - s >= cfg.min_size for _, s, e in pieces):
        pieces = [p for p in pieces if p[2] - p[1] >= cfg.min_size]
    chunks = []
    for headings, s, e in pieces:
        body = text[s:e]
        chunks.append(
            Chunk(
                id=chunk_id(doc.source, doc.page, s, body),
                text=body,
                source=doc.source,
                page=doc.page,
                headings=list(headings),
                start=s,
                end=e,
                hash=hashlib.sha1(body.encode("utf-8")).hexdigest(),
            )
        )
    return chunks


def chunk_documents(docs: list[Document], cfg: ChunkConfig) -> list[Chunk]:
    """Chunks of all documents, in order."""
    return [chunk for doc in docs for chunk in chunk_document(doc, cfg)]
