"""edgemine's review UI: `edgemine ui` runs it (`streamlit run ui/app.py` with
$EDGEMINE_LAKE / $EDGEMINE_CONFIG set works too)."""

from __future__ import annotations

import streamlit as st

from ui import data, nav, widgets

st.set_page_config(page_title="edgemine", page_icon=":material/image_search:", layout="wide")
page = st.navigation(list(nav.pages().values()))
st.sidebar.caption(f"Lake: `{data.lake().uri}`")
widgets.reviewer()
if st.sidebar.button("Reload index", help="pick up embeddings added since the UI started"):
    data.reload_index()
page.run()
