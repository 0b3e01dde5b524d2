"""Who may use the UI: local accounts with hashed passwords, roles enforced on the server for
every page and action, the logged-in identity recorded on what it does, and `edgemine ui`
refusing to serve beyond localhost with nobody logging in (issue 28, docs/SECURITY.md).

The UI is driven headless by AppTest on the session's demo lake; what it writes is checked
in the lake through SQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mining.core import accounts
from mining.core.config import AuthConfig, Config, UIConfig
from mining.core.errors import AccessError, ConfigError
from tests.helpers import rows as sql
from ui import auth, launch, nav

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")
PASSWORDS = {"vera": "viewer-pass-1", "rick": "reviewer-pass-1", "eddie": "exporter-pass-1"}


# -- accounts and roles --------------------------------------------------------------------
def test_a_password_is_stored_salted_and_hashed_and_only_it_matches():
    first, second = accounts.hash_password("s3cret-enough"), accounts.hash_password("s3cret-enough")
    assert first != second and "s3cret-enough" not in first  # a fresh salt each time
    assert accounts.verify_password("s3cret-enough", first) and accounts.verify_password("s3cret-enough", second)
    assert not accounts.verify_password("s3cret-enougH", first)
    for broken in ("", "plain", "scrypt$1$2$3", "md5$x$y$z$a$b", first.replace("scrypt", "bcrypt"), first[:-8]):
        assert not accounts.verify_password("s3cret-enough", broken)


def test_the_accounts_file_is_private_and_login_says_nothing_about_which_part_was_wrong(tmp_path):
    path = str(tmp_path / "accounts.json")
    assert accounts.add_account(path, "ana", "reviewer", "a-long-password")
    assert not accounts.add_account(path, "ana", "exporter", "another-password")  # changed, not added
    assert os.stat(path).st_mode & 0o777 == 0o600
    found = accounts.load_accounts(path, env={})
    assert accounts.authenticate(found, "ana", "another-password") == accounts.Identity("ana", "exporter", "account")
    with pytest.raises(AccessError) as wrong:
        accounts.authenticate(found, "ana", "a-long-password")
    with pytest.raises(AccessError) as unknown:
        accounts.authenticate(found, "nobody", "another-password")
    assert str(wrong.value) == str(unknown.value) == "wrong name or password"
    assert "another-password" not in Path(path).read_text()
    assert accounts.remove_account(path, "ana") and not accounts.load_accounts(path, env={})


@pytest.mark.parametrize(("name", "role", "password", "says"), [
    ("a b", "viewer", "long-enough", "account name"),
    ("", "viewer", "long-enough", "account name"),
    ("ana", "root", "long-enough", "unknown role"),
    ("ana", "viewer", "short", "at least 8"),
])
def test_bad_accounts_are_refused_and_nothing_is_written(tmp_path, name, role, password, says):
    path = tmp_path / "accounts.json"
    with pytest.raises(ConfigError, match=says):
        accounts.add_account(str(path), name, role, password)
    assert not path.exists()


def test_accounts_come_from_the_environment_too_and_a_bad_entry_is_refused():
    env = {"EDGEMINE_ACCOUNTS": f"ana:admin:{accounts.hash_password('from-the-env')}\n\n"}
    assert accounts.authenticate(accounts.load_accounts("", env), "ana", "from-the-env").role == "admin"
    assert accounts.login_mode(AuthConfig(), env) == "accounts" and accounts.login_mode(AuthConfig(), {}) == "local"
    for bad in ("ana:admin", "ana:god:scrypt$x", "a b:viewer:scrypt$x"):
        with pytest.raises(ConfigError, match="EDGEMINE_ACCOUNTS line 1"):
            accounts.load_accounts("", {"EDGEMINE_ACCOUNTS": bad})


def test_a_corrupt_accounts_file_is_a_clear_error(tmp_path):
    path = tmp_path / "accounts.json"
    for content, says in (("{", "cannot be read"), ('{"users": []}', "expected"),
                          ('{"users": {"ana": {"role": "viewer"}}}', "password hash")):
        path.write_text(content)
        with pytest.raises(ConfigError, match=says):
            accounts.load_accounts(str(path), env={})


def test_roles_are_a_ladder_and_each_page_needs_its_action():
    assert [r for r in accounts.ROLES if accounts.may(r, "decide")] == ["reviewer", "exporter", "admin"]
    assert [r for r in accounts.ROLES if accounts.may(r, "export")] == ["exporter", "admin"]
    assert all(accounts.may(r, "view") for r in accounts.ROLES)
    visible = {role: sorted(name for name, page in nav.PAGES.items() if accounts.may(role, page[3]))
               for role in accounts.ROLES}
    assert visible["viewer"] == ["lake", "metrics", "queues", "similar", "sql"]
    assert visible["reviewer"] == sorted([*visible["viewer"], "narrow", "review"])
    assert visible["admin"] == sorted(nav.PAGES)


# -- the UI behind a login ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def accounts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "accounts.json"
    for (name, password), role in zip(PASSWORDS.items(), ("viewer", "reviewer", "exporter")):
        accounts.add_account(str(path), name, role, password)
    return path


@pytest.fixture
def gated(demo_lake, accounts_file, tmp_path, monkeypatch) -> AppTest:
    """The app on the demo lake with local accounts configured, nobody logged in yet."""
    config = tmp_path / "edgemine.toml"
    config.write_text(f'[auth]\naccounts = "{accounts_file}"\n[ui]\nexport_targets = ["{tmp_path / "out"}"]\n')
    monkeypatch.setenv("EDGEMINE_LAKE", demo_lake.uri)
    monkeypatch.setenv("EDGEMINE_CONFIG", str(config))
    monkeypatch.setenv("EDGEMINE_USER", "typed-name")
    auth._failures.clear()  # failed logins are counted per server process: each test starts with none
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def log_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="login_name").input(name)
    at.text_input(key="login_password").input(password)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception
    return at


def page_titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


def test_without_a_login_nothing_of_the_lake_is_shown(gated):
    assert page_titles(gated) == ["edgemine"] and gated.text_input(key="login_name")
    assert not gated.image and not gated.dataframe and not gated.sidebar.text_input  # no thumbnail, table or name box
    for name in nav.PAGES:  # a page's URL without a session: the login form again, nothing of the page
        gated.switch_page(f"views/{nav.PAGES[name][0]}").run()
        assert not gated.image and not gated.dataframe and gated.text_input(key="login_name")


def test_a_wrong_password_is_refused_and_repeated_failures_lock_the_name(gated):
    log_in(gated, "rick", "not-his-password")
    assert [e.value for e in gated.error] == ["wrong name or password"] and not gated.image
    assert auth.FAILURES_ALLOWED == 5
    for attempt in range(auth.FAILURES_ALLOWED):
        log_in(gated, "vera", f"guess-{attempt}")
    log_in(gated, "vera", PASSWORDS["vera"])  # even the right password waits once the name is locked
    assert "too many failed logins for vera" in gated.error[0].value
    log_in(gated, "rick", PASSWORDS["rick"])  # other names are not locked
    assert not gated.error and "Signed in as **rick** (reviewer)" in gated.sidebar.markdown[0].value


def grid_ids(at: AppTest, key: str) -> list[str]:
    return [c.key.rsplit(":", 1)[1] for c in at.checkbox if c.key and c.key.startswith(f"{key}:sel:")]


def mark_a_page(at: AppTest, seed: str, review: str) -> list[str]:
    """On Find similar: seed, name the loop's review, mark the first page (nothing selected)."""
    at.switch_page("views/find_similar.py").run()
    at.text_input(key="seed_ids").input(seed)
    at.button(key="seed_ids_add").click().run()
    at.text_input(key="loop_review").input(review).run()
    page = grid_ids(at, "results")
    at.button(key="mark_page").click().run()
    assert not at.exception, at.exception
    return page


