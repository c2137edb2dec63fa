"""Index type by size, the manifest record, in-place updates, selectors and recall, on small sizes."""

import faiss
import numpy as np
import pytest

from kb.config import IndexConfig
from kb.errors import ConfigError
from kb.schema import Chunk
from kb.store import FileRecord, Store, Writer
from kb.store import faiss_index as fi

DIM = 16
MANIFEST = {"embedder": {"name": "test", "dim": DIM}, "chunk": {}}


def clustered(n: int, dim: int = DIM, centres: int = 20, seed: int = 0) -> np.ndarray:
    """Unit vectors around random centres: like embeddings, neighbours are close and topics separate."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _put(w: Writer, source: str, vecs: np.ndarray, sha: str = "") -> None:
    chunks = [
        Chunk(
            id=f"{source}-{i}",
            text=f"{source} t{i}",
            source=source,
            page=None,
            headings=[],
            start=0,
            end=1,
            hash="",
        )
        for i in range(len(vecs))
    ]
    toks = [c.text.split() for c in chunks]
    w.put_file(FileRecord(source, sha or "sha-" + source, 1, len(chunks), 0.0), chunks, vecs, toks)


def test_choose_type_switches_at_threshold():
    cfg = IndexConfig(flat_max=100)
    assert fi.choose_type(100, cfg) == "flat"
    assert fi.choose_type(101, cfg) == "ivf"
    assert fi.choose_type(101, IndexConfig(flat_max=100, large="hnsw")) == "hnsw"
    assert fi.choose_type(5, IndexConfig(type="hnsw")) == "hnsw"
    with pytest.raises(ConfigError, match="index.type"):
        fi.choose_type(5, IndexConfig(type="lsh"))


def test_nlist_leaves_enough_training_points():
    assert fi.nlist_for(1_000_000, IndexConfig()) == 2000
    assert fi.nlist_for(390, IndexConfig()) == 10  # 2·√390 = 39 cells would get 10 points each
    assert fi.nlist_for(1000, IndexConfig(ivf_nlist=8)) == 8


def test_commit_records_type_and_switches_with_size_then_updates_in_place(tmp_path):
    cfg = IndexConfig(flat_max=100, ivf_nprobe=4)
    vecs = clustered(800)
    with Writer(tmp_path) as w:
        _put(w, "a.md", vecs[:80])
        w.commit(MANIFEST, index=cfg)
    s = Store.open(tmp_path)
    assert s.manifest["index"]["type"] == "flat" and s.manifest["index"]["built"] == "full"

    with Writer(tmp_path) as w:  # grows past flat_max: the type changes, so a full build
        _put(w, "b.md", vecs[80:500])
        w.commit(MANIFEST, index=cfg)
    s.refresh()
    info = s.manifest["index"]
    assert info["type"] == "ivf" and info["built"] == "full" and info["nprobe"] == 4
    assert info["nlist"] == fi.nlist_for(500, cfg) and info["trained_on"] == 500
    assert len(s) == 500

    b_rows = {r for r, _ in s.search_vectors(vecs[100], 5)}
    with Writer(tmp_path) as w:  # b.md changed: its rows leave, new ones come, the ivf is updated
        _put(w, "b.md", vecs[500:800], sha="changed")
        w.commit(MANIFEST, index=cfg)
    s.refresh()
    assert (
        s.manifest["index"]["built"] == "incremental"
        and s.manifest["index"]["keyword_built"] == "incremental"
    )
    assert len(s) == 380 and s.manifest["stats"]["chunks"] == 380
    rows_now = {c_row for c_row in s.chunks(list(range(1, 1000)))}
    assert not b_rows & rows_now  # the old b.md rows are gone from the store ...
    ((top, score),) = s.search_vectors(vecs[650], 1)
    assert (
        score == pytest.approx(1.0, abs=1e-5) and s.chunks([top])[top].id == "b.md-150"
    )  # ... new ones found
    assert all(r in rows_now for r, _ in s.search_vectors(vecs[100], 10))
    assert s.keyword.search("b.md t150", 1)[0][0] == top
    with Writer(tmp_path) as w:  # shrinking past retrain_growth retrains the cells
        w.delete_file("b.md")
        w.commit(MANIFEST, index=cfg)
    s.refresh()
    assert s.manifest["index"]["type"] == "flat" and len(s) == 80
    assert s.keyword.search("b.md t150", 1) == []


def test_hnsw_rebuilds_on_delete(tmp_path):
    cfg = IndexConfig(type="hnsw", hnsw_m=8)
    vecs = clustered(60)
    with Writer(tmp_path) as w:
        _put(w, "a.md", vecs[:30])
        _put(w, "b.md", vecs[30:50])
        w.commit(MANIFEST, index=cfg)
    with Writer(tmp_path) as w:
        _put(w, "c.md", vecs[50:])
        w.commit(MANIFEST, index=cfg)
    s = Store.open(tmp_path)
    assert s.manifest["index"]["type"] == "hnsw" and s.manifest["index"]["built"] == "incremental"
    with Writer(tmp_path) as w:
        w.delete_file("a.md")
        w.commit(MANIFEST, index=cfg)
    s.refresh()
    assert s.manifest["index"]["built"] == "full" and len(s) == 30


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_search_params_take_an_id_selector(kind):
    vecs = clustered(400)
    ids = np.arange(1000, 1400, dtype=np.int64)
    index, info = fi.build(vecs, ids, IndexConfig(ivf_nprobe=64), kind=kind)
    allowed = ids[::2]
    sel = faiss.IDSelectorBatch(allowed)
    _, found = index.search(vecs[:5], 10, params=fi.search_params(info, sel=sel))
    assert found.size and set(found[found >= 0].tolist()) <= set(allowed.tolist())
    _, unfiltered = index.search(vecs[1:2], 1, params=fi.search_params(info))
    assert unfiltered[0, 0] == 1001  # without a selector, the odd id (the query itself) comes first


def test_recall_at_k_counts_overlap():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, -1], [5, 6, 7, 8]])
    assert fi.recall_at_k(found, truth) == pytest.approx(6 / 8)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_at_10_meets_target(kind):
    vecs = clustered(8000, dim=32, centres=50)
    rng = np.random.default_rng(1)
    queries = vecs[rng.integers(0, len(vecs), 100)] + 0.05 * rng.normal(size=(100, 32)).astype(np.float32)
    cfg = IndexConfig()
    index, info = fi.build(vecs, np.arange(len(vecs)), cfg, kind=kind)
    _, found = index.search(queries, 10, params=fi.search_params(info))
    recall = fi.recall_at_k(found, fi.exact_neighbours(vecs, queries, 10))
    assert recall >= 0.95
    # and the same index with too little search effort misses neighbours: the check can fail
    weak = {**info, "nprobe": 1, "ef_search": 10}
    _, found_weak = index.search(queries, 10, params=fi.search_params(weak))
    assert fi.recall_at_k(found_weak, fi.exact_neighbours(vecs, queries, 10)) < recall


def test_generation_without_term_counts_still_searches_and_next_commit_rebuilds(tmp_path):
    vecs = clustered(20)
    with Writer(tmp_path) as w:
        _put(w, "a.md", vecs[:10])
        gen = w.commit(MANIFEST)
    for f in (tmp_path / "generations" / str(gen)).glob("bm25_*"):
        f.unlink()  # as a generation written before term counts were stored
    s = Store.open(tmp_path)
    assert s.keyword.search("a.md t3", 1)[0][0] in s.chunks(list(range(1, 11)))
    with Writer(tmp_path) as w:
        _put(w, "b.md", vecs[10:])
        w.commit(MANIFEST)
    s.refresh()
    assert s.manifest["index"]["keyword_built"] == "full" and len(s.keyword) == 20
