"""Hostile input, generated: every importer (predictions, feedback, and label files in COCO,
Label Studio and CVAT) fed seeded random files (wrong JSON types, deep nesting, huge numbers,
odd field names, non-UTF-8 bytes, binary noise, empty files) through the CLI in-process.

Each case must end as the CLI's contract says (0: done; 1: labels imported with some refused;
2: one line saying what is wrong) and never as an internal error (a bug: exit 1 with
"internal error"); afterwards every table still reads. The counts are printed (-s shows
them) for the closing notes."""

from __future__ import annotations

import json
import random

import pytest

from jobs.cli import main
from mining.core.lake import Lake
from tests.helpers import jsonl, main_in_process, prediction, put_images

CASES = 40  # per importer: seeded, so a failure reproduces exactly
FIELD_NAMES = ["extra", "Camera", "camera", "detections", "scores", "prediction_id", "image_id", "nested", "",
               '"', 'a"b', "x" * 300, "\u0000", "__row", "source", "ingested_at", "date", "ts", "confidence"]


def scalar(r: random.Random, uri: str):
    return r.choice([None, True, False, 0, -1, 2**70, -(2**70), 1.5, float("nan"), 1e308, "", "x", "\u00e9\u0000",
                     "2026-11-04T23:59:00", "1790000000", "[1,2]", "{}", "a" * 5000, "../../etc/passwd", uri])


def value(r: random.Random, uri: str, depth: int = 0):
    k = r.random()
    if depth > 3 or k < 0.6:
        return scalar(r, uri)
    if k < 0.8:
        return [value(r, uri, depth + 1) for _ in range(r.randint(0, 4))]
    return {r.choice(["a", "box", "label", "score", "", "ts", "x y"]): value(r, uri, depth + 1)
            for _ in range(r.randint(0, 4))}


def mutate(r: random.Random, record: dict, uri: str) -> dict:
    record = dict(record)
    for _ in range(r.randint(1, 3)):
        op, keys = r.random(), list(record)
        if op < 0.5 and keys:
            record[r.choice(keys)] = value(r, uri)
        elif op < 0.7 and keys:
            record.pop(r.choice(keys))
        else:
            record[r.choice(FIELD_NAMES)] = value(r, uri)
    return record


def whole_file(r: random.Random, text: str) -> bytes:
    """The text as a file, or something else a careless or hostile sender sends instead."""
    k = r.random()
    if k < 0.08:
        return text.encode("latin-1", "replace") + b"\xff\xfe\x80"  # not UTF-8
    if k < 0.12:
        return bytes(r.randrange(256) for _ in range(300))  # noise
    if k < 0.16:
        return b"[" * 100_000 + b"]" * 100_000  # nested deeper than any parser's stack
    if k < 0.2:
        return ('{"a": ' * 5000 + "1" + "}" * 5000 + "\n").encode()
    if k < 0.24:
        return b""
    if k < 0.28:
        return "\ufeff".encode() + text.encode()  # a byte-order mark
    return text.encode("utf-8", "surrogatepass")


def predictions_file(r, uris):
    return jsonl([mutate(r, prediction(uris[j % len(uris)], j), uris[0]) for j in range(r.randint(1, 5))]), "jsonl"


def feedback_file(r, uris):
    report = {"image_uri": uris[0], "severity": "high", "reporter": "u", "reason": "wrong",
              "at": "2026-11-01T00:00:00Z"}
    return jsonl([mutate(r, report, uris[0]) for _ in range(3)]), "jsonl"


def coco_file(r, uris):
    doc = {"images": [mutate(r, {"id": 1, "file_name": uris[0], "width": 64, "height": 48}, uris[0])],
           "annotations": [mutate(r, {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}, uris[0])],
           "categories": [mutate(r, {"id": 1, "name": "car"}, uris[0])]}
    return json.dumps(mutate(r, doc, uris[0]) if r.random() < 0.3 else doc), "json"


def label_studio_file(r, uris):
    result = {"type": r.choice(["choices", "rectanglelabels"]), "value": {"choices": ["car"], "x": 1, "y": 2,
              "width": 3, "height": 4, "rectanglelabels": ["car"]}, "original_width": 64, "original_height": 48}
    task = {"id": 1, "data": {"image": uris[0]},
            "annotations": [mutate(r, {"result": [mutate(r, result, uris[0])], "completed_by": 1}, uris[0])]}
    return json.dumps([mutate(r, task, uris[0])] if r.random() < 0.8 else value(r, uris[0])), "json"


def cvat_file(r, uris):
    attrs = r.choice(['name="a.jpg"', f'name="{uris[0]}" width="x"', "", 'id="-1"', f'name="{uris[0]}"'])
    shape = r.choice(['<box label="car" xtl="1" ytl="2" xbr="3" ybr="4"/>', '<box label="car" xtl="nan"/>',
                      '<tag label="car"/>', '<polygon points="1,2;x"/>', '<box label="" xtl="1e999"/>'])
    return f'<?xml version="1.0"?><annotations><image id="0" {attrs}>{shape}</image></annotations>', "xml"


IMPORTERS = {
    "predictions": (["ingest", "predictions"], predictions_file),
    "feedback": (["ingest", "feedback"], feedback_file),
    "coco": (["labels", "import", "--format", "coco", "--allow-new-classes"], coco_file),
    "label-studio": (["labels", "import", "--format", "label-studio", "--allow-new-classes"], label_studio_file),
    "cvat": (["labels", "import", "--format", "cvat", "--allow-new-classes"], cvat_file),
}


@pytest.mark.parametrize("importer", list(IMPORTERS))
def test_hostile_files_are_errors_never_crashes_and_every_table_still_reads(importer, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    uris = put_images(lake, str(tmp_path / "src"), 6)
    assert main(["ingest", "images", str(tmp_path / "src"), "--lake", lake.uri, "--quiet"]) == 0
    command, make = IMPORTERS[importer]
    r = random.Random(f"fuzz-{importer}")
    outcomes: dict[object, int] = {}
    crashes = []
    for case in range(CASES):
        text, suffix = make(r, uris)
        path = tmp_path / f"case-{case}.{suffix}"
        path.write_bytes(whole_file(r, text))
        code, _, err = main_in_process([*command, str(path), "--lake", lake.uri, "--quiet"])
        outcomes[code] = outcomes.get(code, 0) + 1
        crashed = code not in (0, 1, 2) or "internal error" in err or "Traceback" in err
        if crashed or (code == 1 and command[0] != "labels"):  # 1 means "some refused" for labels only
            crashes.append((case, code, err.strip().splitlines()[-1:] if err.strip() else ""))
    unreadable = []
    for table in ["images", "predictions", "detections", "feedback", "labels", "errors"]:
        code, _, err = main_in_process(["sql", f"SELECT count(*) FROM {table}", "--lake", lake.uri])
        if code != 0:
            unreadable.append((table, err.strip()))
    print(f"\n{importer}: {CASES} cases, outcomes {dict(sorted(outcomes.items(), key=str))}, "
          f"{len(crashes)} crashes, {len(unreadable)} unreadable tables")
    assert not crashes
    assert not unreadable
