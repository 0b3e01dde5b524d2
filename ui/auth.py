"""Who is using this session: the login gate app.py runs before any page.

One of four modes, from the config's [auth] (docs/SECURITY.md):
- ``proxy``: a reverse proxy in front of the UI has authenticated the user and set a header;
- ``oidc``: Streamlit's st.login with the identity provider in .streamlit/secrets.toml;
- ``accounts``: local accounts with hashed passwords (mining.core.accounts), a login form;
- ``local``: none configured; `edgemine ui` then serves localhost only and the machine's user
  acts as admin.
Without an identity, ``signed_in`` draws the login form and stops the script: no page runs, so
no thumbnail, query result or download is produced for that session. The identity lives in
the session's server-side state, never in a widget a visitor can type into.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import streamlit as st

from mining.core import accounts
from mining.core.accounts import Identity
from mining.core.config import Config
from mining.core.errors import AccessError, ConfigError
from ui import data

IDENTITY = "_identity"
FAILURES_ALLOWED = 5  # failed logins of one name within the window, then it must wait
FAILURE_WINDOW_S = 900


def signed_in() -> Identity:
    """This session's identity; without one, the login form and ``st.stop()``."""
    config = data.config()
    try:
        mode = accounts.login_mode(config.auth)
    except ConfigError as e:  # an unreadable accounts file: nobody gets in, and the page says why
        st.error(str(e))
        st.stop()
    if mode == "local":
        return Identity(config.mining.user, "admin", "local")
    if mode == "proxy":
        return _from_proxy(config)
    identity = st.session_state.get(IDENTITY)
    if identity is None and mode == "oidc" and st.user.is_logged_in:
        identity = st.session_state[IDENTITY] = _with_role(config, str(st.user.get("email") or st.user.get("sub")),
                                                           "oidc")
    if identity is None:
        _login_page(config, mode)
        st.stop()
    return identity


def current() -> Identity:
    """The identity signed_in() found for this run (app.py calls it before any page)."""
    identity = st.session_state.get(IDENTITY)
    if identity is not None:
        return identity
    return signed_in()


def require(action: str) -> Identity:
    """This session's identity if it may do ``action`` (mining.core.accounts.ACTIONS), else AccessError."""
    identity = current()
    accounts.require(identity, action)
    return identity


def sign_out() -> None:
    identity = st.session_state.pop(IDENTITY, None)
    if identity is not None and identity.via == "oidc":
        st.logout()


def _from_proxy(config: Config) -> Identity:
    name = (st.context.headers.get(config.auth.proxy_header) or "").strip()
    if not name:
        st.error(f"No identity: the proxy in front of the UI did not set {config.auth.proxy_header}.")
        st.stop()
    identity = st.session_state[IDENTITY] = _with_role(config, name, "proxy")
    return identity


def _with_role(config: Config, name: str, via: str) -> Identity:
    role = config.auth.roles.get(name, config.auth.default_role)
    if not role:
        st.error(f"{name} has no role here; an admin adds it to [auth] roles in the config.")
        st.stop()
    return Identity(name, accounts.check_role(role, f"[auth] role of {name}"), via)


def _login_page(config: Config, mode: str) -> None:
    st.title("edgemine")
    if mode == "oidc":
        st.button("Log in", type="primary", key="login_oidc", on_click=st.login)
        return
    with st.form("login"):
        name = st.text_input("Name", key="login_name")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        try:
            st.session_state[IDENTITY] = _authenticate(config, name.strip(), password)
        except AccessError as e:
            st.error(str(e))
            return
        st.rerun()


@st.cache_resource
def _failures() -> tuple[threading.Lock, dict[str, list[float]]]:
    """Recent failed logins per name, shared by every session of the server."""
    return threading.Lock(), defaultdict(list)


def _authenticate(config: Config, name: str, password: str) -> Identity:
    lock, failures = _failures()
    now = time.monotonic()
    with lock:
        recent = failures[name] = [t for t in failures[name] if now - t < FAILURE_WINDOW_S]
        if len(recent) >= FAILURES_ALLOWED:
            wait = int(FAILURE_WINDOW_S - (now - recent[0])) // 60 + 1
            raise AccessError(f"too many failed logins for {name}: try again in {wait} min")
    try:
        return accounts.authenticate(accounts.load_accounts(config.auth.accounts), name, password)
    except AccessError:
        with lock:
            failures[name].append(now)
        raise
