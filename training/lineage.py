"""The lineage file a replayed stage leaves in its run folder (read by export into config.json)."""

from __future__ import annotations

import json
from pathlib import Path

LINEAGE_NAME = "lineage.json"


def read_lineage(run: str | Path) -> dict | None:
    """The lineage a replayed stage wrote into its run folder, if any."""
    path = Path(run) / LINEAGE_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
