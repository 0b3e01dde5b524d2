"""The formats images leave the lake in for labelling and labels come back in: one
module per format, each a ``LabelFormat`` (format_base.py) holding its writer
(``files``: a task's files) and, for a format annotation tools give back, its reader
(``parse``/``read``: Annotations).

- ``label_studio_json``: Label Studio tasks and its JSON export (also pushed to and
  pulled from a server by mining.labelling.label_studio);
- ``coco_json``: COCO annotations (and a results file);
- ``cvat_xml``: CVAT for images 1.1 XML;
- ``yolo_folder``: a YOLO folder (images, labels/*.txt, data.yaml);
- ``prodigy_jsonl``: Prodigy's image tasks (export only);
- ``manifest_jsonl``: a vendor's manifest (export only).

``FORMATS`` below is the registry: mining.labelling.export writes a batch with ``writer_for``
and mining.labelling.labels reads labels with ``reader_for``. A new format is one module
defining its ``LabelFormat`` and one entry in ``FORMATS`` (docs/CONTRIBUTING.md).
"""

from __future__ import annotations

from mining.core.errors import ExportError, LabelError
from mining.labelling.formats.coco_json import Coco
from mining.labelling.formats.cvat_xml import Cvat
from mining.labelling.formats.format_base import Annotation, Item, LabelFormat
from mining.labelling.formats.label_studio_json import LabelStudio
from mining.labelling.formats.manifest_jsonl import Manifest
from mining.labelling.formats.prodigy_jsonl import Prodigy
from mining.labelling.formats.yolo_folder import Yolo

__all__ = ["FORMATS", "Annotation", "Item", "LabelFormat", "LabelStudio", "reader_for", "writer_for"]


def _by_name(*formats: type[LabelFormat]) -> dict[str, type[LabelFormat]]:
    names = [f.name for f in formats]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two formats are named {', '.join(twice)}")
    return {f.name: f for f in formats}


# name -> format, in the order the CLI's help and the UI list them.
FORMATS: dict[str, type[LabelFormat]] = _by_name(
    LabelStudio,
    Coco,
    Cvat,
    Yolo,
    Prodigy,
    Manifest,
)


def writer_for(fmt: str) -> type[LabelFormat]:
    """The format ``fmt``, to export in; ExportError listing the formats for another name."""
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ExportError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}") from None


def reader_for(fmt: str) -> type[LabelFormat]:
    """The format ``fmt``, to import labels from; LabelError listing those with a reader for another name."""
    found = FORMATS.get(fmt)
    if found is None or not found.importable:
        readable = [name for name, f in FORMATS.items() if f.importable]
        raise LabelError(f"unknown label format {fmt!r}; formats: {', '.join(readable)}")
    return found
