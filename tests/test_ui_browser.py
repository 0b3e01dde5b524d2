"""The review UI in a real browser: `edgemine ui` on a demo lake, driven by Chromium
through Playwright from a seed to an accepted image, the way a reviewer clicks.

Needs Debian's chromium at /usr/bin/chromium (`make test` installs it with apt) and
playwright (the `test` extra); without either the test is skipped with a line that
says so. Screenshots of each stage go to tmp_path, and to $EDGEMINE_SCREENSHOTS when set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mining.core.config import UIConfig
from mining.core.sql import LakeDB

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 60_000  # Streamlit reruns asynchronously and CI has slow cores: expect() retries this long
VIEWPORT = {"width": 1600, "height": 1000}
TITLE = r"^Cluster (\d+) · (\d+) images"  # a cluster card's title on the Narrow page
pytestmark = [pytest.mark.browser, pytest.mark.processes]


def _skip_without_browser(request) -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        missing.append(f"playwright is not importable ({e}): pip install -c constraints.txt -e '.[test]'")
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} is missing: apt-get install chromium (make test does)")
    if missing:
        message = "BROWSER TEST SKIPPED: " + "; ".join(missing)
        capture = request.config.pluginmanager.getplugin("capturemanager")  # past pytest's capture, into CI logs
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"\n{message}", file=sys.stderr)
        pytest.skip(message)


@pytest.fixture(scope="module")
def ui(request, tmp_path_factory, demo_lake):
    """(url, lake, the folder exports may go to): `edgemine ui` serving the session's demo lake."""
    _skip_without_browser(request)
    folder = tmp_path_factory.mktemp("ui")
    (folder / "edgemine.toml").write_text(f'[ui]\nexport_targets = ["{folder / "out"}"]\n')
    with serving(folder, demo_lake, "--config", str(folder / "edgemine.toml")) as url:
        yield url, demo_lake, folder / "out"


@pytest.fixture(scope="module")
def gated_ui(request, tmp_path_factory, demo_lake):
    """(url, password of the reviewer "rick"): `edgemine ui` with local accounts configured."""
    from mining.core.accounts import add_account

    _skip_without_browser(request)
    folder = tmp_path_factory.mktemp("gated-ui")
    add_account(str(folder / "accounts.json"), "rick", "reviewer", "reviewer-pass-1")
    (folder / "edgemine.toml").write_text(f'[auth]\naccounts = "{folder / "accounts.json"}"\n')
    with serving(folder, demo_lake, "--config", str(folder / "edgemine.toml")) as url:
        yield url, "reviewer-pass-1"


@contextlib.contextmanager
def serving(folder: Path, lake, *flags: str):
    """`edgemine ui` on ``lake`` until the block ends; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = folder / "ui.log"
    with open(log, "wb") as out:  # its own process group: jobs.cli runs streamlit as a child
        server = subprocess.Popen([sys.executable, "-m", "jobs.cli", "ui", "--lake", lake.uri, "--port", str(port),
                                   *flags], stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"the UI exited with {server.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no health answer on port {port} in 120 s:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=5) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                time.sleep(0.5)  # waiting for the server to start; no browser step below sleeps
        yield f"http://localhost:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@contextlib.contextmanager
def browser_page():
    """(page, main): a page of Debian's chromium, headless, and the Streamlit app's main block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(WAIT_MS)
            yield page, page.get_by_test_id("stMain")
        finally:
            browser.close()


def wait_settled(main) -> None:
    """The rerun has finished: no element left over from the previous one."""
    from playwright.sync_api import expect

    expect(main.locator("[data-stale='true']")).to_have_count(0)


