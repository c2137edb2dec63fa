"""The store contract, run against both backends (FAISS + SQLite, Milvus Lite)."""

from __future__ import annotations

import numpy as np
import pytest

from kb.config import StoreConfig
from kb.errors import EmptyKnowledgeBase, IngestLocked, StoreError
from kb.schema import Chunk
from kb.store import FileRecord, Store, Writer
from kb.store.base import backend_classes

DIM = 8
MANIFEST = {"embedder": {"name": "test", "dim": DIM}, "chunk": {}}


def unit(*xs: float) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def chunk(
    source: str, i: int, text: str, departments: list[str] | None = None, page: int | None = None
) -> Chunk:
    return Chunk(
        id=f"{source}#{i}",
        text=text,
        source=source,
        page=page,
        headings=["Top", "子节"],
        start=10 * i,
        end=10 * i + len(text),
        hash=f"h-{text}",
        departments=departments or [],
    )


def put(w: Writer, source: str, texts: list[str], vecs: list[np.ndarray], **kw) -> list[Chunk]:
    chunks = [chunk(source, i, t, **kw) for i, t in enumerate(texts)]
    w.put_file(
        FileRecord(source, "sha-" + source, 100, len(chunks), 1.5),
        chunks,
        np.vstack(vecs),
        [t.split() for t in texts],
    )
    return chunks


def build(path, store_cfg, files: dict[str, tuple[list[str], list[np.ndarray]]], keep: int = 2) -> int:
    with Writer(path, store=store_cfg) as w:
        for source, (texts, vecs) in files.items():
            put(w, source, texts, vecs)
        return w.commit(MANIFEST, keep=keep)


def ids(store: Store, hits: list[tuple[int, float]]) -> list[str]:
    by_row = store.chunks([r for r, _ in hits])
    return [by_row[r].id for r, _ in hits]


def test_empty_kb_raises(tmp_path, store_cfg):
    with pytest.raises(EmptyKnowledgeBase):
        Store.open(tmp_path)
    with Writer(tmp_path, store=store_cfg) as w:
        put(w, "a.md", ["never committed"], [unit(1)])
    with pytest.raises(EmptyKnowledgeBase):  # the aborted writer left nothing live
        Store.open(tmp_path)


def test_round_trip(tmp_path, store_cfg, backend):
    vecs = [unit(1, 0.5), unit(0, 1), unit(0.3, 0, 1)]
    with Writer(tmp_path, store=store_cfg) as w:
        assert w.backend == backend
        written = put(w, "docs/a.md", ["alpha beta", "年假 十天", "gamma"], vecs, page=3)
        put(w, "b.txt", ["delta"], [unit(0, 0, 0, 1)], departments=["hr"])
        gen = w.commit(MANIFEST)
    s = Store.open(tmp_path)
    assert isinstance(s, backend_classes(backend)[0]) and s.manifest["store"]["backend"] == backend
    assert s.generation == gen and len(s) == 4
    assert [(f.source, f.sha256, f.size, f.n_chunks, f.ingested_at) for f in s.files()] == [
        ("b.txt", "sha-b.txt", 100, 1, 1.5),
        ("docs/a.md", "sha-docs/a.md", 100, 3, 1.5),
    ]
    assert s.iter_chunks("docs/a.md") == written  # every field, order kept
    assert [c.id for c in s.iter_chunks()] == ["docs/a.md#0", "docs/a.md#1", "docs/a.md#2", "b.txt#0"]
    assert s.chunk_by_id("b.txt#0").departments == ["hr"] and s.chunk_by_id("nope") is None
    rows = [r for r, _ in s.search_vectors(unit(1, 0.5), 4)]
    got = s.vectors(rows)
    by_id = dict(zip(ids(s, [(r, 0) for r in rows]), rows, strict=True))
    np.testing.assert_allclose(got[by_id["docs/a.md#1"]], vecs[1], rtol=1e-6)
    assert s.chunks(rows)[by_id["docs/a.md#0"]] == written[0]
    (kw_row, _), *_ = s.keyword.search("gamma", 3)
    assert s.chunks([kw_row])[kw_row].text == "gamma"


