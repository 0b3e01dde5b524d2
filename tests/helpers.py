"""Test data made on the spot: real image files and prediction files, seeded."""

from __future__ import annotations

import io
import json
import posixpath

import numpy as np
from PIL import Image

from mining.lake import Lake, open_url


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


def kill_commit_after_moves(monkeypatch, lake: Lake, moves: int) -> None:
    """Make the lake's ``fs.mv`` raise (as a kill would stop it) after ``moves``
    successful moves: a commit cut half-way through publishing its files."""
    real_mv, done = lake.fs.mv, []

    def mv_then_die(*args, **kwargs):
        if len(done) == moves:
            raise KeyboardInterrupt("killed mid-commit")
        done.append(args)
        return real_mv(*args, **kwargs)

    monkeypatch.setattr(lake.fs, "mv", mv_then_die)
