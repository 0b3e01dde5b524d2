"""Export into a real Label Studio server (label-studio 1.23.2, its own virtualenv made
by `make labelstudio`) and labels pulled back from it. Without that virtualenv these
tests are SKIPPED, loudly.

The server starts from a copy of a template data folder (database migrated, user and
token made: about 3 minutes the first time on a 2-core machine, kept in
.venv-labelstudio/template-data), once per test session; each test uses projects
of its own."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.cli import main
from mining.core.errors import ExportError
from mining.core.sql import LakeDB
from mining.labelling.export import export_images
from mining.labelling.label_studio import Client, push_tasks
from mining.labelling.labels import import_labels
from tests.helpers import rows
from tests.test_brush import build_mask_lake, check_labelled_masks, check_pre_annotations
from tests.test_export import build, config_of

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("EDGEMINE_LABEL_STUDIO_VENV", REPO / ".venv-labelstudio"))
BIN = VENV / "bin" / "label-studio"
TEMPLATE = VENV / "template-data"
USER, PASSWORD, TOKEN = "edgemine@example.com", "edgemine-test-pw", "edgemine-test-token"
pytestmark = [pytest.mark.slow, pytest.mark.label_studio]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(data: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    # Stray USERNAME/PASSWORD/PORT/HOST variables change what label-studio does: left out.
    env = {k: v for k, v in os.environ.items() if k not in ("USERNAME", "PASSWORD", "PORT", "HOST")}
    env |= {"LABEL_STUDIO_BASE_DATA_DIR": str(data), "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false"}
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [
                str(BIN),
                "start",
                "--no-browser",
                "--data-dir",
                str(data),
                "--internal-host",
                "127.0.0.1",
                "--port",
                str(port),
                "--username",
                USER,
                "--password",
                PASSWORD,
                "--user-token",
                TOKEN,
                "--enable-legacy-api-token",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        assert server.poll() is None, f"label-studio exited: {log.read_text()[-3000:]}"
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - loopback
                if b"UP" in response.read():
                    return server, url
        assert time.monotonic() < deadline, (
            f"label-studio did not come up on {port} in 600 s: {log.read_text()[-3000:]}"
        )
        time.sleep(0.5)


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture(scope="session")
def label_studio(request, tmp_path_factory) -> str:
    """The URL of a Label Studio server on a loopback port, for the session."""
    if not BIN.exists():
        message = (
            f"LABEL STUDIO TESTS SKIPPED: {BIN} is missing; `make labelstudio` installs label-studio==1.23.2 there"
        )
        capture = request.config.pluginmanager.getplugin("capturemanager")  # past pytest's capture, into CI logs
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"\n{message}", file=sys.stderr)
        pytest.skip(message)
    log = tmp_path_factory.mktemp("label-studio") / "server.log"
    if not TEMPLATE.exists():  # the cold start, once: migrations, the user, the token
        cold = tmp_path_factory.mktemp("label-studio-template") / "data"
        cold.mkdir()
        server, _ = _start(cold, log)
        _stop(server)
        staging = TEMPLATE.with_name(f"{TEMPLATE.name}.{os.getpid()}")
        shutil.copytree(cold, staging)
        staging.rename(TEMPLATE)
    data = tmp_path_factory.mktemp("label-studio-data") / "data"
    shutil.copytree(TEMPLATE, data)
    server, url = _start(data, log)
    yield url
    _stop(server)


@pytest.fixture
def ls_lake(tmp_path):
    from mining.core.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    return lake, build(lake, 4)


def ls_config(lake, token: str = TOKEN):
    return config_of(lake, label_studio_token=token)


def push(lake, ids, url, project, **kwargs):
    with LakeDB(lake) as db:
        return export_images(db, ids, fmt="label-studio", target=url, project=project, config=ls_config(lake), **kwargs)


def test_export_creates_the_project_imports_tasks_with_predictions_and_never_duplicates(label_studio, ls_lake):
    lake, ids = ls_lake
    first = push(lake, ids[:3], label_studio, "edgemine-push")
    assert (first.status, first.exported) == ("exported", 3)
    client = Client(label_studio, TOKEN)
    project = client.project("edgemine-push")
    tasks = {t["data"]["edgemine_image_id"]: t for t in client.tasks(project)}
    assert sorted(tasks) == sorted(ids[:3])
    came_back = tasks[ids[0]]["predictions"][0]
    assert came_back["model_version"] == "v7" and len(came_back["result"]) == 3
    box = next(r for r in came_back["result"] if r["type"] == "rectanglelabels")
    assert box["value"]["rectanglelabels"] == ["car"] and box["value"]["x"] == pytest.approx(100 * 2 / 64)
    assert box["original_width"] == 64 and box["original_height"] == 48

    assert push(lake, ids[:3], label_studio, "edgemine-push").status == "unchanged"
    # A run killed after its import and before the lake's commit: its tasks are there, the batch is not.
    from mining.labelling.export import LabelStudio, load_items

    with LakeDB(lake) as db:
        items, _ = load_items(db, ids[3:])
    for item in items:
        item.ref = item.uri
    push_tasks(label_studio, "edgemine-push", LabelStudio(["car", "person"], batch="killed"), [items], token=TOKEN)
    rest = push(lake, ids, label_studio, "edgemine-push")
    assert (rest.exported, rest.skipped) == (1, 3)
    resent = push(lake, ids, label_studio, "edgemine-push", resend=True)
    assert resent.exported == 4
    assert len(client.tasks(project)) == 4  # every image once in the project, whatever was rerun
    assert rows(lake, "SELECT count(DISTINCT batch) AS n FROM exports") == [{"n": 3}]


def test_annotated_in_label_studio_then_imported_into_the_lake(label_studio, ls_lake):
    lake, ids = ls_lake
    push(lake, ids[:2], label_studio, "edgemine-round-trip")
    client = Client(label_studio, TOKEN)
    project = client.project("edgemine-round-trip")
    for task in client.tasks(project):  # as a person would: accept the boxes, correct the class of one image
        result = [r for r in task["predictions"][0]["result"] if r["type"] == "rectanglelabels"]
        if task["data"]["edgemine_image_id"] == ids[1]:
            result = [{"id": "manual1", "from_name": "class", "to_name": "image", "type": "choices",
                       "value": {"choices": ["person"]}}]
        client.request("POST", f"/api/tasks/{task['id']}/annotations", json={"result": result, "was_cancelled": False})
    with LakeDB(lake) as db:
        first = import_labels(
            db, label_studio, fmt="label-studio", project="edgemine-round-trip", config=ls_config(lake)
        )
        again = import_labels(
            db, label_studio, fmt="label-studio", project="edgemine-round-trip", config=ls_config(lake)
        )
    assert (first.imported, first.errors, first.images) == (3, 0, 2) and (again.imported, again.already) == (0, 3)
    got = rows(lake, "SELECT image_id, label, box IS NOT NULL AS boxed FROM labels ORDER BY image_id, label")
    assert sorted((r["image_id"], r["label"], r["boxed"]) for r in got) == sorted(
        [(ids[0], "car", True), (ids[0], "person", True), (ids[1], "person", False)])
    assert (
        rows(lake, "SELECT DISTINCT batch FROM labels")[0]["batch"]
        == rows(lake, "SELECT batch FROM exports LIMIT 1")[0]["batch"]
    )


def test_unreachable_server_and_wrong_token_say_what_to_set(label_studio, ls_lake, capsys, monkeypatch):
    lake, ids = ls_lake
    closed = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ExportError, match="cannot reach Label Studio"):
        push(lake, ids, closed, "edgemine-x")
    with LakeDB(lake) as db, pytest.raises(ExportError, match="refused the token.*EDGEMINE_LABEL_STUDIO_TOKEN"):
        export_images(
            db, ids, fmt="label-studio", target=label_studio, project="edgemine-x", config=ls_config(lake, "wrong")
        )
    monkeypatch.delenv("EDGEMINE_LABEL_STUDIO_TOKEN", raising=False)
    args = ["export", "sql:SELECT image_id FROM images", "--format", "label-studio", "--to", label_studio, "--project",
            "edgemine-x", "--lake", lake.uri, "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no Label Studio token: set EDGEMINE_LABEL_STUDIO_TOKEN" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("EDGEMINE_LABEL_STUDIO_TOKEN", TOKEN)
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exported"] == 4
    assert rows(lake, "SELECT count(*) AS n FROM exports") == [{"n": 4}]


def test_brush_pre_annotations_go_through_the_server_and_come_back_as_masks_of_labels(label_studio, tmp_path):
    """Our brush RLE as the server keeps it: imported with the tasks, given back decoded equal,
    and once accepted by an annotator pulled into the lake as the same masks."""
    lake, ids, truth = build_mask_lake(tmp_path)
    assert push(lake, ids, label_studio, "edgemine-brush").exported == len(ids)
    client = Client(label_studio, TOKEN)
    project = client.project("edgemine-brush")
    tasks = client.tasks(project)
    assert len(tasks) == len(ids)
    check_pre_annotations(tasks, ids, truth)
    for task in tasks:
        client.request("POST", f"/api/tasks/{task['id']}/annotations",
                       json={"result": task["predictions"][0]["result"], "was_cancelled": False})
    with LakeDB(lake) as db:
        summary = import_labels(db, label_studio, fmt="label-studio", project="edgemine-brush", config=ls_config(lake))
    assert summary.errors == 0 and summary.images == len(ids)
    check_labelled_masks(lake, ids, truth)
