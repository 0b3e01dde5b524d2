"""edgemine's review UI: `edgemine ui` runs it (`streamlit run ui/app.py` with
$EDGEMINE_LAKE / $EDGEMINE_CONFIG set works too)."""

from __future__ import annotations

import streamlit as st

from mining.core.errors import EdgemineError
from ui import auth, data, nav, widgets

st.set_page_config(page_title="edgemine", page_icon=":material/image_search:", layout="wide")
identity = auth.signed_in()  # without a login: the login form, and nothing below runs
page = st.navigation(list(nav.pages(identity.role).values()))
st.sidebar.caption(f"Lake: `{data.lake().uri}`")
widgets.reviewer(identity)
if st.sidebar.button("Reload index", help="pick up embeddings added since the UI started"):
    data.reload_index()
widgets.show_pending_error()  # from a button's callback, run before this script
try:
    page.run()
except EdgemineError as e:  # what the user can fix, said in the page; the sidebar and pages stay usable
    st.error(str(e))
