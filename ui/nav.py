"""The app's pages, defined once: app.py lays them out, pages switch between them.

Each page is a file of ui/views/ (a script Streamlit runs; its ``render()``
draws the page), so AppTest can open any of them by path. File names say what
the page does; the URL paths (the keys) are short.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from mining.core.accounts import ACTIONS, may
from mining.core.errors import AccessError
from ui import auth

VIEWS = Path(__file__).parent / "views"
# Material icons ship with Streamlit; emoji would need a colour-emoji font the
# browser may lack (Debian's chromium here shows empty boxes).
PAGES = {  # name (URL path): (file in views/, title, icon, the action opening it needs: mining.core.accounts.ACTIONS)
    "lake": ("overview.py", "Lake", ":material/database:", "view"),
    "sql": ("console.py", "SQL", ":material/terminal:", "query"),
    "similar": ("find_similar.py", "Find similar", ":material/image_search:", "view"),
    "narrow": ("narrow.py", "Narrow", ":material/filter_alt:", "narrow"),
    "review": ("review.py", "Review", ":material/task_alt:", "decide"),
    "export": ("export_labels.py", "Export", ":material/upload:", "export"),
    "queues": ("review_queues.py", "Queues", ":material/queue:", "view"),
    "metrics": ("model_metrics.py", "Metrics", ":material/monitoring:", "view"),
}


def pages(role: str = "admin") -> dict[str, st.Page]:
    """The pages ``role`` may open: the only ones the app registers, so another page's URL
    leads nowhere for it. The first is the default, served at "/" (no path of its own)."""
    first = next(iter(PAGES))
    return {name: st.Page(VIEWS / file, title=title, icon=icon, default=name == first,
                          url_path=None if name == first else name)
            for name, (file, title, icon, action) in PAGES.items() if may(role, action)}


def go(name: str) -> None:
    """Switch to the page ``name`` (a key of PAGES), if this session's role may open it."""
    identity = auth.current()
    allowed = pages(identity.role)
    if name not in allowed:
        raise AccessError(f"{identity.name} ({identity.role}) may not open {PAGES[name][1]}: it needs the role "
                          f"{ACTIONS[PAGES[name][3]]}")
    st.switch_page(allowed[name])
