"""Who is using the chat: a sign-in against access.users_file (kb/access.py), or anonymous.

Without a users file every visitor is anonymous and sees public documents only (untagged documents
are public, so a knowledge base without department tags behaves as before). With one, the chat asks
for a sign-in first (access.require_login; when off, anonymous visitors still see public documents).
The session keeps only the Principal, never the password; a failed sign-in waits a second, like the
admin page's password, and says nothing about which of name and password was wrong.
"""

from __future__ import annotations

import time

import streamlit as st

from kb.access import ANONYMOUS, Principal, Users, load_users
from kb.config import Config
from kb.errors import AccessError
from ui.i18n import t

USER = "user"  # session key holding the signed-in Principal
MESSAGES = "messages"


@st.cache_resource(show_spinner=False, max_entries=4)
def _users(path: str, mtime: float) -> Users | None:
    return load_users(path)


def users(cfg: Config) -> Users | None:
    """The users file, re-read when it changes (so adding a user needs no restart)."""
    import os

    path = cfg.access.users_file
    return _users(path, os.path.getmtime(path) if path and os.path.exists(path) else 0.0)


def _label(user: Principal) -> str:
    if user.effective is None:
        return t("all_documents")
    return ", ".join(sorted(user.departments or [])) or t("public_only")


def current_user(cfg: Config) -> Principal | None:
    """The signed-in user, ANONYMOUS, or None when a sign-in is required and missing. Draws the
    sign-in form or the signed-in line in the sidebar."""
    known = users(cfg)
    if known is None:
        return ANONYMOUS
    user: Principal | None = st.session_state.get(USER)
    with st.sidebar:
        if user is not None:
            st.caption(t("signed_in", name=user.name, deps=_label(user)))
            if st.button(t("sign_out")):
                st.session_state.pop(USER, None)
                st.session_state[MESSAGES] = []  # one user's answers are not left for the next
                st.rerun()
            return user
        with st.form("sign_in"):
            name = st.text_input(t("user_name"))
            password = st.text_input(t("user_password"), type="password")
            if st.form_submit_button(t("sign_in")):
                try:
                    st.session_state[USER] = known.login(name.strip(), password)
                except AccessError:
                    time.sleep(1.0)
                    st.error(t("sign_in_failed"))
                else:
                    st.session_state[MESSAGES] = []
                    st.rerun()
    return None if cfg.access.require_login else ANONYMOUS
