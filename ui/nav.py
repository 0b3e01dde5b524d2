"""The app's pages, defined once: app.py lays them out, pages switch between them.

Each page is a file of ui/views/ (a script Streamlit runs; its ``render()``
draws the page), so AppTest can open any of them by path.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).parent / "views"
PAGES = {  # name: (title, icon)
    "lake": ("Lake", "🗄️"),
    "sql": ("SQL", "🧮"),
    "similar": ("Find similar", "🔎"),
    "narrow": ("Narrow", "🧭"),
    "review": ("Review", "✅"),
}


def pages() -> dict[str, st.Page]:
    return {name: st.Page(VIEWS / f"{name}.py", title=title, icon=icon, url_path=name, default=name == "lake")
            for name, (title, icon) in PAGES.items()}


def go(name: str) -> None:
    """Switch to the page ``name`` (a key of PAGES)."""
    st.switch_page(pages()[name])
