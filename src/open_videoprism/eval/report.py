"""Writing evaluation results: ``metrics.json`` and a markdown table.

``metrics.json`` holds ``{"task", "checkpoint", "metrics": {...}, "config":
{...}, "chance": {...}, ...}``; ``metrics.md`` renders the metrics (and their
chance levels where known) as a table for issue notes and docs. Both are
written atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from open_videoprism.atomic import write_json, write_text


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def _json_safe(value: Any) -> Any:
    """NaN/inf become null: strict JSON readers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def markdown_table(metrics: Mapping[str, Any], chance: Mapping[str, float] | None = None, title: str = "") -> str:
    """A two- (or three-) column markdown table of scalar metrics."""
    chance = chance or {}
    lines = [f"### {title}", ""] if title else []
    if chance:
        lines += ["| metric | value | chance |", "|---|---:|---:|"]
    else:
        lines += ["| metric | value |", "|---|---:|"]
    for key, value in metrics.items():
        if isinstance(value, (dict, list)):
            continue
        row = f"| {key} | {_fmt(value)} |"
        if chance:
            row += f" {_fmt(chance[key]) if key in chance else ''} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | os.PathLike,
    task: str,
    metrics: Mapping[str, Any],
    *,
    chance: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/metrics.json`` and ``out_dir/metrics.md``; returns the JSON path."""
    out = Path(out_dir)
    payload = _json_safe({"task": task, "metrics": dict(metrics), "chance": dict(chance or {}), **dict(extra or {})})
    write_json(out / "metrics.json", payload, sort_keys=True)
    md = markdown_table(metrics, chance, title=f"{task}")
    if extra and extra.get("checkpoint"):
        md += f"\ncheckpoint: `{extra['checkpoint']}`\n"
    write_text(out / "metrics.md", md)
    return out / "metrics.json"


def read_report(out_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "metrics.json").read_text())
