"""Chunking: honest spans, sizes, overlap, heading paths, Chinese sentence splits, stable ids."""

from __future__ import annotations

import hashlib
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.chunk import chunk_document, chunk_documents, hard_split
from kb.config import ChunkConfig
from kb.schema import Chunk, Document

CN_SENTENCES = [
    "员工入职满一年后享有十天带薪年假。",
    "年假最多可以累积到下一年的三月三十一日！",
    "病假需要提供医院证明吗？",
    "需要；每年带薪病假为五天。",
    "婚假为十三天，须在领证后一年内休完。",
    "产假按国家规定执行，陪产假十五天。",
]


def check_spans(doc: Document, chunks: list[Chunk], cfg: ChunkConfig) -> None:
    for c in chunks:
        assert c.text == doc.text[c.start : c.end]
        assert c.text == c.text.strip() and c.text
        assert c.end - c.start <= cfg.size
        assert c.source == doc.source and c.page == doc.page
        assert c.hash == hashlib.sha1(c.text.encode()).hexdigest()
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)


def test_spans_and_sizes_chinese() -> None:
    text = "\n\n".join("".join(CN_SENTENCES[i:] + CN_SENTENCES[:i]) for i in range(6))
    doc = Document(text=text, source="hr/leave.txt")
    cfg = ChunkConfig(size=60, overlap=20)
    chunks = chunk_document(doc, cfg)
    check_spans(doc, chunks, cfg)
    assert len(chunks) > 5
    # Chinese sentence ends: every chunk ends at one (no sentence here is longer than a chunk).
    assert all(c.text[-1] in "。！？；" for c in chunks)


def test_sentence_split_points() -> None:
    text = "".join(CN_SENTENCES)
    cfg = ChunkConfig(size=50, overlap=0, min_size=1)
    chunks = chunk_document(Document(text=text, source="a.txt"), cfg)
    pieces = re.findall(r".+?[。！？；]", text)
    for c in chunks:
        # Each chunk is a run of whole sentences.
        assert re.fullmatch(r"(?:.+?[。！？；])+", c.text)
        assert c.text.startswith(tuple(pieces))
    assert "".join(c.text for c in chunks) == text  # no overlap asked: a partition


def test_english_sentences() -> None:
    text = " ".join(f"Sentence number {i} is about the VPN client. It has e.g. details." for i in range(20))
    cfg = ChunkConfig(size=120, overlap=30)
    chunks = chunk_document(Document(text=text, source="vpn.md"), cfg)
    check_spans(Document(text=text, source="vpn.md"), chunks, cfg)
    assert all(c.text.endswith(".") for c in chunks)


def test_overlap_carries_trailing_sentences() -> None:
    sentences = [f"第{i}句话的内容在这里。" for i in range(30)]  # 10-11 characters each
    text = "".join(sentences)
    cfg = ChunkConfig(size=60, overlap=25)
    chunks = chunk_document(Document(text=text, source="a.txt"), cfg)
    assert len(chunks) > 3
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        shared = prev.end - nxt.start
        assert 0 < shared <= cfg.overlap, "neighbours share their boundary sentences"
        assert nxt.text.startswith(text[nxt.start : prev.end])
        assert text[nxt.start - 1] == "。", "the overlap starts at a sentence boundary"


def test_paragraphs_kept_whole_when_they_fit() -> None:
    paras = ["甲" * 30 + "。", "乙" * 30 + "。", "丙" * 30 + "。"]
    text = "\n\n".join(paras)
    chunks = chunk_document(Document(text=text, source="a.txt"), ChunkConfig(size=70, overlap=10))
    assert [c.text for c in chunks] == [paras[0] + "\n\n" + paras[1], paras[2]]


def test_long_sentence_is_hard_split() -> None:
    text = "前言。" + "很长的句子没有句号，" * 40 + "结束。"
    doc = Document(text=text, source="a.txt")
    cfg = ChunkConfig(size=50, overlap=10)
    chunks = chunk_document(doc, cfg)
    check_spans(doc, chunks, cfg)
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert covered >= {i for i, ch in enumerate(text) if not ch.isspace()}
    # Cuts prefer a comma.
    assert sum(c.text.endswith("，") for c in chunks) >= len(chunks) - 3


def test_hard_split_windows() -> None:
    text = "x" * 250
    spans = hard_split(text, 0, len(text), 100, 20)
    assert spans[0] == (0, 100) and spans[-1][1] == 250
    assert all(e - s <= 100 for s, e in spans)
    assert all(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), "windows overlap"


def test_heading_paths_and_heading_prefix() -> None:
    text = (
        "前言：本手册说明公司制度。\n\n"
        "# 第一章 总则\n## 第一节 目的\n为了规范管理，制定本制度。\n\n"
        "## 第二节 范围\n本制度适用于全体员工。\n\n"
        "# 第二章 考勤\n员工应按时打卡。\n"
        "```\n# 代码注释不是标题\n```\n"
    )
    doc = Document(text=text, source="a.md")
    chunks = chunk_document(doc, ChunkConfig(size=400, overlap=0, min_size=1))
    check_spans(doc, chunks, ChunkConfig(size=400))
    assert [c.headings for c in chunks] == [
        [],
        ["第一章 总则", "第一节 目的"],
        ["第一章 总则", "第二节 范围"],
        ["第二章 考勤"],
    ]
    # The heading lines open their section's first chunk (the empty chapter line stays with its child).
    assert chunks[1].text.startswith("# 第一章 总则\n## 第一节 目的\n为了规范管理")
    assert chunks[2].text.startswith("## 第二节 范围\n")
    assert "# 代码注释不是标题" in chunks[3].text
    assert not any(re.fullmatch(r"#+ .*", c.text) for c in chunks), "no chunk is a bare heading"