def wait_idle(page, main) -> None:
    """No script run in progress (Streamlit's running indicator gone) and nothing stale:
    a widget's new value has reached the server before the next click."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    wait_settled(main)


def screenshot(page, main, path: Path) -> None:
    """A picture of the finished page (the script run over, every image loaded) at ``path``,
    and in $EDGEMINE_SCREENSHOTS when set."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    wait_settled(main)
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    # Streamlit scrolls inside its main block, so full_page alone stops at the window: grow the window.
    page.set_viewport_size({**VIEWPORT, "height": max(VIEWPORT["height"], main.evaluate("e => e.scrollHeight"))})
    page.screenshot(path=path, full_page=True)
    page.set_viewport_size(VIEWPORT)
    if os.environ.get("EDGEMINE_SCREENSHOTS"):
        Path(os.environ["EDGEMINE_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, os.environ["EDGEMINE_SCREENSHOTS"])


def choose(page, select, option: str | re.Pattern) -> None:
    """Pick ``option`` in a Streamlit selectbox (a baseweb listbox opened by a click)."""
    select.click()
    page.get_by_role("option", name=option).first.click()



@pytest.mark.slow
def test_a_reviewer_goes_from_a_seed_to_an_accepted_image_in_the_browser(ui, tmp_path):
    from playwright.sync_api import expect

    url, lake, _ = ui
    started = datetime.now(UTC)  # the shared demo lake holds other tests' decisions: only this one's count
    expect.set_options(timeout=WAIT_MS)
    shots = []

    def shot(name: str) -> None:
        screenshot(page, main, tmp_path / f"{len(shots) + 1:02d}-{name}.png")
        shots.append(tmp_path / f"{len(shots) + 1:02d}-{name}.png")

    def settled() -> None:
        wait_settled(main)

    def card(cluster: int):
        """A cluster card: the innermost block holding its title and a Drill button."""
        return main.get_by_text(re.compile(TITLE.replace(r"(\d+)", str(cluster), 1))).locator(
            "xpath=ancestor::div[@data-testid='stVerticalBlock'][.//button[normalize-space()='Drill']][1]")

    def loaded(image) -> bool:
        expect(image).to_have_js_property("complete", True)
        return image.evaluate("i => i.naturalWidth") > 0

    with browser_page() as (page, main):
        boxes = main.get_by_test_id("stCheckbox")

        # Find similar: a Browse grid of thumbnails, each with a checkbox and a full-size button.
        page.goto(f"{url}/similar")
        expect(main.get_by_role("heading", name="Find similar")).to_be_visible()
        expect(boxes).to_have_count(24)
        assert loaded(main.get_by_test_id("stImage").first.locator("img"))
        shot("similar-browse")

        boxes.first.locator("xpath=ancestor::div[@data-testid='stHorizontalBlock'][1]").get_by_role("button").last.click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text(re.compile(r"^[0-9a-f]{20} · \d+×\d+ · "))).to_be_visible()
        assert loaded(dialog.get_by_test_id("stImage").locator("img"))
        shot("similar-dialog")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

        use = main.get_by_role("button", name="Use selected as seeds")
        expect(use).to_be_disabled()
        seed = boxes.first.get_by_role("checkbox").get_attribute("aria-label")
        boxes.first.click()
        expect(use).to_be_enabled()
        use.click()
        nearest = main.get_by_role("heading", name=re.compile(r"^Nearest \d+$"))
        expect(nearest).to_be_visible()
        expect(main.get_by_text(re.compile(r"^Seeds \(1\)"))).to_contain_text(seed)
        hits = int(nearest.inner_text().split()[1])
        assert hits > 0
        scored = main.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(r"^[01]\.\d{3} · "))
        expect(scored).to_have_count(hits)
        expect(main.get_by_test_id("stImage")).to_have_count(24 + hits)
        shot("similar-results")

        # Narrow: cluster cards; drilling into cluster 0 re-clusters its images as step 1.
        main.get_by_role("button", name="Start narrowing").click()
        expect(main.get_by_role("heading", name="Narrow", exact=True)).to_be_visible()
        assert page.url.endswith("/narrow")
        titles = main.get_by_text(re.compile(TITLE))
        clusters = int(main.get_by_role("heading", name=re.compile(r"^\d+ clusters")).inner_text().split()[0])
        expect(titles).to_have_count(clusters)
        assert clusters >= 2
        expect(main.get_by_role("button", name=re.compile(r"\bstep 0\b"))).to_be_disabled()  # where we are
        settled()
        shot("narrow-step0")

        size = int(re.match(TITLE, card(0).get_by_text(re.compile(TITLE)).inner_text())[2])
        card(0).get_by_role("button", name="Drill", exact=True).click()
        expect(main.get_by_role("button", name=re.compile(r"\bstep 1\b"))).to_be_disabled()
        expect(main.get_by_role("button", name=re.compile(r"\bstep 0\b"))).to_be_enabled()  # the way back
        expect(main.get_by_text(f"{size} images in this step")).to_be_visible()
        settled()
        sizes = [int(re.match(TITLE, t)[2]) for t in titles.all_inner_texts()]
        assert sum(sizes) == size, f"step 1 splits cluster 0's {size} images, not {sizes}"
        shot("narrow-step1")

        # Review: the first card's images; tick one, accept it.
        first_cluster, first_size = (int(n) for n in re.match(TITLE, titles.first.inner_text()).groups())
        card(first_cluster).get_by_role("button", name="Review", exact=True).click()
        expect(main.get_by_role("heading", name="Review", exact=True)).to_be_visible()
        assert page.url.endswith("/review")
        accepted = main.get_by_test_id("stMetric").filter(has_text="Accepted").get_by_test_id("stMetricValue")
        expect(accepted).to_have_text("0")
        expect(boxes).to_have_count(min(first_size, UIConfig().page_size))
        chosen = boxes.first.get_by_role("checkbox").get_attribute("aria-label")
        boxes.first.click()
        accept = main.get_by_role("button", name=re.compile(r"Accept selected \(1\)$"))
        expect(accept).to_be_enabled()
        accept.click()
        expect(accepted).to_have_text("1")
        expect(main.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(r"accepted$"))).to_have_count(1)
        expect(main.get_by_role("button", name=re.compile(r"Accept selected \(0\)$"))).to_be_disabled()
        settled()
        shot("review-accepted")
        errors = main.get_by_test_id("stException").or_(main.get_by_test_id("stAlertContentError"))
        assert errors.count() == 0, errors.all_inner_texts()

    with LakeDB(lake) as db:
        rows = db.query("SELECT * FROM reviews WHERE decided_at >= $started", {"started": started}).to_pylist()
    assert [r["decision"] for r in rows] == ["accept"], rows
    assert (
        rows[0]["image_id"].startswith(chosen) and rows[0]["source"] == f"narrow:{rows[0]['review']}/1#{first_cluster}"
    )
    assert len(shots) == 6 and all(s.stat().st_size > 10_000 for s in shots)


