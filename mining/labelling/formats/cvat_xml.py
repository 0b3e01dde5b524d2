"""CVAT for images 1.1 XML: the labels, one ``image`` per item with the newest
prediction's boxes and label tag out; ``box`` and ``tag`` back in."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

from mining.core.errors import LabelError
from mining.labelling.formats.format_base import Annotation, Item, LabelFormat


class Cvat(LabelFormat):
    """CVAT for images 1.1 XML: the labels in ``meta``, one ``image`` (name: the
    reference) per item with the newest prediction's boxes and its label as a tag."""

    name = "cvat"
    main_file = "annotations.xml"
    importable = True
    carries_image_class = True

    def files(self, items: list[Item]) -> dict[str, bytes]:
        root = ET.Element("annotations")
        ET.SubElement(root, "version").text = "1.1"
        task = ET.SubElement(ET.SubElement(root, "meta"), "task")
        for tag, text in (("id", "0"), ("name", f"edgemine {self.batch}"), ("size", str(len(items))),
                          ("mode", "annotation"), ("overlap", "0"), ("start_frame", "0"),
                          ("stop_frame", str(max(0, len(items) - 1)))):
            ET.SubElement(task, tag).text = text
        labels = ET.SubElement(task, "labels")
        for c in self.classes:
            label = ET.SubElement(labels, "label")
            ET.SubElement(label, "name").text = c
            ET.SubElement(label, "type").text = "any"
            ET.SubElement(label, "attributes")
        for n, item in enumerate(items):
            image = ET.SubElement(root, "image", id=str(n), name=item.ref, width=str(item.width),
                                  height=str(item.height))
            if not self.predictions:
                continue
            if item.label is not None:
                ET.SubElement(image, "tag", label=item.label, source="auto")
            for b in item.boxes:
                x1, y1, x2, y2 = b["box"]
                ET.SubElement(image, "box", label=b["label"], source="auto", occluded="0", z_order="0",
                              xtl=f"{x1:.2f}", ytl=f"{y1:.2f}", xbr=f"{x2:.2f}", ybr=f"{y2:.2f}")
        ET.indent(root)
        out = io.BytesIO()
        ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
        return {self.main_file: out.getvalue()}

    @classmethod
    def parse(cls, data: bytes, source: str) -> list[Annotation]:
        return parse_cvat(data)


def parse_cvat(data: bytes) -> list[Annotation]:
    """CVAT for images 1.1 XML: ``box`` (xtl, ytl, xbr, ybr) and ``tag`` per ``image``."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise LabelError(f"not a CVAT XML file: {e}") from None
    if root.tag != "annotations":
        raise LabelError(f"not a CVAT for images XML file: the root is <{root.tag}>, not <annotations>")
    task_name = root.findtext("./meta/task/name") or ""
    batch = task_name.removeprefix("edgemine ") if task_name.startswith("edgemine ") else None
    declared = {el.text for el in root.iterfind("./meta/task/labels/label/name")} | {
        el.text for el in root.iterfind("./meta/project/labels/label/name")}
    found = []
    n = 0
    for image in root.iter("image"):
        for shape in image:
            if shape.tag not in ("box", "tag"):
                continue
            a = Annotation(n, ET.tostring(shape, encoding="unicode")[:2000], ref=image.get("name"),
                           label=shape.get("label"), batch=batch)
            n += 1
            if declared and a.label not in declared:
                a.error = f"unknown class: label {a.label!r} is not in the file's labels"
            if shape.tag == "box":
                try:
                    a.box = [float(shape.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")]
                except (TypeError, ValueError):
                    a.error = a.error or "malformed box: xtl, ytl, xbr, ybr must be numbers"
            found.append(a)
    return found
