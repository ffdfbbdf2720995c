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
import math
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


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` (``..`` and symlinks resolved) lies under the folder ``root``.

    Tools that copy or publish what a manifest points to (``videoprism shards``) use it to
    refuse, by default, files outside the manifest's folder.
    """
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, ValueError, RuntimeError):  # unresolvable (a symlink loop, a NUL byte)
        return False


def _parse_float(value: Any, where: str, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: field {name!r} must be a number of seconds, got {value!r:.80}") from None
    if not math.isfinite(out) or out < 0:
        raise DataError(f"{where}: field {name!r} must be a finite, non-negative number of seconds, got {value!r:.80}")
    return out


def _parse_label(value: Any, where: str, name: str) -> int | list[int] | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise DataError(f"{where}: field {name!r} must be an integer class index, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise DataError(f"{where}: field {name!r} must be a list of integer class indices, got {value!r:.80}")
        return list(value)
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
        if isinstance(caps, str):
            captions = caps.split("|")
        elif isinstance(caps, list) and all(isinstance(c, str) for c in caps):
            captions = list(caps)
        else:
            raise DataError(f"{where}: field 'captions' must be a list of strings (or '|'-separated text), got {caps!r:.80}")
    cap = row.get("caption")
    if cap not in (None, "") and not isinstance(cap, str):
        raise DataError(f"{where}: field 'caption' must be a string, got {cap!r:.80}")
    if cap and cap not in captions:
        captions.insert(0, cap)
    captions = [c for c in captions if c.strip()]  # a blank caption is no caption
    fields = {k: v for k, v in row.items() if k not in _KNOWN[:3] and k not in ("start", "end")}
    for name in {"label", *label_fields}:
        if name in row:
            fields[name] = _parse_label(row[name], where, name)
    return ManifestEntry(
        path=str(p), captions=captions,
        start=_parse_float(row.get("start"), where, "start"), end=_parse_float(row.get("end"), where, "end"),
        fields=fields,
    )


def _csv_rows(f: Any, path: Path, delimiter: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file:line, row)`` of a CSV manifest, refusing anything malformed.

    Strict parsing, and one row per line: a quoted field with a line break is
    almost always an unbalanced quote that would swallow the rest of the file
    into one caption, so it is an error naming the line where the row starts.
    """
    reader = csv.reader(f, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty CSV; the first line must be a header with a 'path' column") from None
    except csv.Error as exc:
        raise DataError(f"{path}:1: malformed CSV header ({exc})") from None
    header = [h.strip() for h in header]
    if "path" not in header:
        raise DataError(f"{path}: the CSV header must have a 'path' column (got {header})")
    while True:
        start = reader.line_num + 1
        where = f"{path}:{start}"
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{where}: malformed CSV ({exc}); check the quotes on this line") from None
        if reader.line_num != start:
            raise DataError(
                f"{where}: a quoted field runs over {reader.line_num - start + 1} lines (an unbalanced quote?); "
                "every sample must be one line: close the quote, or double it (\"\") inside a quoted field"
            )
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise DataError(f"{where}: {len(values)} fields but the header has {len(header)}; quote fields holding {delimiter!r}")
        yield where, dict(zip(header, values))


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
        try:
            return cls._read(path, label_fields)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); a manifest is a UTF-8 .jsonl or .csv file") from None
        except RecursionError:
            raise DataError(f"{path}: JSON nested too deeply; each line must be one flat JSON object") from None

    @classmethod
    def _read(cls, path: Path, label_fields: tuple[str, ...]) -> Manifest:
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
                for where, row in _csv_rows(f, path, "\t" if suffix == ".tsv" else ","):
                    entries.append(_entry(row, root, where, label_fields))
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
