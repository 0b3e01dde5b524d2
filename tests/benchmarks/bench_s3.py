"""Benchmark: requests and time against S3 (moto's server on loopback, as the tests use).

Two things a user of an S3 lake pays per request:

- **reading images**: ``--images`` objects of ``--kb`` KiB read by mining.core.lake.read_many
  (one ranged GET each) side by side with fsspec's plain ``cat_ranges`` (what the job
  used before: s3fs asks each object's size first, a HEAD, then GETs it), in one run;
- **a query on a young lake**: ``LakeDB`` over a lake where most tables do not exist yet
  (each missing table's folder is checked for the old layout): requests per query.

Requests are counted from moto's request log. Loopback requests cost about a
millisecond; real S3 costs 10-30 ms each, so the ratio of requests is what carries over.

    python tests/benchmarks/bench_s3.py [--images 500] [--kb 60] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import s3fs  # noqa: E402

from mining.core.config import S3Config  # noqa: E402
from mining.core.lake import Lake, read_many  # noqa: E402
from mining.core.sql import LakeDB  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402
from tests.moto_server import start as start_moto  # noqa: E402

KEY, SECRET = "bench-key", "bench-secret"
REQUEST = re.compile(r'(GET|HEAD|PUT|POST|DELETE) /')  # moto colours some lines


def requests_during(log: Path, work) -> tuple[Counter, float]:
    """(requests by method, seconds) while ``work()`` runs."""
    before = len(log.read_text().splitlines())
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    time.sleep(0.3)  # the server writes its log line after answering
    lines = log.read_text().splitlines()[before:]
    return Counter(m.group(1) for line in lines if (m := REQUEST.search(line))), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--kb", type=int, default=60, help="size of each object in KiB (a 640x480 JPEG is 40-80)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each reader; the best time is kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    log = Path(tempfile.mkdtemp(prefix="bench-s3-")) / "moto.log"
    server, endpoint = start_moto(log)
    try:
        fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": endpoint})
        fs.mkdir("bench-bucket")
        paths = [f"bench-bucket/images/{i:06d}.jpg" for i in range(args.images)]
        payload = os.urandom(args.kb * 1024)
        fs.pipe({p: payload for p in paths})
        readers = {"read_many (one GET each)": lambda: read_many(fs, paths),
                   "fsspec cat_ranges (HEAD + GET each)": lambda: fs.cat_ranges(paths, None, None, on_error="return")}
        results: dict = {
            "machine": describe({"s3fs": s3fs.__version__}),
            "images": args.images,
            "kb": args.kb,
            "read": {},
        }
        for name, read in readers.items():
            runs = [requests_during(log, read) for _ in range(args.repeat)]
            results["read"][name] = {"requests": sum(runs[0][0].values()), "by_method": dict(runs[0][0]),
                                     "seconds": min(s for _, s in runs)}
        lake = Lake(
            "s3://bench-bucket/lake", S3Config(endpoint_url=endpoint, region="us-east-1", key=KEY, secret=SECRET)
        )

        def query() -> None:
            with LakeDB(lake, read_only=False) as db:  # a job's database: every table's view is made
                db.query("SELECT count(*) FROM predictions JOIN images USING (image_id)")

        counted, seconds = requests_during(log, query)
        results["young_lake_query"] = {"requests": sum(counted.values()), "seconds": seconds}
    finally:
        server.terminate()
        server.wait(timeout=30)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(results["machine"])
    print(f"reading {args.images} objects of {args.kb} KiB from moto on loopback (best of {args.repeat}):")
    base = results["read"]["fsspec cat_ranges (HEAD + GET each)"]
    for name, r in results["read"].items():
        print(f"  {name:38s} {r['requests']:6d} requests {r['by_method']}  {r['seconds']:.2f} s "
              f"({base['seconds'] / r['seconds']:.2f}x the fsspec time)")
    q = results["young_lake_query"]
    print(f"a job's LakeDB on a lake with no tables yet: {q['requests']} requests, {q['seconds']:.2f} s")


if __name__ == "__main__":
    main()
