"""Commands that do not run the model start without torch (a second and more of
imports): `edgemine sql`, `tables`, and `similar` by image id. Their speed is
measured in tests/benchmarks/bench_startup.py; this checks what they load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import rows

HEAVY = ("torch", "torchvision", "timm")


def modules_after(args: list[str]) -> tuple[int, dict]:
    """Run the command in a fresh interpreter; its exit code and which heavy modules it loaded."""
    code = ("import json, sys; from jobs.cli import main; rc = main(sys.argv[1:]); "
            f"print(json.dumps({{'rc': rc, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *args, "--quiet"], capture_output=True, text=True, timeout=300)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["rc"], report


@pytest.mark.parametrize("args", [
    ["sql", "SELECT 1"],
    ["sql", "SELECT count(*) FROM predictions"],
    ["tables"],
    ["narrow", "list"],
    ["review", "list"],
    ["models"],
])
def test_read_commands_do_not_import_torch(demo_lake, args):
    rc, report = modules_after([*args, "--lake", demo_lake.uri])
    assert rc == 0 and report["loaded"] == []


def test_similar_by_image_id_does_not_import_torch_but_a_file_seed_does(demo_lake):
    seed, uri = rows(demo_lake, "SELECT image_id, uri FROM images ORDER BY image_id LIMIT 1")[0].values()
    rc, report = modules_after(["similar", seed, "-k", "5", "--lake", demo_lake.uri])
    assert rc == 0 and report["loaded"] == []
    rc, report = modules_after(
        ["similar", uri, "-k", "5", "--lake", demo_lake.uri]
    )  # the control: a file needs the model
    assert rc == 0 and report["loaded"] == ["torch", "torchvision"]  # a ResNet's: timm only for efficientnet-lite0