def test_search_order_and_scores(tmp_path, store_cfg):
    vecs = [unit(1, 0.1), unit(1, 1), unit(0, 1), unit(1, -1), unit(-1, 0.2)]
    build(tmp_path, store_cfg, {"a.md": ([f"t{i}" for i in range(5)], vecs)})
    s = Store.open(tmp_path)
    q = unit(1, 0.4)
    expected = sorted(range(5), key=lambda i: -float(vecs[i] @ q))
    hits = s.search_vectors(q, 3)
    assert ids(s, hits) == [f"a.md#{i}" for i in expected[:3]]
    np.testing.assert_allclose([sc for _, sc in hits], [float(vecs[i] @ q) for i in expected[:3]], rtol=1e-5)
    assert len(s.search_vectors(q, 50)) == 5  # k above the size: everything, once


def test_update_replaces_file_and_readers_keep_their_generation(tmp_path, store_cfg):
    build(
        tmp_path,
        store_cfg,
        {"a.md": (["old one", "old two"], [unit(1), unit(0, 1)]), "b.md": (["bee"], [unit(0, 0, 1)])},
    )
    old_reader = Store.open(tmp_path)
    with Writer(tmp_path, store=store_cfg) as w:
        assert w.file_record("a.md").n_chunks == 2 and w.sources() == {"a.md", "b.md"}
        put(w, "a.md", ["new"], [unit(1, 0.2)])
        during = Store.open(tmp_path)  # opened while the writer works: sees the committed generation
        assert {c.text for c in during.iter_chunks()} == {"old one", "old two", "bee"}
        assert ids(during, during.search_vectors(unit(1), 1)) == ["a.md#0"]
        w.commit(MANIFEST)
    assert {c.text for c in old_reader.iter_chunks()} == {"old one", "old two", "bee"}
    assert old_reader.refresh() is True and old_reader.refresh() is False
    assert [c.text for c in old_reader.iter_chunks()] == ["bee", "new"]
    assert len(old_reader) == 2 and [f.n_chunks for f in old_reader.files()] == [1, 1]
    hits = old_reader.search_vectors(unit(1), 5)
    assert [old_reader.chunks([r])[r].text for r, _ in hits] == ["new", "bee"]
    assert not old_reader.keyword.search("old", 5)


def test_delete_file(tmp_path, store_cfg):
    build(tmp_path, store_cfg, {"a.md": (["apple"], [unit(1)]), "b.md": (["banana"], [unit(0, 1)])})
    with Writer(tmp_path, store=store_cfg) as w:
        w.delete_file("a.md")
        assert w.sources() == {"b.md"}
        w.commit(MANIFEST)
    s = Store.open(tmp_path)
    assert [f.source for f in s.files()] == ["b.md"] and len(s) == 1
    assert ids(s, s.search_vectors(unit(1), 5)) == ["b.md#0"]
    assert s.chunk_by_id("a.md#0") is None and s.keyword.search("apple", 5) == []


def test_put_twice_in_one_writer_keeps_the_last(tmp_path, store_cfg):
    with Writer(tmp_path, store=store_cfg) as w:
        put(w, "a.md", ["first"], [unit(1)])
        put(w, "a.md", ["second", "third"], [unit(1), unit(0, 1)])
        w.commit(MANIFEST)
    s = Store.open(tmp_path)
    assert [c.text for c in s.iter_chunks()] == ["second", "third"]
    assert len(s.search_vectors(unit(1), 10)) == 2


def test_abort_keeps_previous_and_next_writer_starts_clean(tmp_path, store_cfg):
    build(tmp_path, store_cfg, {"a.md": (["one"], [unit(1)])})
    w = Writer(tmp_path, store=store_cfg)
    w.delete_file("a.md")
    put(w, "b.md", ["two"] * 3, [unit(0, 1)] * 3)
    w.abort()
    s = Store.open(tmp_path)
    assert [c.text for c in s.iter_chunks()] == ["one"] and ids(s, s.search_vectors(unit(0, 1), 5)) == [
        "a.md#0"
    ]
    assert not [p for p in (tmp_path / "generations").iterdir() if p.name.startswith(".")]
    build(tmp_path, store_cfg, {"c.md": (["three"], [unit(0, 0, 1)])})
    assert s.refresh() and sorted(c.text for c in s.iter_chunks()) == ["one", "three"]
    assert len(s.search_vectors(unit(0, 1), 5)) == 2


