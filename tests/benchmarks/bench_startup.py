"""Benchmark: how long a command takes from start to exit, and how much of it is imports.

On a demo lake (2,000 images by default, built if missing), each command runs in a
fresh process as a user types it:

- ``python -c pass``: the interpreter alone; then the libraries each command needs, imported alone;
- the bare interpreter running ``SELECT 1`` in DuckDB (what a user would otherwise type: the peer
  of ``edgemine sql "SELECT 1"``, whose goal is 1.5x it);
- ``edgemine sql "SELECT 1"`` and ``edgemine sql "SELECT count(*) FROM predictions"``;
- ``edgemine similar ID -k 20``: the index synced and loaded, a search, a table printed;
- ``edgemine similar FILE -k 20``: the same from an image file, which needs the model (torch).

Wall time is the best of ``--repeat`` runs, after one run that is not counted; the commands
run with compiled bytecode as an installed package has it (PYTHONDONTWRITEBYTECODE, which a
test environment may set, is dropped; the .pyc files go to a temporary PYTHONPYCACHEPREFIX,
not the checkout): without it every run compiled our modules again (0.2 s). Import time is the same command run with
``python -X importtime``: the sum of the top-level imports' cumulative times (the
imports the command does itself, lazily ones included), from its fastest run.

    python tests/benchmarks/bench_startup.py [--lake DIR] [--images 2000] [--repeat 5] [--only TEXT] [--json]

``--only sql`` runs only the commands whose name holds "sql" (and the floors).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from jobs.demo import run_demo  # noqa: E402
from mining.core.config import Config, DemoConfig  # noqa: E402
from mining.core.lake import Lake  # noqa: E402
from mining.core.sql import LakeDB  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

CLI = [sys.executable, "-m", "jobs.cli"]
BARE_SELECT = "python: import duckdb; SELECT 1 (sql's peer)"
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {
    "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(), "edgemine-bench-startup-pycache")}
TOP_LEVEL_IMPORT = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| {1,2}(\S.*)$")


def timed(command: list[str], repeat: int) -> float:
    """Best wall time of ``repeat`` runs, in seconds."""
    subprocess.run(command, check=True, capture_output=True, cwd=REPO, env=ENV)  # writes the bytecode
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=REPO, env=ENV)
        best = min(best, time.perf_counter() - started)
    return best


def import_seconds(command: list[str], repeat: int) -> float:
    """Seconds of top-level imports in the fastest of ``repeat`` runs with -X importtime."""
    best = float("inf")
    for _ in range(repeat):
        done = subprocess.run([command[0], "-X", "importtime", *command[1:]], check=True, capture_output=True,
                              text=True, cwd=REPO, env=ENV)
        total = sum(int(m[1]) for line in done.stderr.splitlines() if (m := TOP_LEVEL_IMPORT.match(line)))
        best = min(best, total / 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", default="/tmp/edgemine-bench-startup", help="demo lake folder (built if missing)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", help="run only the edgemine commands whose name holds this text")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    lake = Lake(args.lake)
    run_demo(Config(lake=lake.uri, demo=replace(DemoConfig(), images=args.images)), show_progress=False)
    with LakeDB(lake) as db:
        seed, uri = db.query("SELECT image_id, uri FROM images ORDER BY image_id LIMIT 1").to_pylist()[0].values()
    typed = {
        'edgemine sql "SELECT 1"': ["sql", "SELECT 1"],
        'edgemine sql "SELECT count(*) FROM predictions"': ["sql", "SELECT count(*) FROM predictions"],
        "edgemine similar ID -k 20": ["similar", seed, "-k", "20"],
        "edgemine similar FILE -k 20 (loads the model)": ["similar", uri, "-k", "20"],
    }
    # The libraries' own start-up, the floor under each command: a sql query over a table needs
    # DuckDB and pyarrow (a query of plain values DuckDB alone: the bare SELECT 1); similar also
    # FAISS (and pandas before issue 26: pyarrow imports it the first time it converts Python
    # values, pa.array of a list; the hits are printed without that now).
    commands = {"python -c pass (the floor)": [sys.executable, "-c", "pass"],
                BARE_SELECT: [sys.executable, "-c", "import duckdb; print(duckdb.sql('SELECT 1').fetchall())"],
                "python: import duckdb, pyarrow (floor of sql)": [sys.executable, "-c", "import duckdb, pyarrow"],
                "python: import duckdb, pyarrow, faiss (floor of similar)":
                    [sys.executable, "-c", "import duckdb, pyarrow, faiss"],
                "python: import duckdb, pyarrow, pandas, faiss (the floor with pandas)":
                    [sys.executable, "-c", "import duckdb, pyarrow, pandas, faiss"]}
    commands |= {name: [*CLI, *words, "--lake", lake.uri, "--quiet"] for name, words in typed.items()
                 if args.only is None or args.only in name}
    results = []
    for name, command in commands.items():
        wall = timed(command, args.repeat)
        imports = import_seconds(command, args.repeat)
        results.append({"command": name, "wall_s": round(wall, 3), "imports_s": round(imports, 3),
                        "imports_share": round(imports / wall, 2)})
        print(f"{name:<50} {wall:6.3f} s, of which imports {imports:6.3f} s", file=sys.stderr)
    walls = {r["command"]: r["wall_s"] for r in results}
    for r in results:  # the goal's ratio: `sql "SELECT 1"` against the bare interpreter's same query
        if r["command"].startswith('edgemine sql "SELECT 1"'):
            r["x_bare_select"] = round(r["wall_s"] / walls[BARE_SELECT], 2)
    report = {"machine": describe({}), "lake_images": args.images, "repeat": args.repeat, "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"\n{report['machine']}; demo lake of {args.images} images, best of {args.repeat}\n")
        print("| command | wall (s) | imports (s) | imports share | x the bare SELECT 1 |")
        print("|---|---:|---:|---:|---:|")
        for r in results:
            ratio = f"{r['x_bare_select']:.2f}x" if "x_bare_select" in r else ""
            share = f"{r['imports_share']:.0%}"
            print(f"| `{r['command']}` | {r['wall_s']:.3f} | {r['imports_s']:.3f} | {share} | {ratio} |")


if __name__ == "__main__":
    main()
