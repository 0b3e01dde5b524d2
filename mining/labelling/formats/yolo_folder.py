"""YOLO: a folder of ``images/``, ``labels/<id>.txt`` (``class cx cy w h``, normalised)
and ``data.yaml`` (the class names) out, and the same folder back in."""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

from mining.core.errors import LabelError
from mining.labelling.formats.format_base import Annotation, Item, LabelFormat


class Yolo(LabelFormat):
    """YOLO: ``images/<id>.<ext>`` (copied: YOLO readers pair each image with the label
    file of the same name), ``labels/<id>.txt`` (``class cx cy w h``, normalised to
    0-1), and ``data.yaml`` with the class names."""

    name = "yolo"
    main_file = "data.yaml"
    copies_images = True
    importable = True

    def files(self, items: list[Item]) -> dict[str, bytes]:
        written = {}
        for item in items:
            lines = []
            for b in item.boxes if self.predictions else ():
                x1, y1, x2, y2 = b["box"]
                cx, cy = (x1 + x2) / 2 / item.width, (y1 + y2) / 2 / item.height
                w, h = (x2 - x1) / item.width, (y2 - y1) / item.height
                lines.append(f"{self.class_ids[b['label']]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
            written[f"labels/{item.image_id}.txt"] = "".join(lines).encode()
        names = "".join(f"  {k}: {json.dumps(c)}\n" for k, c in enumerate(self.classes))
        written[self.main_file] = (f"path: .\ntrain: images\nval: images\nedgemine_batch: {self.batch}\n"
                                   f"nc: {len(self.classes)}\nnames:\n{names}").encode()
        return written

    def file_of(self, item: Item) -> str:
        return f"labels/{item.image_id}.txt"

    @classmethod
    def read(cls, fs: Any, path: str, source: str) -> list[Annotation]:
        """The annotations of a YOLO folder (``path``, or its data.yaml)."""
        folder = posixpath.dirname(path) if path.endswith((".yaml", ".yml")) else path
        if not fs.exists(folder):
            raise LabelError(f"{source}: no such folder")
        return parse_yolo(fs, folder)


def parse_yolo(fs: Any, folder: str) -> list[Annotation]:
    """A YOLO folder: ``data.yaml``'s names, ``labels/<image>.txt`` lines ``class cx cy w h``."""
    names = _yolo_names(fs, folder)
    data_yaml = fs.cat_file(posixpath.join(folder, "data.yaml")).decode()
    batch = re.search(r"^edgemine_batch:\s*(\S+)\s*$", data_yaml, flags=re.M)
    label_dir = posixpath.join(folder, "labels")
    if not fs.exists(label_dir):
        raise LabelError(f"{folder}: no labels/ folder; a YOLO export has labels/*.txt beside data.yaml")
    found = []
    n = 0
    for path in sorted(p for p in fs.find(label_dir) if p.endswith(".txt")):
        stem = posixpath.splitext(posixpath.basename(path))[0]
        for line in fs.cat_file(path).decode().splitlines():
            if not line.strip():
                continue
            a = Annotation(n, f"{posixpath.basename(path)}: {line}", ref=stem, batch=batch.group(1) if batch else None)
            n += 1
            parts = line.split()
            try:
                if len(parts) != 5:
                    raise ValueError(f"{len(parts)} fields, expected class cx cy w h")
                cls = int(parts[0])
                a.yolo_box = [float(v) for v in parts[1:]]
                if cls not in names:
                    a.error = f"unknown class: class index {cls} is not in data.yaml's names"
                a.label = names.get(cls)
            except ValueError as e:
                a.error = f"malformed line ({e})"
            found.append(a)
    return found


def _yolo_names(fs: Any, folder: str) -> dict[int, str]:
    """data.yaml's ``names`` in a YOLO folder."""
    try:
        text = fs.cat_file(posixpath.join(folder, "data.yaml")).decode()
    except FileNotFoundError:
        raise LabelError(f"{folder}: no data.yaml; a YOLO export has data.yaml (names) and labels/*.txt") from None
    return parse_yolo_names(text, f"{folder}/data.yaml")


def parse_yolo_names(text: str, where: str) -> dict[int, str]:
    """A data.yaml's ``names``: a mapping (``0: car``) or a list, parsed without a YAML library
    for the two layouts YOLO tools write. LabelError (naming ``where``) when it has none."""
    inline = re.search(r"^names:\s*\[(.*)\]\s*$", text, flags=re.M)
    if inline:
        return {k: v.strip().strip("'\"") for k, v in enumerate(inline.group(1).split(",")) if v.strip()}
    block = text.split("names:", 1)[1] if "names:" in text else ""
    names = {}
    for k, line in enumerate(re.findall(r"^\s+(.+)$", block, flags=re.M)):
        key, sep, value = line.partition(":")
        if line.lstrip().startswith("- "):
            names[k] = json.loads(line.strip()[2:]) if line.strip()[2:].startswith('"') else line.strip()[2:]
        elif sep and key.strip().isdigit():
            value = value.strip()
            names[int(key)] = json.loads(value) if value.startswith('"') else value.strip("'")
    if not names:
        raise LabelError(f"{where} has no names; expected names: {{0: car, 1: person}} or a list")
    return names
