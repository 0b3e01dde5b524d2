"""What a job did, in one shape: ``Summary`` and its subclasses, one per job.

Every job returns one; ``to_dict`` is what ``--json`` prints (a public contract:
keys are only ever added). ``errors`` counts the input items the job refused,
each a row of the lake's ``errors`` table; ``error_samples`` keeps the first few
for the terminal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ERROR_SAMPLES = 5


@dataclass
class Summary:
    job: str = ""
    seconds: float = 0.0
    errors: int = 0
    error_samples: list[dict[str, Any]] = field(default_factory=list)

    def add_errors(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Count refused items (rows of the errors table) and keep the first few as samples."""
        for row in rows:
            self.errors += 1
            if len(self.error_samples) < ERROR_SAMPLES:
                self.error_samples.append({"uri": row.get("uri") or row.get("source"), "reason": row["reason"]})

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready values: nested summaries as dicts, floats rounded."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)} | self.extra()

    def extra(self) -> dict[str, Any]:
        """Values derived from the fields, for subclasses to add to ``to_dict``."""
        return {}


def _plain(value: Any) -> Any:
    if isinstance(value, Summary):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
