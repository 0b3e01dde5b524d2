"""A JSONL manifest for a labelling vendor: one line per image (export only)."""

from __future__ import annotations

from mining.labelling.formats.format_base import Item, LabelFormat, compact_json


class Manifest(LabelFormat):
    """JSONL, one line per image: ``image_id``, ``url`` the vendor fetches, ``width``,
    ``height``, ``sha256`` and the newest ``prediction`` (label, confidence, boxes)."""

    name = "manifest"
    main_file = "manifest.jsonl"
    carries_image_class = True

    def files(self, items: list[Item]) -> dict[str, bytes]:
        lines = []
        for item in items:
            prediction = None
            if self.predictions and item.model_version is not None:
                prediction = {"model_version": item.model_version, "label": item.label, "confidence": item.confidence,
                              "boxes": item.boxes}
            lines.append(compact_json({"image_id": item.image_id, "url": item.ref, "width": item.width,
                                       "height": item.height, "sha256": item.sha256, "prediction": prediction}))
        return {self.main_file: b"\n".join(lines) + b"\n"}
