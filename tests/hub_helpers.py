"""A Hugging Face hub cache built on disk, in the layout ``huggingface_hub`` itself writes.

``models--ORG--NAME/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/<ref>}``:
with ``HF_HOME`` pointing at its parent and ``HF_HUB_OFFLINE=1``, ``hf_hub_download`` and
``snapshot_download`` resolve files from it exactly as from a cache filled by real downloads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def add_snapshot(hf_home: Path, repo: str, files: dict[str, Path], commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put ``files`` (repo name -> source file) into ``hf_home/hub`` under ``commit``; point ``refs`` at it."""
    root = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        data = Path(src).read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            shutil.copyfile(src, blob)
        dst = snap / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, dst.parent), dst)
    for ref in refs:
        ref_file = root / "refs" / ref
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        ref_file.write_text(commit)
    return snap


def commit_hash(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()
