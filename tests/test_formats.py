"""The export formats as plug-ins (mining.labelling.formats): a format registered in FORMATS is
written by `export` and read back by `labels import` with no other edit; the registry
refuses unknown and twice-used names. Each real format's files and parser are
tested in tests/test_export.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mining.core.errors import ExportError, LabelError
from mining.core.lake import Lake
from mining.core.sql import LakeDB
from mining.labelling.export import export_images
from mining.labelling.formats import FORMATS, Annotation, LabelFormat, _by_name, reader_for, writer_for
from mining.labelling.labels import import_labels
from tests.helpers import rows
from tests.test_export import build, config_of


class TinyCsv(LabelFormat):
    """A toy format: one ``image_id,label`` line per image, one file per image under labels/."""

    name = "tiny-csv"
    main_file = "index.csv"
    importable = True

    def files(self, items):
        lines = {f"labels/{i.image_id}.csv": f"{i.image_id},{i.label or ''}\n".encode() for i in items}
        return {self.main_file: "".join(f"{i.image_id}\n" for i in items).encode(), **lines}

    def file_of(self, item):
        return f"labels/{item.image_id}.csv"

    @classmethod
    def parse(cls, data, source):
        found = []
        for n, line in enumerate(data.decode().splitlines()):
            image_id, label = line.split(",")
            found.append(Annotation(n, line, image_id=image_id, label=label.upper() or None))
        return found


def test_a_new_format_is_one_class_in_the_registry(tmp_path, monkeypatch):
    monkeypatch.setitem(FORMATS, TinyCsv.name, TinyCsv)
    lake = Lake(str(tmp_path / "lake"))
    ids = build(lake, 4)
    config = config_of(lake)
    with LakeDB(lake) as db:
        sent = export_images(db, ids, fmt="tiny-csv", target=str(tmp_path / "out"), config=config, task_size=2)
    assert (sent.status, sent.exported, sent.tasks) == ("exported", 4, 2)
    assert sent.files == ["task-0001/index.csv", "task-0002/index.csv", "batch.json"]
    exported = rows(lake, "SELECT image_id, task, file FROM exports ORDER BY task, image_id")
    assert [(r["task"], r["file"]) for r in exported] == [
        (k // 2 + 1, f"task-{k // 2 + 1:04d}/labels/{r['image_id']}.csv") for k, r in enumerate(exported)]
    first = Path(sent.folder) / exported[0]["file"]
    with LakeDB(lake) as db:
        back = import_labels(db, str(first), fmt="tiny-csv", config=config, annotator="t", allow_new_classes=True)
    assert (back.imported, back.images) == (1, 1)
    label = rows(lake, "SELECT image_id, label, format FROM labels")
    assert label == [{"image_id": exported[0]["image_id"], "label": label[0]["label"], "format": "tiny-csv"}]
    assert label[0]["label"] in ("CAR", "PERSON")  # read by the toy parser, not another


def test_unknown_formats_list_the_registry():
    with pytest.raises(ExportError, match="unknown export format 'nope'; formats: label-studio, coco, cvat, yolo, "
                                          "prodigy, manifest$"):
        writer_for("nope")
    with pytest.raises(LabelError, match="unknown label format 'prodigy'; formats: label-studio, coco, cvat, yolo$"):
        reader_for("prodigy")  # written, never read back
    assert reader_for("yolo") is writer_for("yolo") is FORMATS["yolo"]


def test_two_formats_cannot_share_a_name():
    with pytest.raises(ValueError, match="two formats are named coco"):
        _by_name(FORMATS["coco"], FORMATS["cvat"], FORMATS["coco"])
