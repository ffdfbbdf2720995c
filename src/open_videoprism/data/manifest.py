"""Manifests: the list of samples of a dataset, as JSONL or CSV.

One sample per line/row. Fields:

- ``path`` (required): video or image file, relative to the manifest's folder or absolute.
- ``caption`` (str) and/or ``captions`` (list of str; in CSV: ``|``-separated).
- ``label`` (int, or list of ints for multi-label; in CSV: ``|``-separated),
  and any other integer field used as a label (``motion_label``, ...).
- ``start`` / ``end`` (seconds): a clip cut from a longer video.
- anything else is kept in :attr:`ManifestEntry.extra` (``factors``, ``segments``, ``qa``...).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from open_videoprism.errors import DataError

_KNOWN = ("path", "caption", "captions", "label", "start", "end")


@dataclass
class ManifestEntry:
    """One sample of a manifest; ``path`` is resolved (absolute or relative to the working dir)."""

    path: str
    captions: list[str] = field(default_factory=list)
    start: float | None = None
    end: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)   # label, motion_label, factors, ...

    def label(self, name: str = "label") -> int | list[int] | None:
        """The label stored under ``name`` (None when absent)."""
        return self.fields.get(name)


def _parse_float(value: Any, where: str, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: field {name!r} must be a number of seconds, got {value!r}") from None


def _parse_label(value: Any, where: str, name: str) -> int | list[int] | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise DataError(f"{where}: field {name!r} must be an integer class index, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        return [int(_parse_label(v, where, name)) for v in value]  # type: ignore[arg-type]
    if isinstance(value, str):
        parts = value.split("|")
        try:
            ints = [int(p) for p in parts]
        except ValueError:
            raise DataError(f"{where}: field {name!r} must hold integer class indices, got {value!r}") from None
        return ints[0] if len(ints) == 1 else ints
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise DataError(f"{where}: field {name!r} must be an integer class index, got {value!r}")


def _entry(row: dict[str, Any], root: Path, where: str, label_fields: tuple[str, ...]) -> ManifestEntry:
    path = row.get("path")
    if not path or not isinstance(path, str):
        raise DataError(f"{where}: missing 'path' (every sample needs the path of its video)")
    p = Path(path)
    if not p.is_absolute():
        p = root / p
    captions: list[str] = []
    if row.get("captions"):
        caps = row["captions"]
        captions = caps.split("|") if isinstance(caps, str) else [str(c) for c in caps]
    if row.get("caption") and row["caption"] not in captions:
        captions.insert(0, str(row["caption"]))
    fields = {k: v for k, v in row.items() if k not in _KNOWN[:3] and k not in ("start", "end")}
    for name in {"label", *label_fields}:
        if name in row:
            fields[name] = _parse_label(row[name], where, name)
    return ManifestEntry(
        path=str(p), captions=captions,
        start=_parse_float(row.get("start"), where, "start"), end=_parse_float(row.get("end"), where, "end"),
        fields=fields,
    )


class Manifest:
    """The samples of a manifest file (JSONL ``.jsonl``/``.json``, or CSV ``.csv``/``.tsv``).

    >>> m = Manifest.read("synth/test.jsonl")
    >>> len(m), m[0].path, m[0].label("motion_label")
    """

    def __init__(self, entries: list[ManifestEntry], source: str = "<memory>") -> None:
        self.entries = entries
        self.source = source

    @classmethod
    def read(cls, path: str | os.PathLike, label_fields: tuple[str, ...] = ("label", "motion_label")) -> Manifest:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: manifest not found; pass a .jsonl or .csv file listing the videos")
        root = path.resolve().parent
        suffix = path.suffix.lower()
        entries: list[ManifestEntry] = []
        if suffix in (".jsonl", ".json", ".ndjson"):
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    line = line.strip()
                    if not line:
                        continue
                    where = f"{path}:{lineno}"
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
                    if not isinstance(row, dict):
                        raise DataError(f"{where}: each line must be a JSON object with a 'path'")
                    entries.append(_entry(row, root, where, label_fields))
        elif suffix in (".csv", ".tsv"):
            with open(path, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                if not reader.fieldnames or "path" not in reader.fieldnames:
                    raise DataError(f"{path}: the CSV header must have a 'path' column (got {reader.fieldnames})")
                for lineno, row in enumerate(reader, 2):
                    entries.append(_entry(dict(row), root, f"{path}:{lineno}", label_fields))
        else:
            raise DataError(f"{path}: unknown manifest type {suffix!r}; use .jsonl or .csv")
        if not entries:
            raise DataError(f"{path}: the manifest lists no samples")
        return cls(entries, str(path))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> ManifestEntry:
        return self.entries[i]

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self.entries)
