"""The app's pages, defined once: app.py lays them out, pages switch between them.

Each page is a file of ui/views/ (a script Streamlit runs; its ``render()``
draws the page), so AppTest can open any of them by path.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).parent / "views"
# Material icons ship with Streamlit; emoji would need a colour-emoji font the
# browser may lack (Debian's chromium here shows empty boxes).
PAGES = {  # name: (title, icon)
    "lake": ("Lake", ":material/database:"),
    "sql": ("SQL", ":material/terminal:"),
    "similar": ("Find similar", ":material/image_search:"),
    "narrow": ("Narrow", ":material/filter_alt:"),
    "review": ("Review", ":material/task_alt:"),
}


def pages() -> dict[str, st.Page]:
    # The first page is the default, served at "/" (Streamlit gives the default page no path of its own).
    first = next(iter(PAGES))
    return {name: st.Page(VIEWS / f"{name}.py", title=title, icon=icon, default=name == first,
                          url_path=None if name == first else name)
            for name, (title, icon) in PAGES.items()}


def go(name: str) -> None:
    """Switch to the page ``name`` (a key of PAGES)."""
    st.switch_page(pages()[name])
