"""Department access control: the visibility rule, users, the filter inside the searches, labels at ingest."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import ingest
from kb.access import Principal, Users, check_password, hash_password, visible
from kb.config import load_config
from kb.embed.hashing import HashingEmbedder
from kb.errors import AccessError, ConfigError
from kb.keyword import BM25Index
from kb.retrieve import Retriever
from kb.store import Store
from tests.conftest import write_corpus


def test_visibility_rule() -> None:
    assert visible([], frozenset())  # public: everyone
    assert visible(["hr"], None)  # unrestricted reader
    assert visible(["hr", "it"], frozenset({"it"}))
    assert not visible(["finance"], frozenset({"it", "hr"}))
    assert not visible(["finance"], frozenset())


def test_users_file_login_token_and_wrong_password(tmp_path: Path) -> None:
    import hashlib

    f = tmp_path / "users.yaml"
    f.write_text(
        "users:\n"
        f"  alice: {{departments: [HR], password: '{hash_password('pw-a')}'}}\n"
        f"  bot: {{departments: [it], token_sha256: {hashlib.sha256(b'tok-123').hexdigest()}}}\n"
        f"  root: {{admin: true, password: '{hash_password('pw-r')}'}}\n",
        encoding="utf-8",
    )
    users = Users.load(f)
    assert users.login("alice", "pw-a") == Principal("alice", frozenset({"hr"}))
    assert users.by_token("tok-123").departments == frozenset({"it"})
    assert users.login("root", "pw-r").effective is None  # an admin is unrestricted
    for name, pw in [("alice", "pw-r"), ("nobody", "pw-a"), ("bot", "")]:
        with pytest.raises(AccessError, match="wrong user name or password"):
            users.login(name, pw)
    with pytest.raises(AccessError):
        users.by_token("tok-124")
    assert check_password("x", hash_password("x")) and not check_password("x", "sha256$bad")


def test_users_file_unknown_key_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "users.yaml"
    f.write_text("users:\n  a: {departmens: [hr]}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="departmens"):
        Users.load(f)


def test_bm25_mask_fills_k_from_allowed_rows() -> None:
    idx = BM25Index.build([10, 11, 12, 13], [["salary", "salary"], ["salary"], ["budget"], ["salary", "x"]])
    assert [r for r, _ in idx.search("salary", 2)] == [10, 11]
    mask = np.array([False, True, True, True])
    assert [r for r, _ in idx.search("salary", 2, allowed=mask)] == [11, 13]
    with pytest.raises(ValueError):
        idx.search("salary", 2, allowed=np.array([1, 0], bool))


RESTRICTED = {f"finance/salary_{i}.md": f"薪资 工资 预算 salary budget table {i}\n" for i in range(12)}
PUBLIC = {f"general/note_{i}.md": f"salary day is the 10th; note {i}\n" for i in range(4)}


def _kb(tmp_path: Path, folders: dict | None = None, docs: dict | None = None):
    cfg = load_config(
        data={
            "kb_dir": str(tmp_path / "kb"),
            "embedder": {"name": "hashing"},
            "access": {"folders": folders if folders is not None else {"finance": ["finance"]}},
        }
    )
    root = write_corpus(tmp_path / "docs", docs or {**RESTRICTED, **PUBLIC})
    report = ingest([root], cfg, HashingEmbedder(), progress=False)
    return cfg, root, report


def test_filter_fills_top_k_with_visible_chunks(tmp_path: Path) -> None:
    cfg, _, _ = _kb(tmp_path)
    store = Store.open(cfg.kb_dir)
    retriever = Retriever(store, HashingEmbedder(), cfg.retrieval)
    query = "薪资 工资 预算 salary budget table"
    q = HashingEmbedder().embed_batch([query], query=True)[0]
    # Unfiltered, the 12 restricted chunks are the nearest: a post-filter of the top 5 would leave 0.
    assert all(store.chunks([r])[r].source.startswith("finance/") for r, _ in store.search_vectors(q, 5))
    it = frozenset({"it"})
    dense = store.search_vectors(q, 4, departments=it)
    assert len(dense) == 4 and all(store.chunks([r])[r].departments == [] for r, _ in dense)
    hits = retriever.search(query, 4, user=Principal("bob", it))
    assert len(hits) == 4 and {h.chunk.source for h in hits} == set(PUBLIC)
    fin = retriever.search(query, 4, user=Principal("fay", frozenset({"finance"})))
    assert all(h.chunk.source.startswith("finance/") for h in fin)
    assert all(h.to_dict()["departments"] == ["finance"] for h in fin)


def test_sidecar_overrides_folder_and_relabels_without_embedding(tmp_path: Path) -> None:
    cfg, root, _ = _kb(tmp_path)
    (root / "general" / ".kbaccess").write_text("departments: [HR, it]\n", encoding="utf-8")
    (root / "finance" / ".kbaccess").write_text("departments: []\n", encoding="utf-8")

    def no_embedding():
        raise AssertionError("relabelling must not embed")

    report = ingest([root], cfg, no_embedding, progress=False)
    assert report.relabelled == 16 and report.embedded == 0 and report.updated == 0
    store = Store.open(cfg.kb_dir)
    deps = {c.source: c.departments for c in store.iter_chunks()}
    assert deps["general/note_0.md"] == ["hr", "it"] and deps["finance/salary_0.md"] == []
    again = ingest([root], cfg, no_embedding, progress=False)
    assert again.relabelled == 0 and again.generation == report.generation


def test_unreadable_sidecar_fails_closed(tmp_path: Path) -> None:
    cfg, root, _ = _kb(tmp_path, folders={})
    (root / "finance" / ".kbaccess").write_text("departments: [ok\n", encoding="utf-8")
    (root / "finance" / "new.md").write_text("new restricted text\n", encoding="utf-8")
    report = ingest([root], cfg, HashingEmbedder(), progress=False)
    assert ("finance/new.md" in {s for s, _ in report.failed}) and report.added == 0
    assert "finance/new.md" not in {c.source for c in Store.open(cfg.kb_dir).iter_chunks()}


def test_kb_without_departments_column_is_public_and_migrates(tmp_path: Path) -> None:
    cfg, root, _ = _kb(tmp_path)
    store = Store.open(cfg.kb_dir)
    db_path = Path(cfg.kb_dir) / "generations" / str(store.generation) / "chunks.sqlite"
    with sqlite3.connect(db_path) as db:  # what a knowledge base from before access control looks like
        db.execute("ALTER TABLE chunks DROP COLUMN departments")
    old = Store.open(cfg.kb_dir)
    assert all(c.departments == [] for c in old.iter_chunks())
    assert len(old.search_vectors(np.ones(256, np.float32) / 16, 20, departments=frozenset())) == 16
    report = ingest([root], cfg, HashingEmbedder(), progress=False)  # migrates, then relabels
    assert report.relabelled == 12
    new = Store.open(cfg.kb_dir)
    assert {json.dumps(c.departments) for c in new.iter_chunks()} == {"[]", '["finance"]'}


def test_folder_mapping_validated() -> None:
    with pytest.raises(ConfigError, match="access.folders.hr"):
        load_config(data={"access": {"folders": {"hr": ["bad name!"]}}})
    cfg = load_config(overrides=["access.folders={finance: Finance}"])
    assert cfg.access.folders == {"finance": ["finance"]}


def test_kb_passwd_prints_a_usable_entry(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import io

    from kb.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["passwd"]) == 0
    out, err = capsys.readouterr()
    stored = out.split('"')[1]
    assert check_password("correct horse", stored) and not check_password("correct horse!", stored)
    assert "correct horse" not in out + err


def test_row_access_selectors_both_ways() -> None:
    import faiss

    from kb.store.acl import RowAccess

    labels = [(r, ["hr"] if r in (3, 7) else ["fin"] if r >= 8 else []) for r in range(1, 11)]
    acl = RowAccess(labels, np.arange(1, 11))
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(2))
    index.add_with_ids(np.tile([[1.0, 0.0]], (10, 1)).astype(np.float32), np.arange(1, 11))

    def found(deps) -> set[int]:
        params = faiss.SearchParameters(sel=acl.selector_for(deps))
        return {
            int(i)
            for i in index.search(np.array([[1.0, 0.0]], np.float32), 10, params=params)[1][0]
            if i >= 0
        }

    public = {1, 2, 4, 5, 6}
    assert found(frozenset()) == public  # 5 hidden vs 5 visible: a batch of the visible rows
    assert found(frozenset({"hr"})) == public | {3, 7}  # 2 hidden < 7 visible: NOT a batch of the hidden
    assert acl.selector_for(None) is None and acl.selector_for(frozenset({"hr", "fin"})) is None
    assert acl.mask_for(frozenset({"fin"})).tolist() == [r not in (3, 7) for r in range(1, 11)]