def test_a_viewer_sees_its_pages_only_and_cannot_decide(gated, demo_lake):
    log_in(gated, "vera", PASSWORDS["vera"])
    assert "Signed in as **vera** (viewer)" in gated.sidebar.markdown[0].value
    for name in ("review", "export", "narrow"):  # not its pages: the server never registers them for it
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            gated.switch_page(f"views/{nav.PAGES[name][0]}")
    page = mark_a_page(gated, _an_image(demo_lake), "viewer-tries")
    assert page and any("vera (viewer) may not decide" in e.value for e in gated.error)
    assert sql(demo_lake, "SELECT count(*) n FROM reviews WHERE review = 'viewer-tries'")[0]["n"] == 0


def test_a_reviewers_decisions_carry_the_logged_in_name_not_a_typed_one(gated, demo_lake):
    log_in(gated, "rick", PASSWORDS["rick"])
    assert not gated.sidebar.text_input  # no name box to type another reviewer into
    page = mark_a_page(gated, _an_image(demo_lake), "rick-marks")
    saved = sql(demo_lake, "SELECT DISTINCT reviewer FROM reviews WHERE review = 'rick-marks'")
    assert page and saved == [{"reviewer": "rick"}]
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # a reviewer may not export
        gated.switch_page("views/export_labels.py")
    gated.sidebar.button(key="logout").click().run()
    assert page_titles(gated) == ["edgemine"] and not gated.image


