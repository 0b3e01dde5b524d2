"""The app's pages, defined once: app.py lays them out, pages switch between them.

Each page is a file of ui/views/ (a script Streamlit runs; its ``render()``
draws the page), so AppTest can open any of them by path. File names say what
the page does; the URL paths (the keys) are short.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).parent / "views"
# Material icons ship with Streamlit; emoji would need a colour-emoji font the
# browser may lack (Debian's chromium here shows empty boxes).
PAGES = {  # name (URL path): (file in views/, title, icon)
    "lake": ("overview.py", "Lake", ":material/database:"),
    "sql": ("console.py", "SQL", ":material/terminal:"),
    "similar": ("find_similar.py", "Find similar", ":material/image_search:"),
    "narrow": ("narrow.py", "Narrow", ":material/filter_alt:"),
    "review": ("review.py", "Review", ":material/task_alt:"),
    "export": ("export_labels.py", "Export", ":material/upload:"),

    "queues": ("review_queues.py", "Queues", ":material/queue:"),
    # issue 16
    "metrics": ("model_metrics.py", "Metrics", ":material/monitoring:"),
}


def pages() -> dict[str, st.Page]:
    # The first page is the default, served at "/" (Streamlit gives the default page no path of its own).
    first = next(iter(PAGES))
    return {name: st.Page(VIEWS / file, title=title, icon=icon, default=name == first,
                          url_path=None if name == first else name)
            for name, (file, title, icon) in PAGES.items()}


def go(name: str) -> None:
    """Switch to the page ``name`` (a key of PAGES)."""
    st.switch_page(pages()[name])
