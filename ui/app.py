"""Entry point of the web interface: `kb ui` runs `streamlit run ui/app.py -- [kb options]`.

Two pages through st.navigation: the employee chat (default) and the password-protected admin page.
The interface language toggle lives here because both pages share it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui.i18n import language_toggle, t

HERE = Path(__file__).parent


def main() -> None:
    st.set_page_config(page_title=t("app_title"), page_icon=":material/menu_book:", layout="centered")
    language_toggle()
    page = st.navigation(
        [
            st.Page(
                HERE / "chat.py", title=t("nav_chat"), icon=":material/chat:", url_path="chat", default=True
            ),
            st.Page(
                HERE / "admin.py",
                title=t("nav_admin"),
                icon=":material/admin_panel_settings:",
                url_path="admin",
            ),
        ]
    )
    page.run()


main()
