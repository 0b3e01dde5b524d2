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


def modules_after(args: list[str], watched: tuple[str, ...] = HEAVY) -> tuple[int, dict]:
    """Run the command in a fresh interpreter; its exit code and which ``watched`` modules it loaded
    (``report["stdout"]``: what it printed)."""
    code = ("import json, sys; from jobs.cli import main; rc = main(sys.argv[1:]); "
            f"print(json.dumps({{'rc': rc, 'loaded': [m for m in {watched!r} if m in sys.modules]}}), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *args, "--quiet"], capture_output=True, text=True, timeout=300)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["rc"], report | {"stdout": done.stdout}


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


def test_a_query_reading_no_table_prints_duckdbs_rows_without_pyarrow(demo_lake):
    """`sql "SELECT 1"` costs about what DuckDB alone does (bench_startup.py): no pyarrow, numpy,
    pandas, nor the schemas (which import pyarrow); a query over a table still gets them."""
    arrow = ("pyarrow", "numpy", "pandas", "mining.core.schema")
    rc, report = modules_after(["sql", "SELECT 1 AS one, 'a' AS letter", "--lake", demo_lake.uri], arrow)
    assert rc == 0 and report["loaded"] == []
    assert report["stdout"] == "one | letter\n----+-------\n1   | a     \n(1 row)\n"
    rc, report = modules_after(["sql", "SELECT 1 AS one", "--json", "--lake", demo_lake.uri], arrow)
    assert rc == 0 and report["loaded"] == [] and json.loads(report["stdout"]) == [{"one": 1}]
    rc, report = modules_after(["sql", "SELECT count(*) AS n FROM images", "--lake", demo_lake.uri], arrow)
    assert rc == 0 and "pyarrow" in report["loaded"] and "(1 row)" in report["stdout"]


def test_similar_by_image_id_does_not_import_torch_but_a_file_seed_does(demo_lake):
    seed, uri = rows(demo_lake, "SELECT image_id, uri FROM images ORDER BY image_id LIMIT 1")[0].values()
    rc, report = modules_after(["similar", seed, "-k", "5", "--lake", demo_lake.uri], (*HEAVY, "pandas"))
    assert rc == 0 and report["loaded"] == []  # nor pandas: the table printed from the hits, not through Arrow
    assert report["stdout"].startswith("rank | image_id") and report["stdout"].endswith("(5 rows)\n")
    rc, report = modules_after(
        ["similar", uri, "-k", "5", "--lake", demo_lake.uri]
    )  # the control: a file needs the model
    assert rc == 0 and report["loaded"] == ["torch", "torchvision"]  # a ResNet's: timm only for efficientnet-lite0
