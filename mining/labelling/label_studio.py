"""A running Label Studio server, over its REST API: projects, tasks in, annotations out.

``push_tasks`` creates the project when missing (with the labelling config of
mining.labelling.formats.label_studio_json), then imports only the tasks whose image is not in the
project yet: our image id travels in each task's ``data.edgemine_image_id``, and
the project's tasks are read first, so a rerun (or a run killed after the import
and before the lake's commit) never adds a task twice. ``pull_annotations``
returns the project's annotated tasks as its JSON export gives them, which
mining.labelling.labels imports.

The token is Label Studio's legacy API token (``Authorization: Token ...``), from
``[export] label_studio_token`` or $EDGEMINE_LABEL_STUDIO_TOKEN.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mining.core.errors import ExportError

if TYPE_CHECKING:
    from mining.labelling.formats import Item, LabelStudio

log = logging.getLogger(__name__)

TOKEN_HELP = ("set EDGEMINE_LABEL_STUDIO_TOKEN (or [export] label_studio_token) to the server's legacy API token "
              "(Account & Settings > Legacy Token)")
IMPORT_CHUNK = 1000  # tasks per import request
PAGE_SIZE = 1000


class Client:
    """A Label Studio server at ``url`` with ``token``; every failure is an ExportError
    saying what to set or check."""

    def __init__(self, url: str, token: str, *, timeout: float = 60):
        import requests

        if not token:
            raise ExportError(f"no Label Studio token: {TOKEN_HELP}")
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.timeout = timeout

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.ConnectionError:
            raise ExportError(
                f"cannot reach Label Studio at {self.url}: check the URL and that the server is up"
            ) from None
        except requests.Timeout:
            raise ExportError(
                f"Label Studio at {self.url} did not answer in {self.timeout:.0f} s; try again later"
            ) from None
        if response.status_code in (401, 403):
            raise ExportError(f"Label Studio at {self.url} refused the token ({response.status_code}): {TOKEN_HELP}")
        if response.status_code >= 400:
            raise ExportError(f"Label Studio at {self.url} refused {method} {path}: {response.status_code} "
                              f"{response.text[:300]}")
        return response.json() if response.content else None

    def project(self, title: str, label_config: str | None = None) -> int:
        """The id of the project titled ``title``; created (with ``label_config``) when missing."""
        page = 1
        while True:
            listed = self.request("GET", "/api/projects", params={"page": page, "page_size": 100})
            projects = listed.get("results", []) if isinstance(listed, dict) else listed
            for p in projects:
                if p.get("title") == title:
                    return int(p["id"])
            if not isinstance(listed, dict) or not listed.get("next"):
                break
            page += 1
        if label_config is None:
            raise ExportError(f"Label Studio at {self.url} has no project {title!r}")
        created = self.request("POST", "/api/projects", json={"title": title, "label_config": label_config})
        log.info("created Label Studio project %r (id %s)", title, created["id"])
        return int(created["id"])

    def tasks(self, project: int) -> list[dict[str, Any]]:
        """Every task of the project (all fields)."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            listed = self.request("GET", "/api/tasks", params={"project": project, "page": page, "page_size": PAGE_SIZE,
                                                              "fields": "all"})
            chunk = listed.get("tasks", listed.get("results", [])) if isinstance(listed, dict) else listed
            found += chunk
            total = listed.get("total") if isinstance(listed, dict) else None
            if not chunk or len(chunk) < PAGE_SIZE or (total is not None and len(found) >= total):
                return found
            page += 1

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> None:
        for start in range(0, len(tasks), IMPORT_CHUNK):
            self.request("POST", f"/api/projects/{project}/import", json=tasks[start:start + IMPORT_CHUNK])

    def export(self, project: int) -> list[dict[str, Any]]:
        """The project's annotated tasks, as its JSON export."""
        return self.request("GET", f"/api/projects/{project}/export", params={"exportType": "JSON"}) or []


def task_keys(tasks: list[dict[str, Any]]) -> dict[str, int]:
    """image id -> task id, for the tasks that carry our key."""
    return {t["data"]["edgemine_image_id"]: int(t["id"]) for t in tasks
            if isinstance(t.get("data"), dict) and t["data"].get("edgemine_image_id")}


def push_tasks(url: str, project: str, writer: LabelStudio, tasks: list[list[Item]], *, token: str,
               progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Import the items (``tasks``: chunks of ``task_size``) into the project ``project``
    at ``url`` with their pre-annotations, skipping images the project has already;
    returns image id -> Label Studio task id for every item."""
    client = Client(url, token)
    project_id = client.project(project, writer.config_xml())
    present = task_keys(client.tasks(project_id))
    for chunk in tasks:
        new = [writer.task(i) for i in chunk if i.image_id not in present]
        if new:
            client.import_tasks(project_id, new)
        if progress:
            progress(len(chunk))
    if any(i.image_id not in present for chunk in tasks for i in chunk):
        present = task_keys(client.tasks(project_id))
    return present


def pull_annotations(url: str, project: str, *, token: str) -> list[dict[str, Any]]:
    """The annotated tasks of project ``project`` at ``url`` (its JSON export)."""
    client = Client(url, token)
    return client.export(client.project(project))
