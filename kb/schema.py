"""Plain records passed between the flows: Document → Chunk → Hit → Answer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Document:
    """One loaded unit of text: a whole file, or one page of a PDF."""

    text: str
    source: str  # path relative to the ingested root, '/' separated
    page: int | None = None  # 1-based page for paged formats
    headings: list[str] = field(default_factory=list)  # heading path above the text, outermost first
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Chunk:
    id: str  # stable: sha1 of (source, page, start, text)
    text: str
    source: str
    page: int | None
    headings: list[str]
    start: int  # character span inside its Document's text
    end: int
    hash: str  # sha1 of text
    departments: list[str] = field(default_factory=list)  # who may see it; empty = everyone

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hit:
    chunk: Chunk
    score: float  # fused score used for ranking
    dense: float | None = None  # cosine similarity, when the dense side found it
    keyword: float | None = None  # BM25 score, when the keyword side found it

    def to_dict(self) -> dict[str, Any]:
        c = self.chunk
        return {
            "chunk_id": c.id,
            "source": c.source,
            "page": c.page,
            "heading": " > ".join(c.headings),
            "score": round(self.score, 6),
            "dense": None if self.dense is None else round(self.dense, 6),
            "keyword": None if self.keyword is None else round(self.keyword, 6),
            "text": c.text,
            "departments": list(c.departments),
        }


@dataclass
class Citation:
    n: int
    source: str
    page: int | None
    chunk_id: str
    text: str
    heading: str = ""
    departments: list[str] = field(default_factory=list)


@dataclass
class Answer:
    answer: str
    citations: list[Citation]
    refused: bool
    seconds: float
    hits: list[Hit] = field(default_factory=list)  # what retrieval returned, cited or not
    why: str = ""  # why it refused, for logs and evaluation reports

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "citations": [asdict(c) for c in self.citations],
            "refused": self.refused,
            "seconds": round(self.seconds, 3),
            **({"why": self.why} if self.why else {}),
        }