def test_refresh_follows_and_prunes(tmp_path, store_cfg):
    for i in range(4):
        build(tmp_path, store_cfg, {"a.md": ([f"v{i}"], [unit(1, i)])}, keep=2)
    s = Store.open(tmp_path)
    assert [c.text for c in s.iter_chunks()] == ["v3"] and len(s.search_vectors(unit(1), 10)) == 1
    assert sorted(p.name for p in (tmp_path / "generations").iterdir()) == ["3", "4"]


def test_access_filter_inside_the_search(tmp_path, store_cfg, backend):
    with Writer(tmp_path, store=store_cfg) as w:
        put(w, "secret.md", ["hr1", "hr2"], [unit(1, 0.01), unit(1, 0.02)], departments=["hr"])
        put(w, "mixed.md", ["itfin"], [unit(1, 0.03)], departments=["it", "fin"])
        put(w, "odd.md", ["odd"], [unit(1, 0.04)], departments=['r_d "x"', "50%"])
        put(w, "public.md", ["pub1", "pub2"], [unit(1, 0.5), unit(0, 1)])
        w.commit(MANIFEST)
    s = Store.open(tmp_path)
    q = unit(1)

    def texts(deps, k=10):
        hits = s.search_vectors(q, k, departments=deps)
        return [s.chunks([r])[r].text for r, _ in hits]

    # Milvus spells the filter two ways (array functions on a server, LIKE on Milvus Lite): both must agree.
    for array_ops in [True, False] if backend == "milvus" else [None]:
        s.array_ops = array_ops
        assert texts(None) == ["hr1", "hr2", "itfin", "odd", "pub1", "pub2"]
        assert texts(frozenset()) == ["pub1", "pub2"]
        assert texts(frozenset({"hr"})) == ["hr1", "hr2", "pub1", "pub2"]
        assert texts(frozenset({"fin", "legal"})) == ["itfin", "pub1", "pub2"]
        assert texts(frozenset({"legal"}), k=2) == ["pub1", "pub2"]  # top k filled with visible chunks
        assert texts(frozenset({"it"}), k=2) == ["itfin", "pub1"]
        assert texts(frozenset({'r_d "x"'}), k=2) == ["odd", "pub1"]
        # LIKE wildcards in names match only themselves
        assert texts(frozenset({'rXd "x"', "5%", "50"}), k=2) == ["pub1", "pub2"]


def test_export_gives_back_what_was_put(tmp_path, store_cfg):
    vecs = [unit(1, 2), unit(3, 1)]
    with Writer(tmp_path, store=store_cfg) as w:
        written = put(w, "a.md", ["x y", "z"], vecs, departments=["hr"])
        w.commit(MANIFEST)
    ((record, chunks, vectors, tokens),) = list(Store.open(tmp_path).export())
    assert record.source == "a.md" and chunks == written and tokens == [["x", "y"], ["z"]]
    np.testing.assert_allclose(vectors, np.vstack(vecs), rtol=1e-6)


def test_second_writer_is_refused(tmp_path, store_cfg):
    w = Writer(tmp_path, store=store_cfg)
    try:
        with pytest.raises(IngestLocked, match="another ingest"):
            Writer(tmp_path, store=store_cfg)
    finally:
        w.abort()
    Writer(tmp_path, store=store_cfg).abort()


def test_other_backend_than_the_data_is_refused(tmp_path, store_cfg, backend):
    build(tmp_path, store_cfg, {"a.md": (["one"], [unit(1)])})
    other = "milvus" if backend == "faiss" else "faiss"
    with pytest.raises(StoreError, match=f"kb migrate --to {other}"):
        Writer(tmp_path, store=StoreConfig(backend=other))
    with Writer(tmp_path, store=StoreConfig()) as w:  # "" follows the knowledge base
        assert w.backend == backend
