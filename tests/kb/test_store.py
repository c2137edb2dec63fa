import multiprocessing as mp

import numpy as np
import pytest

from kb.errors import EmptyKnowledgeBase, IngestLocked
from kb.schema import Chunk
from kb.store import FileRecord, Store, Writer

MANIFEST = {"embedder": {"name": "test", "dim": 4}, "chunk": {}}


def _chunk(source: str, i: int, text: str) -> Chunk:
    return Chunk(
        id=f"{source}-{i}",
        text=text,
        source=source,
        page=None,
        headings=["H"],
        start=0,
        end=len(text),
        hash=str(hash(text)),
    )


def _put(w: Writer, source: str, texts: list[str], vecs: np.ndarray) -> None:
    chunks = [_chunk(source, i, t) for i, t in enumerate(texts)]
    w.put_file(
        FileRecord(source, "sha-" + source, 1, len(chunks), 0.0), chunks, vecs, [t.split() for t in texts]
    )


def test_empty_kb_raises(tmp_path):
    with pytest.raises(EmptyKnowledgeBase):
        Store.open(tmp_path)


def test_commit_then_read(tmp_path):
    with Writer(tmp_path) as w:
        _put(w, "a.md", ["alpha beta", "gamma"], np.eye(4, dtype=np.float32)[:2])
        gen = w.commit(MANIFEST)
    s = Store.open(tmp_path)
    assert s.generation == gen and len(s) == 2
    ((row, score),) = s.search_vectors(np.array([1, 0, 0, 0], np.float32), 1)
    assert s.chunks([row])[row].text == "alpha beta" and score == pytest.approx(1.0)
    assert s.keyword.search("gamma", 1)[0][0] in s.chunks(list(range(1, 3)))
    assert [f.source for f in s.files()] == ["a.md"]


def test_uncommitted_generation_is_invisible_and_abort_keeps_previous(tmp_path):
    with Writer(tmp_path) as w:
        _put(w, "a.md", ["one"], np.eye(4, dtype=np.float32)[:1])
        w.commit(MANIFEST)
    reader = Store.open(tmp_path)
    w = Writer(tmp_path)
    w.delete_file("a.md")
    _put(w, "b.md", ["two"], np.eye(4, dtype=np.float32)[1:2])
    assert reader.refresh() is False and [c.text for c in reader.iter_chunks()] == ["one"]
    w.abort()
    assert [c.text for c in Store.open(tmp_path).iter_chunks()] == ["one"]
    assert not [p for p in (tmp_path / "generations").iterdir() if p.name.startswith(".")]


def test_refresh_follows_new_generation_and_prunes(tmp_path):
    for i in range(4):
        with Writer(tmp_path) as w:
            _put(w, "a.md", [f"v{i}"], np.eye(4, dtype=np.float32)[:1])
            w.commit(MANIFEST, keep=2)
    s = Store.open(tmp_path)
    assert [c.text for c in s.iter_chunks()] == ["v3"]
    assert sorted(p.name for p in (tmp_path / "generations").iterdir()) == ["3", "4"]


def _hold_lock(path, ready, release):
    w = Writer(path)
    ready.set()
    release.wait(10)
    w.abort()


def test_second_writer_is_refused_clearly(tmp_path):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    p.start()
    try:
        assert ready.wait(10)
        with pytest.raises(IngestLocked, match="another ingest"):
            Writer(tmp_path)
    finally:
        release.set()
        p.join(10)
    Writer(tmp_path).abort()  # free again once the holder is gone