@pytest.mark.slow
def test_a_queue_reviewed_and_its_accepted_images_exported_in_the_browser(ui, tmp_path):
    from playwright.sync_api import expect

    url, lake, out = ui
    expect.set_options(timeout=WAIT_MS)
    with browser_page() as (page, main):

        # Queues: a least-confidence queue of 8, made from the form.
        page.goto(f"{url}/queues")
        expect(main.get_by_role("heading", name="Queues", exact=True).first).to_be_visible()
        choose(
            page, main.get_by_test_id("stSelectbox").filter(has_text="Sampler"), re.compile(r"^least-confidence")
        )
        wait_idle(page, main)
        main.get_by_label("Queue name").fill("browser-low")
        main.get_by_label("Queue name").press("Tab")
        wait_idle(page, main)
        main.get_by_label(re.compile(r"^Size")).fill("8")
        main.get_by_label(re.compile(r"^Size")).press("Tab")
        wait_idle(page, main)
        main.get_by_role("button", name="Make queue").click()
        expect(main.get_by_text(re.compile(r"^version 1 · 8 images by least-confidence"))).to_be_visible()
        screenshot(page, main, tmp_path / "01-queues.png")

        # Review: the queue's 8 images, each with its reason; accept them all.
        wait_idle(page, main)
        main.get_by_role("button", name="Open in Review").click()
        expect(main.get_by_role("heading", name="Review", exact=True)).to_be_visible()
        expect(main.get_by_test_id("stCheckbox")).to_have_count(8)
        expect(main.get_by_test_id("stCaptionContainer").filter(has_text="1 - max p")).to_have_count(8)
        expect(main.get_by_label(re.compile(r"^Review name"))).to_have_value("browser-low")
        wait_idle(page, main)
        main.get_by_role("button", name="Accept all 8 shown").click()
        accepted = main.get_by_test_id("stMetric").filter(has_text="Accepted").get_by_test_id("stMetricValue")
        expect(accepted).to_have_text("8")
        screenshot(page, main, tmp_path / "02-review-queue.png")

        # Export: the review's accepted images to a folder, as Label Studio tasks.
        page.goto(f"{url}/export")
        expect(main.get_by_role("heading", name="Export for labelling")).to_be_visible()
        main.get_by_text("Review (accepted images)", exact=True).click()
        wait_idle(page, main)
        choose(page, main.get_by_test_id("stSelectbox").filter(has_text="Review"), "browser-low")
        # The target: the config's one allowed folder, chosen already (a choice, not a text box).
        main.get_by_role("button", name="Export 8 images").click()
        expect(main.get_by_text(re.compile(r"^Batch \w+: 8 images as label-studio"))).to_be_visible()
        screenshot(page, main, tmp_path / "03-export.png")
        errors = main.get_by_test_id("stException").or_(main.get_by_test_id("stAlertContentError"))
        assert errors.count() == 0, errors.all_inner_texts()

    with LakeDB(lake) as db:
        queued = db.query("SELECT image_id FROM queues WHERE queue = 'browser-low' ORDER BY rank").column(0).to_pylist()
        sent = db.query("SELECT batch, image_id FROM exports WHERE source = 'review:browser-low'").to_pylist()
    assert len(queued) == 8 and sorted(r["image_id"] for r in sent) == sorted(queued)
    tasks = json.loads((out / sent[0]["batch"] / "tasks.json").read_text())
    assert sorted(t["data"]["edgemine_image_id"] for t in tasks) == sorted(queued)