def test_an_exporter_may_only_choose_the_allowed_targets(gated, tmp_path):
    log_in(gated, "eddie", PASSWORDS["eddie"])
    gated.switch_page("views/export_labels.py").run()
    assert "Export for labelling" in page_titles(gated)
    assert gated.selectbox(key="export_target").options == [str(tmp_path / "out")]
    assert gated.selectbox(key="labels_url").options == []  # no Label Studio host allowed: none offered


def _an_image(lake) -> str:
    return sql(lake, "SELECT image_id FROM images ORDER BY image_id LIMIT 1")[0]["image_id"]


# -- `edgemine ui`: who it serves ---------------------------------------------------------------
def test_the_ui_refuses_to_serve_beyond_localhost_without_a_login(tmp_path):
    for address in ("0.0.0.0", "192.0.2.7", "ui.example.com"):
        with pytest.raises(ConfigError, match="--insecure-no-login"):
            launch.check_exposure(Config(), address, insecure_no_login=False)
        launch.check_exposure(Config(), address, insecure_no_login=True)  # the risk accepted
        launch.check_exposure(Config(auth=AuthConfig(proxy_header="X-Forwarded-Email")), address,
                              insecure_no_login=False)
    for address in ("localhost", "127.0.0.1", "::1", "127.0.0.2"):
        launch.check_exposure(Config(), address, insecure_no_login=False)
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "ui", "--lake", str(tmp_path / "lake"), "--address",
                           "0.0.0.0", "--port", "9"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "EDGEMINE_ACCOUNTS": ""})
    assert done.returncode == 2 and "--insecure-no-login" in done.stderr and "Traceback" not in done.stderr


def test_the_server_answers_only_its_own_host_names():
    hosts = launch.allowed_hosts(Config(ui=UIConfig(allowed_hosts=("mining.example.com",))), "10.1.2.3")
    assert hosts == ["localhost", "127.0.0.1", "::1", "10.1.2.3", "mining.example.com"]
    command = launch.ui_command(8501, "10.1.2.3", hosts)
    assert command.count("--server.allowedHosts") == len(hosts)
    assert command[command.index("--server.enableCORS") + 1] == "true"
    assert command[command.index("--server.enableXsrfProtection") + 1] == "true"


def test_user_commands_add_list_and_remove_accounts(tmp_path):
    path = tmp_path / "accounts.json"

    def edgemine(*args: str, password: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jobs.cli", "user", *args, "--accounts", str(path)],
                              input=password + "\n", capture_output=True, text=True, timeout=60, cwd=tmp_path)

    assert edgemine("add", "ana", "--role", "exporter", password="a-long-password").returncode == 0
    listed = edgemine("list", "--json")
    assert json.loads(listed.stdout) == [{"name": "ana", "role": "exporter"}]
    short = edgemine("add", "bo", "--role", "admin", password="short")
    assert short.returncode == 2 and "at least 8" in short.stderr and "bo" not in path.read_text()
    assert edgemine("remove", "ana").returncode == 0 and edgemine("remove", "ana").returncode == 2