def test_heading_only_in_first_chunk_of_section() -> None:
    body = "".join(CN_SENTENCES) * 3
    text = f"# 休假\n{body}"
    chunks = chunk_document(Document(text=text, source="a.md"), ChunkConfig(size=80, overlap=20))
    assert chunks[0].text.startswith("# 休假\n")
    assert all(not c.text.startswith("#") for c in chunks[1:])
    assert all(c.headings == ["休假"] for c in chunks)


def test_document_headings_are_the_starting_path() -> None:
    doc = Document(
        text="续上页的内容。\n## 第二节 范围\n适用于全体员工。\n# 第二章 考勤\n按时打卡。",
        source="a.pdf",
        page=2,
        headings=["第一章 总则", "第一节 目的"],
        meta={"heading_levels": [1, 2]},
    )
    chunks = chunk_document(doc, ChunkConfig(size=400, overlap=0, min_size=1))
    assert [c.headings for c in chunks] == [
        ["第一章 总则", "第一节 目的"],
        ["第一章 总则", "第二节 范围"],
        ["第二章 考勤"],
    ]
    assert all(c.page == 2 for c in chunks)


def test_min_size_drops_fragments_but_not_the_only_chunk() -> None:
    cfg = ChunkConfig(size=100, overlap=0, min_size=10)
    tiny = Document(text="短。", source="a.txt")
    assert [c.text for c in chunk_document(tiny, cfg)] == ["短。"]
    doc = Document(text="# 甲\n" + "正文内容足够长的一段话。" * 3 + "\n# 乙\n短。", source="b.md")
    chunks = chunk_document(doc, cfg)
    # '# 乙\n短。' is 6 characters, below min_size, and cannot join a chunk under another heading.
    assert [c.headings for c in chunks] == [["甲"]]
    # Within a section, a short tail is folded into the chunk before it when that still fits.
    doc = Document(text="正文内容足够长的一段话。" * 3 + "\n\n短。", source="c.txt")
    assert [c.text for c in chunk_document(doc, cfg)] == [doc.text]


def test_ids_stable_and_distinct() -> None:
    docs = [
        Document(text="".join(CN_SENTENCES) * 4, source="a.txt"),
        Document(text="".join(CN_SENTENCES) * 4, source="b.pdf", page=3),
    ]
    cfg = ChunkConfig(size=80, overlap=20)
    first, second = chunk_documents(docs, cfg), chunk_documents(docs, cfg)
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)
    c = first[-1]
    expected = hashlib.sha1(f"{c.source}|{c.page}|{c.start}|{c.text}".encode()).hexdigest()[:16]
    assert c.id == expected and len(c.id) == 16
    c0 = first[0]
    assert c0.id == hashlib.sha1(f"a.txt||{c0.start}|{c0.text}".encode()).hexdigest()[:16]


def test_empty_and_whitespace_documents() -> None:
    assert chunk_document(Document(text="", source="a.txt"), ChunkConfig()) == []
    assert chunk_document(Document(text=" \n\n ", source="a.txt"), ChunkConfig()) == []
    assert chunk_document(Document(text="# 只有标题", source="a.md"), ChunkConfig()) == []


# Random mixed text: Chinese, English words, punctuation, newlines, headings, fences.
_PIECES = st.sampled_from(
    [
        *CN_SENTENCES,
        "公司",
        "年假",
        "VPN",
        "client ",
        "The policy applies. ",
        "e.g. ",
        "。",
        "，",
        "！",
        "? ",
        ". ",
        " ",
        "\n",
        "\n\n",
        "\n# 第一章 总则\n",
        "\n## 第一节\n",
        "\n### Deep heading\n",
        "\n```\n",
        "\t",
        "x" * 70,
        "很长" * 40,
    ]
)


@settings(max_examples=150, deadline=None, database=None)
@given(
    pieces=st.lists(_PIECES, max_size=60),
    size=st.integers(min_value=50, max_value=200),
    overlap_share=st.floats(min_value=0, max_value=0.9),
)
def test_property_spans_sizes_coverage(pieces: list[str], size: int, overlap_share: float) -> None:
    text = "".join(pieces)
    cfg = ChunkConfig(size=size, overlap=int(size * overlap_share), min_size=1)
    doc = Document(text=text, source="r.md")
    chunks = chunk_document(doc, cfg)
    check_spans(doc, chunks, cfg)
    # Every non-space character outside heading lines lands in some chunk.
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    heading_chars = set()
    in_fence = False
    pos = 0
    for line in text.split("\n"):
        if line.startswith("```"):
            in_fence = not in_fence
        if not in_fence and re.match(r"#{1,6}[ \t]+\S", line):
            heading_chars.update(range(pos, pos + len(line)))
        pos += len(line) + 1
    missing = {i for i, ch in enumerate(text) if not ch.isspace()} - covered - heading_chars
    assert not missing, f"characters lost: {sorted(missing)[:10]}"
    assert chunk_document(doc, cfg) == chunks  # deterministic