def test_without_a_login_no_page_thumbnail_or_result_is_reachable_in_the_browser(gated_ui, tmp_path):
    from playwright.sync_api import expect

    url, password = gated_ui
    expect.set_options(timeout=WAIT_MS)
    with browser_page() as (page, main):
        for path in ("", "/similar", "/sql", "/review", "/export", "/metrics"):  # every URL: the login form only
            page.goto(f"{url}{path}")
            expect(main.get_by_role("button", name="Log in")).to_be_visible()
            wait_idle(page, main)
            assert page.locator("img[src*='/media/']").count() == 0, path
            assert main.get_by_test_id("stDataFrame").count() == 0 and main.get_by_test_id(
                "stDownloadButton").count() == 0, path
            assert page.get_by_test_id("stSidebarNav").count() == 0, path  # no page links either
        screenshot(page, main, tmp_path / "01-login.png")

        main.get_by_role("textbox", name="Name").fill("rick")
        main.get_by_role("textbox", name="Password").fill("wrong-password")
        main.get_by_role("button", name="Log in").click()
        expect(main.get_by_text("wrong name or password")).to_be_visible()
        main.get_by_role("textbox", name="Password").fill(password)
        main.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("Signed in as rick (reviewer)")).to_be_visible()
        nav = page.get_by_test_id("stSidebarNav")
        expect(nav.get_by_role("link", name="Review")).to_be_visible()
        expect(nav.get_by_role("link", name="Export")).to_have_count(0)  # not a reviewer's page
        expect(main.get_by_role("heading", name="Lake", exact=True)).to_be_visible()  # the lake's page, now
        # Streamlit's developer tools (Deploy, Rerun, Clear cache) are not a reviewer's.
        expect(page.get_by_test_id("stToolbar")).to_be_visible()
        assert page.get_by_role("button", name="Deploy").count() == 0
        assert page.get_by_test_id("stAppDeployButton").count() == 0
        screenshot(page, main, tmp_path / "02-signed-in.png")
