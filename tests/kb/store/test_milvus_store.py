"""What only the Milvus backend has: versioned rows, crash recovery, pruning and collections."""

from __future__ import annotations

import re

import numpy as np

from kb.config import StoreConfig
from kb.store import Store, Writer
from kb.store.base import release_write_lock

from .conftest import needs_milvus
from .test_store_conformance import MANIFEST, build, put, unit

pytestmark = needs_milvus
MILVUS = StoreConfig(backend="milvus")


def all_rows(store_or_writer) -> list[dict]:
    return store_or_writer.client.query(
        store_or_writer.collection, filter="row >= 0", output_fields=["row", "gen_from", "gen_to"]
    )


def test_crashed_writer_is_invisible_then_undone(tmp_path):
    build(tmp_path, MILVUS, {"a.md": (["one", "two"], [unit(1), unit(0, 1)])})
    w = Writer(tmp_path, store=MILVUS)
    put(w, "a.md", ["replaced"], [unit(1, 1)])  # retires the two rows of generation 1 in Milvus
    put(w, "b.md", ["new"], [unit(0, 0, 1)])
    w._flush(8)
    assert len(all_rows(w)) == 4
    release_write_lock(w._lock)  # the process dies here: no commit, no abort
    s = Store.open(tmp_path)
    assert [c.text for c in s.iter_chunks()] == ["one", "two"]
    assert sorted(s.chunks([r])[r].text for r, _ in s.search_vectors(unit(1), 10)) == ["one", "two"]
    w2 = Writer(tmp_path, store=MILVUS)  # undoes what the crashed writer left
    rows = all_rows(w2)
    assert len(rows) == 2 and all(r["gen_from"] == 1 and r["gen_to"] > 10**15 for r in rows)
    put(w2, "c.md", ["three"], [unit(0, 0, 1)])
    w2.commit(MANIFEST)
    assert s.refresh() and [c.text for c in s.iter_chunks()] == ["one", "two", "three"]


def test_prune_deletes_rows_no_kept_generation_sees(tmp_path):
    for i in range(4):
        build(tmp_path, MILVUS, {"a.md": ([f"v{i}"], [unit(1, i)])}, keep=2)
    s = Store.open(tmp_path)
    # generation 3 still sees v2 (retired by 4), generation 4 sees v3; v0 and v1 are gone
    assert sorted((r["gen_from"], r["gen_to"]) for r in all_rows(s)) == [(3, 4), (4, 2**62)]


def test_fresh_rebuild_uses_a_new_collection_and_drops_the_old(tmp_path):
    build(tmp_path, MILVUS, {"a.md": (["one"], [unit(1)])})
    first = Store.open(tmp_path).collection
    for _ in range(2):
        with Writer(tmp_path, fresh=True, store=MILVUS) as w:
            put(w, "b.md", ["other dim"], [np.ones(8, np.float32) / np.sqrt(8)])
            w.commit(MANIFEST, keep=1)
    s = Store.open(tmp_path)
    assert s.collection != first and s.client.list_collections() == [s.collection]
    assert [c.text for c in s.iter_chunks()] == ["other dim"]


def test_default_uri_is_a_lite_file_in_the_kb_and_recorded_as_such(tmp_path):
    build(tmp_path, MILVUS, {"a.md": (["one"], [unit(1)])})
    s = Store.open(tmp_path)
    assert (tmp_path / "milvus.db").exists()
    assert s.manifest["store"]["backend"] == "milvus" and s.manifest["store"]["uri"] == ""
    assert re.fullmatch(r"kb_[0-9a-f]{8}", s.manifest["store"]["collection"])  # unique per knowledge base
    assert s.collection == s.manifest["store"]["collection"] + "_g1"
