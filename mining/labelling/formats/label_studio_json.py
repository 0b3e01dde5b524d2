"""Label Studio's JSON: tasks out (the image, our id and batch, the newest prediction as
pre-annotations) with the labelling config, and its JSON export back in (boxes, choices
and brush masks). mining.labelling.label_studio pushes the same tasks to a server and pulls the export."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from mining.core.errors import LabelError
from mining.core.masks import decode as decode_mask
from mining.labelling import brush_rle
from mining.labelling.formats.format_base import Annotation, Item, LabelFormat, compact_json, load_json


def _result_id(image_id: str, n: int) -> str:
    """A result id unique within the task (Label Studio's own are 10 characters)."""
    return hashlib.sha1(f"{image_id}:{n}".encode()).hexdigest()[:10]


class LabelStudio(LabelFormat):
    """Label Studio tasks JSON: ``data.image`` (the reference), our image id and batch in
    ``data`` (the key imports and pushes find tasks by), the newest prediction as
    pre-annotations (``choices`` for its label, ``rectanglelabels`` in percent of
    ``original_width``/``original_height`` for its boxes, ``brushlabels`` in Label Studio's
    brush RLE for a box with a mask (``brush``, the box then follows from the mask) and for
    each class of a label map (``semantic``)) or its regions (``polygonlabels``, points in
    percent), and the labelling config."""

    name = "label-studio"
    main_file = "tasks.json"
    importable = True
    carries_regions = True
    carries_image_class = True

    def task(self, item: Item) -> dict[str, Any]:
        task: dict[str, Any] = {"data": {"image": item.ref, "edgemine_image_id": item.image_id,
                                         "edgemine_batch": self.batch}}
        if item.regions:
            task["predictions"] = [{"model_version": "superpixels", "result": _region_results(item)}]
        elif self.predictions and item.model_version is not None:
            result = []
            if item.label is not None:
                result.append({"id": _result_id(item.image_id, 0), "from_name": "class", "to_name": "image",
                               "type": "choices", "value": {"choices": [item.label]}})
            for n, b in enumerate(item.boxes, start=1):
                result.append(_brush(item, n, "brush", b) if "mask" in b else _rectangle(item, n, b))
            for n, m in enumerate(item.masks, start=len(item.boxes) + 1):
                result.append(_brush(item, n, "semantic", m))
            task["predictions"] = [{"model_version": item.model_version, "score": item.confidence, "result": result}]
        return task

    def files(self, items: list[Item]) -> dict[str, bytes]:
        return {self.main_file: compact_json([self.task(i) for i in items]), "config.xml": self.config_xml().encode()}

    def config_xml(self) -> str:
        """The labelling config: the image, a single choice of class, boxes of any class, and polygons with regions."""
        view = ET.Element("View")
        ET.SubElement(view, "Image", name="image", value="$image")
        choices = ET.SubElement(view, "Choices", name="class", toName="image", choice="single", showInline="true")
        for c in self.classes:
            ET.SubElement(choices, "Choice", value=c)
        rectangles = ET.SubElement(view, "RectangleLabels", name="label", toName="image")
        for c in self.classes:
            ET.SubElement(rectangles, "Label", value=c)
        for name in ("brush", "semantic"):  # instance masks, and the classes of a label map
            brushes = ET.SubElement(view, "BrushLabels", name=name, toName="image")
            for c in self.classes:
                ET.SubElement(brushes, "Label", value=c)
        if self.regions:  # superpixels: polygons to merge or assign a class
            polygons = ET.SubElement(view, "PolygonLabels", name="region", toName="image")
            for c in self.classes:
                ET.SubElement(polygons, "Label", value=c)
        ET.indent(view)
        return ET.tostring(view, encoding="unicode") + "\n"

    @classmethod
    def parse(cls, data: bytes, source: str) -> list[Annotation]:
        return parse_label_studio(load_json(data, source, cls.name))


def _rectangle(item: Item, n: int, b: dict[str, Any]) -> dict[str, Any]:
    """A box as a ``rectanglelabels`` result, in percent of the image."""
    x1, y1, x2, y2 = b["box"]
    return {"id": _result_id(item.image_id, n), "from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "original_width": item.width, "original_height": item.height, "image_rotation": 0,
            "value": {"x": 100 * x1 / item.width, "y": 100 * y1 / item.height,
                      "width": 100 * (x2 - x1) / item.width, "height": 100 * (y2 - y1) / item.height,
                      "rotation": 0, "rectanglelabels": [b["label"]]},
            "score": b["score"]}


def _brush(item: Item, n: int, name: str, m: dict[str, Any]) -> dict[str, Any]:
    """A mask (``{"mask": COCO RLE, "label", "score"?}``) as a ``brushlabels`` result of the
    control ``name`` (``brush``: an object's mask; ``semantic``: a label map's class)."""
    found = {"id": _result_id(item.image_id, n), "from_name": name, "to_name": "image", "type": "brushlabels",
             "original_width": item.width, "original_height": item.height, "image_rotation": 0,
             "value": {"format": "rle", "rle": brush_rle.encode(decode_mask(m["mask"])), "brushlabels": [m["label"]]}}
    return found | ({"score": m["score"]} if m.get("score") is not None else {})


def _region_results(item: Item) -> list[dict[str, Any]]:
    """An item's regions as ``polygonlabels`` results, points in percent of the image's size."""
    results = []
    for r in item.regions:
        for polygon in r["polygons"]:
            points = [[round(100 * x / item.width, 4), round(100 * y / item.height, 4)]
                      for x, y in zip(polygon[0::2], polygon[1::2])]
            results.append({"id": _result_id(item.image_id, 10_000 + len(results)), "from_name": "region",
                            "to_name": "image", "type": "polygonlabels", "original_width": item.width,
                            "original_height": item.height, "image_rotation": 0,
                            "value": {"points": points, "closed": True, "polygonlabels": [r["label"]]}})
    return results


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_label_studio(tasks: Any) -> list[Annotation]:
    """Label Studio's JSON export: per task, each annotation's ``rectanglelabels``
    (percent of ``original_width``/``original_height``), ``choices`` and ``brushlabels``
    (its RLE, decoded on import at the lake's size of the image) results."""
    if not isinstance(tasks, list):
        raise LabelError("not a Label Studio JSON export: expected a list of tasks")
    found = []
    for t, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            found.append(Annotation(t, json.dumps(task)[:2000], error="task without data"))
            continue
        try:
            found += _task_annotations(t, task)
        except (AttributeError, TypeError, KeyError, ValueError, IndexError) as e:
            found.append(Annotation(t, json.dumps(task)[:2000], error=f"malformed task ({type(e).__name__}: {e})"))
    return found


def _task_annotations(t: int, task: dict) -> list[Annotation]:
    """One task's labels: each annotation's ``rectanglelabels``, ``choices`` and ``brushlabels`` results."""
    found = []
    data = task["data"]
    for annotation in task.get("annotations") or []:
        if annotation.get("was_cancelled"):
            continue
        who = annotation.get("completed_by")
        annotator = (who.get("email") or str(who.get("id"))) if isinstance(who, dict) else (
            f"label-studio:{who}" if who is not None else None)
        when = _time(annotation.get("updated_at") or annotation.get("created_at"))
        for result in annotation.get("result") or []:
            raw = json.dumps(result)[:2000]
            a = Annotation(t, raw, ref=data.get("image"), image_id=data.get("edgemine_image_id"),
                           annotator=annotator, batch=data.get("edgemine_batch"), labelled_at=when)
            value = result.get("value") or {}
            kind = result.get("type")
            try:
                if kind == "rectanglelabels":
                    names = value["rectanglelabels"]
                    w, h = float(result["original_width"]), float(result["original_height"])
                    x, y = float(value["x"]) * w / 100, float(value["y"]) * h / 100
                    a.box = [x, y, x + float(value["width"]) * w / 100, y + float(value["height"]) * h / 100]
                    a.label = names[0] if len(names) == 1 else None
                    a.error = None if len(names) == 1 else f"a box needs one label, got {names}"
                elif kind == "brushlabels":
                    _read_brush(a, result)
                elif kind == "choices":
                    choices = value["choices"]
                    a.label = choices[0] if len(choices) == 1 else None
                    a.error = None if len(choices) == 1 else f"one choice expected, got {choices}"
                else:
                    continue  # other result kinds (text areas, ratings) are not labels
            except (KeyError, TypeError, ValueError, IndexError) as e:
                a.error = f"malformed {kind} result ({type(e).__name__}: {e})"
            found.append(a)
    return found


def _read_brush(a: Annotation, result: dict) -> None:
    """A ``brushlabels`` result into ``a``: its one label and its mask, left encoded
    (``{"format": "rle", "rle", "size": [original_height, original_width]}``) until the
    import knows the image's size; from the ``semantic`` control, a label map's class."""
    value = result["value"]
    names = value["brushlabels"]
    a.label = names[0] if len(names) == 1 else None
    a.error = None if len(names) == 1 else f"a brush mask needs one label, got {names}"
    if value.get("format", "rle") != "rle":
        a.error = a.error or f"brush format {value.get('format')!r} is not rle: export the project as JSON"
    a.mask = {"format": "rle", "rle": value["rle"],
              "size": [int(result["original_height"]), int(result["original_width"])]}
    a.mask_kind = "semantic" if result.get("from_name") == "semantic" else "instance"
