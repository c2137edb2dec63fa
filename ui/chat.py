"""Page 1: employees ask, answers stream in with numbered, expandable sources and a feedback control.

Run through ui/app.py (st.navigation executes this file as the page script).
"""

from __future__ import annotations

import mimetypes
import re
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import streamlit as st

from kb.access import Principal
from kb.config import Config
from kb.errors import EmptyKnowledgeBase, KBError
from kb.prompt import language
from kb.store.manifest import read_manifest
from ui import docs, feedback, login, rewrite, state
from ui.i18n import t

MESSAGES = "messages"
CLOSEST = 3  # passages shown under a refusal

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|$~<>])")


def escape_md(text: str) -> str:
    """Show text literally: model output and document text are not markdown (and '$' is not LaTeX)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def quote_md(text: str) -> str:
    return "\n".join(f"> {escape_md(line)}  " for line in text.strip().splitlines() if line.strip())


def _where(source: str, page: int | None, heading: str) -> str:
    parts = [source]
    if page:
        parts.append(t("page", page=page))
    if heading:
        parts.append(heading)
    return " · ".join(parts)


def _passage(item: dict[str, Any], roots: list[Path], key: str) -> None:
    """One source inside its expander: where it is, the quoted chunk, and the file to download."""
    st.markdown(f"**{t('document')}:** {escape_md(item['source'])}")
    if item.get("page"):
        st.markdown(f"**{t('page', page=item['page'])}**")
    if item.get("heading"):
        st.markdown(f"**{t('heading')}:** {escape_md(item['heading'])}")
    st.markdown(f"**{t('quote')}:**")
    st.markdown(quote_md(item["text"]))
    path = docs.resolve_source(roots, item["source"])
    if path is None:
        st.caption(t("file_unavailable"))
        return
    st.download_button(
        t("download"),
        # Deferred: the file is read only when clicked, not on every rerun of a long chat.
        data=lambda p=path: p.read_bytes(),
        file_name=path.name,
        mime=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
        key=key,
        on_click="ignore",
    )


def _rated(msg: dict[str, Any], kb_dir: str, key: str) -> None:
    """st.feedback callback: thumbs up = 1 (helpful), thumbs down = 0. First rating inserts the row."""
    rating = st.session_state.get(key)
    if rating is None:
        return
    if msg.get("feedback_id"):
        feedback.update(kb_dir, msg["feedback_id"], rating=int(rating))
    else:
        msg["feedback_id"] = feedback.record(kb_dir, msg, int(rating))


def _feedback(msg: dict[str, Any], cfg: Config) -> None:
    mid = msg["id"]
    st.caption(t("helpful"))
    key = f"fb_{mid}"
    st.feedback("thumbs", key=key, on_change=_rated, args=(msg, cfg.kb_dir, key))
    if not msg.get("feedback_id"):
        return
    comment = st.text_input(t("comment"), key=f"cm_{mid}")
    if st.button(t("send_comment"), key=f"cb_{mid}") and comment.strip():
        feedback.update(cfg.kb_dir, msg["feedback_id"], comment=comment.strip())
        msg["commented"] = True
    if msg.get("commented"):
        st.caption(t("thanks"))


def render_answer(msg: dict[str, Any], cfg: Config, roots: list[Path]) -> None:
    mid = msg["id"]
    st.markdown(escape_md(msg["answer"]))
    if msg["refused"]:
        st.warning(t("refused"))
        for i, hit in enumerate(msg["hits"][:CLOSEST]):
            with st.expander(f"{t('closest')} {i + 1}: {_where(hit['source'], hit['page'], hit['heading'])}"):
                _passage(hit, roots, f"dl_{mid}_h{i}")
        st.caption(t("refused_time", s=msg["seconds"]))
    else:
        for c in msg["citations"]:
            with st.expander(f"[{c['n']}] {_where(c['source'], c['page'], c['heading'])}"):
                _passage(c, roots, f"dl_{mid}_{c['n']}")
        st.caption(t("answer_time", s=msg["seconds"], n=len(msg["citations"])))
    _feedback(msg, cfg)


def _sidebar(cfg: Config, res: state.Resources | None) -> None:
    with st.sidebar:
        if st.button(t("new_chat"), width="stretch"):
            st.session_state[MESSAGES] = []
        manifest = read_manifest(Path(cfg.kb_dir)) or {}
        if manifest.get("live") is not None:
            stats = manifest.get("stats", {})
            st.caption(
                t("kb_info", files=stats.get("files", 0), chunks=stats.get("chunks", 0), gen=manifest["live"])
            )
        if res is not None:
            st.caption(t("model_info", model=res.model + (f" + {res.adapter}" if res.adapter else "")))


def ask(
    question: str, cfg: Config, res: state.Resources, roots: list[Path], user: Principal | None = None
) -> None:
    """Answer one question in the conversation, streaming into the page, and keep it in history."""
    messages: list[dict[str, Any]] = st.session_state[MESSAGES]
    chain = rewrite.topic_chain(question, messages[-1]["chain"] if messages else [])
    standalone = rewrite.standalone(chain)
    with st.chat_message("user"):
        st.markdown(escape_md(question))
    with st.chat_message("assistant"):
        if standalone != question:
            st.caption(t("rewritten", q=escape_md(standalone)))
        placeholder = st.empty()
        placeholder.caption(t("searching") if state.try_answering(cfg) else t("waiting_turn"))
        pieces: list[str] = []

        def on_token(piece: str) -> None:
            pieces.append(piece)
            placeholder.markdown(escape_md("".join(pieces)) + " ▌")

        try:
            with state.answering(cfg):
                # A re-ingest from the admin page committed meanwhile? Answer from the new generation.
                res.store.refresh()
                answer = res.answerer.answer(standalone, on_token=on_token, user=user)
                generation = res.store.generation
        except KBError as e:
            placeholder.error(t("answer_failed", error=e))
            return
        placeholder.empty()
        msg = {
            "id": uuid.uuid4().hex[:12],
            "question": question,
            "chain": chain,
            "standalone": standalone,
            "answer": answer.answer,
            "refused": answer.refused,
            "why": answer.why,
            "seconds": answer.seconds,
            "citations": [asdict(c) for c in answer.citations],
            "hits": [h.to_dict() for h in answer.hits],
            "model": res.model,
            "adapter": res.adapter,
            "lang": language(question),
            "generation": generation,
            "feedback_id": None,
        }
        messages.append(msg)
        render_answer(msg, cfg, roots)


def main() -> None:
    cfg = state.config()
    st.session_state.setdefault(MESSAGES, [])
    st.title(t("chat_title"))
    st.caption(t("chat_intro"))
    res: state.Resources | None = None
    try:
        # Cached per process: only the first visitor after a start waits for the model.
        with st.spinner(t("loading_model"), show_time=True):
            res = state.resources(cfg)
    except EmptyKnowledgeBase:
        st.info(t("empty_kb"))
    except KBError as e:
        st.error(t("load_failed", error=e))
    _sidebar(cfg, res)
    try:
        user = login.current_user(cfg)
    except KBError as e:  # a missing or malformed users file: nobody gets in
        st.error(t("load_failed", error=e))
        return
    if user is None:
        st.info(t("sign_in_first"))
        return
    if res is None:
        return
    roots = docs.manifest_roots(cfg.kb_dir)
    for msg in st.session_state[MESSAGES]:
        with st.chat_message("user"):
            st.markdown(escape_md(msg["question"]))
        with st.chat_message("assistant"):
            if msg["standalone"] != msg["question"]:
                st.caption(t("rewritten", q=escape_md(msg["standalone"])))
            render_answer(msg, cfg, roots)
    question = st.chat_input(t("ask_placeholder"))
    if question and question.strip():
        ask(question.strip(), cfg, res, roots, user)


if __name__ == "__main__":
    main()
