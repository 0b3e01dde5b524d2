"""Test data made on the spot: real image files and prediction files, seeded."""

from __future__ import annotations

import io
import json
import posixpath
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from mining.core import tables
from mining.core.lake import Lake, open_url
from mining.core.schema import EMBEDDINGS, embedding_rows
from mining.core.sql import LakeDB

EDGEMINE = Path(sys.executable).parent / "edgemine"

# Runs a test that takes the ``lake`` fixture (tests/conftest.py) on the local folder only:
# for what does not depend on storage (parsing, formats, planning). Storage paths (writes,
# commits, reads, kills and reruns) keep both, S3 included.
local_only = pytest.mark.parametrize("lake", ["local"], indirect=True)


def jpeg_bytes(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def png_bytes(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def source_uri(lake: Lake, name: str) -> str:
    """A folder for raw inputs next to the lake, on the same storage."""
    return lake.uri.rsplit("/", 1)[0] + "/" + name


def put(lake: Lake, uri: str, data: bytes | str) -> str:
    fs, path = open_url(uri, lake.s3)
    if lake.protocol == "file":
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return uri


def put_images(lake: Lake, folder: str, n: int, start: int = 0) -> list[str]:
    return [put(lake, f"{folder}/img-{i:04d}.jpg", jpeg_bytes(i)) for i in range(start, start + n)]


def prediction(uri: str, i: int, **fields) -> dict:
    row = {
        "image_uri": uri,
        "model_version": "v7",
        "ts": f"2026-10-{1 + i % 3:02d}T{i % 24:02d}:00:00Z",
        "label": ["car", "person"][i % 2],
        "confidence": round(0.3 + 0.6 * ((i * 37) % 100) / 100, 3),
        "camera": f"cam-{i % 4}",
    }
    return row | fields


def jsonl(rows: list[dict | str]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def rows(lake: Lake, sql: str, params=None) -> list[dict]:
    """The result of a read-only query on the lake, as dicts."""
    with LakeDB(lake) as db:
        return db.query(sql, params).to_pylist()


def clustered(n: int, seed: int, centres: int = 6, width: int = 512) -> np.ndarray:
    """float32 (n, width) unit vectors around a few centres, so neighbours mean something."""
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, width))
    x = middle[rng.integers(centres, size=n)] + 0.3 * rng.standard_normal((n, width))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def image_ids(n: int, start: int = 0) -> list[str]:
    """Made-up image ids (20 hex digits, as real ones are)."""
    return [f"{i:020x}" for i in range(start, start + n)]


def write_embeddings(lake: Lake, ids: list[str], vectors: np.ndarray, part: str, *, backbone: str = "resnet18",
                     weights: str = "random-seed0") -> None:
    """Embeddings written straight into the lake, as the embed job would (vectors float32 (n, width));
    an id embedded before gets its new vector (as `embed --overwrite` does)."""
    rows = embedding_rows(ids, backbone, weights, vectors, datetime.now(UTC), width=vectors.shape[1])
    tables.upsert(lake, EMBEDDINGS, rows, tables.commit_info("embed", part=part))


def write_fixed_size_embeddings(lake: Lake, ids: list[str], vectors: np.ndarray) -> None:
    """Embeddings as lakes written before widths varied hold them: fixed-size lists of 512 floats
    in the data files (resnet18, random-seed0), appended as the embed job then did."""
    old = EMBEDDINGS.schema.set(EMBEDDINGS.schema.get_field_index("embedding"),
                                pa.field("embedding", pa.list_(pa.float32(), 512), nullable=False))
    rows = pa.table({"image_id": ids, "backbone": ["resnet18"] * len(ids), "weights": ["random-seed0"] * len(ids),
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), 512),
                     "computed_at": [datetime.now(UTC)] * len(ids)}, schema=old)
    tables.append(lake, EMBEDDINGS, rows, tables.commit_info("embed", part="old"))


def main_in_process(argv: list[str]) -> tuple[object, str, str]:
    """`edgemine ARGV` run in this process: (exit code, stdout, stderr). An exception escaping
    main() comes back as the code ``"raised <type>: <message>"``, for the test to report."""
    import contextlib

    from jobs.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        except BaseException as e:  # noqa: BLE001 - the test reports it as the failure it is
            code = f"raised {type(e).__name__}: {e}"[:300]
    return code, out.getvalue(), err.getvalue()


def run_cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`edgemine ARGS --quiet` in a process of its own, as a user runs it."""
    result = subprocess.run([str(EDGEMINE), *args, "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result
