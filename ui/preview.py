"""The admin page's search preview: run retrieval as a chosen user would. The admin sees every
document; choosing a user (or anonymous) applies that user's department filter, the same one the
chat applies, so an admin can check what a department can and cannot find."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import streamlit as st

from kb.access import ANONYMOUS, UNRESTRICTED, Principal
from kb.config import Config
from kb.errors import KBError
from kb.store.manifest import read_manifest
from ui import login, state
from ui.i18n import t


def view_as_options(cfg: Config) -> dict[str, Principal]:
    options = {t("as_admin"): UNRESTRICTED, t("as_public"): ANONYMOUS}
    known = login.users(cfg)
    if known is not None:
        for name in sorted(known.entries):
            options[name] = known.get(name)
    return options


def preview(cfg: Config) -> None:
    st.subheader(t("preview"))
    st.caption(t("preview_help"))
    try:
        options = view_as_options(cfg)
    except KBError as e:
        st.error(str(e))
        return
    cols = st.columns([2, 3], vertical_alignment="bottom")
    who = cols[0].selectbox(t("view_as"), list(options), key="preview_as")
    query = cols[1].text_input(t("query"), key="preview_query")
    if not query.strip():
        return
    try:
        retriever = state.retriever_for(cfg)
        with state.answering(cfg):
            retriever.store.refresh()
            hits = retriever.search(query.strip(), cfg.retrieval.k, user=options[who])
    except KBError as e:
        st.error(str(e))
        return
    st.dataframe(
        [
            {
                t("col_source"): h.chunk.source,
                t("col_departments"): ", ".join(h.chunk.departments) or t("public"),
                "score": round(h.score, 4),
                t("quote"): h.chunk.text[:160],
            }
            for h in hits
        ],
        hide_index=True,
    )


def departments_by_source(kb_dir: str) -> dict[str, str]:
    """source → its departments, comma-separated ("" = public), from the live generation's database."""
    manifest = read_manifest(Path(kb_dir)) or {}
    if manifest.get("live") is None:
        return {}
    db_path = Path(kb_dir) / "generations" / str(manifest["live"]) / "chunks.sqlite"
    try:
        with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT source, MAX(departments) FROM chunks GROUP BY source").fetchall()
    except sqlite3.OperationalError:  # pruned meanwhile, or built before access control (all public)
        return {}
    return {source: ", ".join(json.loads(deps)) for source, deps in rows}
