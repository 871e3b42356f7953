"""What the benchmark scripts share: writing a report where ``--out`` says."""
from __future__ import annotations

import json
from pathlib import Path


def save_json(report: dict, out: str | None) -> None:
    """Write ``report`` as indented JSON to ``out`` (its folders made); nothing when ``out`` is None."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
