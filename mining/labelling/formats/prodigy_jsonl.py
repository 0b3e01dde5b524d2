"""Prodigy JSONL, as its image recipes read it (export only)."""

from __future__ import annotations

from typing import Any

from mining.labelling.formats.format_base import Item, LabelFormat, compact_json


class Prodigy(LabelFormat):
    """Prodigy JSONL, as its image recipes read it: ``image``, ``width``, ``height``,
    the boxes as ``spans`` with ``points`` (pixels, four corners), the label as
    ``label``, our id and batch in ``meta``."""

    name = "prodigy"
    main_file = "tasks.jsonl"
    carries_image_class = True

    def files(self, items: list[Item]) -> dict[str, bytes]:
        lines = []
        for item in items:
            task: dict[str, Any] = {"image": item.ref, "width": item.width, "height": item.height,
                                    "meta": {"image_id": item.image_id, "batch": self.batch}}
            if self.predictions and item.model_version is not None:
                task["meta"] |= {"model_version": item.model_version, "score": item.confidence}
                if item.label is not None:
                    task["label"] = item.label
                task["spans"] = [{"label": b["label"], "score": b["score"],
                                  "points": [[b["box"][0], b["box"][1]], [b["box"][0], b["box"][3]],
                                             [b["box"][2], b["box"][3]], [b["box"][2], b["box"][1]]]}
                                 for b in item.boxes]
            lines.append(compact_json(task))
        return {self.main_file: b"\n".join(lines) + b"\n"}
