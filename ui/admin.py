"""Page 2: administration behind a password — documents (upload, list, delete, re-ingest), the model
registry (activate, fine-tune in the background) and evaluation results.

The password comes from the environment only (KB_ADMIN_PASSWORD_SHA256, hex, or KB_ADMIN_PASSWORD):
it is a deployment secret, not a knowledge base setting, so it stays out of kb.yaml and kb/config.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import streamlit as st

from kb.config import Config
from kb.registry import Registry
from ui import docs, jobs, preview, state
from ui.i18n import t

UNLOCKED = "admin_unlocked"  # session key holding the hash the session was unlocked with
NOTES = "admin_notes"  # messages kept across the rerun that follows an action
UPLOADER = "admin_uploader_n"  # bumped to give the uploader a new key, which empties it
_HEX64 = re.compile(r"[0-9a-f]{64}")
BAD_HASH = "invalid"


def expected_hash() -> str | None:
    """Hex sha256 of the admin password, BAD_HASH when misconfigured, None when none is set."""
    configured = os.environ.get("KB_ADMIN_PASSWORD_SHA256", "").strip().lower()
    if configured:
        return configured if _HEX64.fullmatch(configured) else BAD_HASH
    plain = os.environ.get("KB_ADMIN_PASSWORD", "")
    return hashlib.sha256(plain.encode("utf-8")).hexdigest() if plain else None


def _unlocked(expected: str) -> bool:
    # Bound to the current password: changing it (and restarting) locks every open session.
    return hmac.compare_digest(st.session_state.get(UNLOCKED, ""), expected)


def _unlock_form(expected: str) -> None:
    with st.form("unlock"):
        password = st.text_input(t("password"), type="password")
        if st.form_submit_button(t("unlock")):
            given = hashlib.sha256(password.encode("utf-8")).hexdigest()
            if hmac.compare_digest(given, expected):
                st.session_state[UNLOCKED] = expected
                st.rerun()
            time.sleep(1.0)  # makes guessing slow without locking anyone out
            st.error(t("wrong_password"))


def _note(kind: str, text: str) -> None:
    st.session_state.setdefault(NOTES, []).append((kind, text))


def _show_notes() -> None:
    for kind, text in st.session_state.pop(NOTES, []):
        getattr(st, kind)(text)


def _start_ingest(cfg: Config) -> None:
    paths = docs.ingest_paths(cfg)
    if not paths:
        _note("warning", t("no_documents"))
        return
    if jobs.start_ingest(cfg, state.embedder_for(cfg), paths) is None:
        _note("warning", t("ingest_busy"))


def _uploads(cfg: Config, busy: bool) -> None:
    folder = docs.uploads_dir(cfg)
    suffixes = cfg.ingest.suffixes
    st.subheader(t("upload"))
    st.caption(t("upload_help", suffixes=" ".join(suffixes), mb=cfg.ingest.max_file_mb, folder=folder))
    files = st.file_uploader(
        t("upload"),
        type=[s.lstrip(".") for s in suffixes],
        accept_multiple_files=True,
        key=f"uploader_{st.session_state.get(UPLOADER, 0)}",
        label_visibility="collapsed",
    )
    if files and st.button(t("save_uploads"), disabled=busy):
        saved = 0
        for f in files:
            try:
                docs.save_upload(folder, f.name, f.getvalue(), cfg)
            except ValueError as e:
                _note("error", t("rejected", name=f.name, reason=e))
                continue
            saved += 1
            _note("success", t("saved", name=f.name))
        st.session_state[UPLOADER] = st.session_state.get(UPLOADER, 0) + 1
        if saved:
            _start_ingest(cfg)
        st.rerun()


def _document_list(cfg: Config, busy: bool) -> None:
    st.subheader(t("documents"))
    files = docs.live_files(cfg.kb_dir)
    if not files:
        st.info(t("no_documents"))
        return
    departments = preview.departments_by_source(cfg.kb_dir)
    st.dataframe(
        [
            {
                t("col_source"): f.source,
                t("col_departments"): departments.get(f.source) or t("public"),
                t("col_chunks"): f.n_chunks,
                t("col_size"): round(f.size / 1024, 1),
                t("col_ingested"): time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.ingested_at)),
            }
            for f in files
        ],
        hide_index=True,
    )
    cols = st.columns([3, 1], vertical_alignment="bottom")
    source = cols[0].selectbox(t("delete_doc"), [f.source for f in files], key="delete_source")
    if cols[1].button(t("delete"), disabled=busy, type="secondary"):
        try:
            docs.delete_source(docs.manifest_roots(cfg.kb_dir), source)
        except (ValueError, OSError) as e:
            _note("error", t("delete_failed", name=source, reason=e))
        else:
            _note("success", t("deleted", name=source))
            _start_ingest(cfg)
        st.rerun()


def _ingest_live(kb_dir: str) -> None:
    """Polled every second while an ingest runs; a full rerun when it ends refreshes the list."""
    job = jobs.ingest_job(kb_dir)
    if job is None or not job.running:
        st.rerun()
    phase = t("phase_reading") if job.phase == "reading" else t("phase_embedding", n=job.embedded)
    st.status(t("ingest_running", phase=phase, s=job.elapsed), state="running")


def _ingest(cfg: Config) -> bool:
    """Re-ingest controls and status; True while an ingest runs."""
    job = jobs.ingest_job(cfg.kb_dir)
    busy = job is not None and job.running
    roots = docs.ingest_paths(cfg)
    st.caption(t("roots", roots=", ".join(str(r) for r in roots) or "—"))
    if st.button(t("reingest"), disabled=busy, type="primary"):
        _start_ingest(cfg)
        st.rerun()
    if busy:
        st.fragment(run_every=1.0)(_ingest_live)(cfg.kb_dir)
    elif job is not None and job.error:
        st.error(t("ingest_failed", error=job.error))
    elif job is not None and job.report is not None:
        st.success(t("ingest_done", summary=job.report.summary()))
        for source, reason in job.report.skipped + job.report.failed:
            st.caption(t("skipped_file", source=source, reason=reason))
    return busy


def _documents_tab(cfg: Config) -> None:
    busy = _ingest(cfg)
    _uploads(cfg, busy)
    _document_list(cfg, busy)
    preview.preview(cfg)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[f"{prefix}{k}"] = v
    return out


def _finetune_jobs(cfg: Config) -> None:
    found = jobs.finetune_jobs(cfg.kb_dir)
    if not found:
        return
    st.markdown(f"**{t('jobs')}**")
    for j in found:
        status = (
            t("job_running")
            if j["running"]
            else t("job_exit", rc=j["rc"])
            if j["rc"] is not None
            else t("job_ended")
        )
        with st.expander(f"{j['log']} — {status}", expanded=j["running"]):
            st.code(" ".join(j["cmd"][2:]), language="bash")
            st.code(jobs.tail(j["path"]) or "…", language=None)
            if j["running"]:
                c1, c2 = st.columns(2)
                c1.button(t("refresh"), key=f"refresh_{j['pid']}")
                if c2.button(t("stop_job"), key=f"stop_{j['pid']}"):
                    jobs.stop_finetune(j["pid"])
                    st.rerun()


def _models_tab(cfg: Config) -> None:
    registry = Registry(cfg.kb_dir)
    adapters = registry.list()
    st.subheader(t("adapters"))
    if adapters:
        st.dataframe(
            [
                {
                    "name": a.name,
                    "active": a.active,
                    "method": a.method,
                    "base model": a.base_model,
                    "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(a.created))
                    if a.created
                    else "",
                    **_flatten(a.metrics),
                }
                for a in adapters
            ],
            hide_index=True,
        )
    else:
        st.info(t("no_adapters"))
    active = registry.active_name()
    st.caption(t("active_now", name=active or t("base_model")))
    options = ["none", *(a.name for a in adapters)]
    cols = st.columns([3, 1], vertical_alignment="bottom")
    choice = cols[0].selectbox(
        t("activate"),
        options,
        index=options.index(active) if active in options else 0,
        format_func=lambda n: t("base_model") if n == "none" else n,
        key="adapter_choice",
    )
    if cols[1].button(t("activate"), key="activate_adapter"):
        registry.activate(None if choice == "none" else choice)
        _note("success", t("activated", name=t("base_model") if choice == "none" else choice))
        st.rerun()

    st.subheader(t("finetune"))
    st.caption(t("finetune_help"))
    with st.form("finetune"):
        method = st.selectbox(t("method"), ["lora", "ptuning-v2"])
        data = st.text_input(t("data_path"))
        no_activate = st.checkbox(t("no_activate"))
        if st.form_submit_button(t("start_finetune")):
            args = state.parse_args(state.ui_args())
            passthrough = ["--kb", cfg.kb_dir, *(["--config", args.config] if args.config else [])]
            passthrough += [x for s in args.set for x in ("--set", s)]
            cmd = jobs.finetune_command(passthrough, method, data.strip(), no_activate)
            log = jobs.start_finetune(cfg.kb_dir, cmd)
            if log is None:
                _note("warning", t("finetune_busy"))
            else:
                _note("success", t("finetune_started", log=log))
            st.rerun()
    _finetune_jobs(cfg)


def _eval_tab(cfg: Config) -> None:
    st.subheader(t("eval_results"))
    summaries = sorted(
        (Path(cfg.kb_dir) / "eval").glob("*/summary.json"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    if not summaries:
        st.info(t("no_eval", dir=cfg.kb_dir))
        return
    rows = []
    for p in summaries:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime))
        rows.append({"run": p.parent.name, "time": when, **_flatten(data)})
    st.dataframe(rows, hide_index=True)


def main() -> None:
    cfg = state.config()
    st.title(t("admin_title"))
    expected = expected_hash()
    if expected is None:
        st.warning(t("no_password"))
        return
    if expected == BAD_HASH:
        st.error(t("bad_hash"))
        return
    if not _unlocked(expected):
        _unlock_form(expected)
        return
    if st.sidebar.button(t("lock")):
        st.session_state.pop(UNLOCKED, None)
        st.rerun()
    _show_notes()
    docs_tab, models_tab, eval_tab = st.tabs([t("tab_docs"), t("tab_models"), t("tab_eval")])
    with docs_tab:
        _documents_tab(cfg)
    with models_tab:
        _models_tab(cfg)
    with eval_tab:
        _eval_tab(cfg)


if __name__ == "__main__":
    main()
