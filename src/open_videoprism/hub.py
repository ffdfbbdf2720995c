"""Released checkpoints by name, through the Hugging Face Hub.

``ovp.load("google/videoprism-lvt-base-f16r288")`` (or a registry name such as
``videoprism_lvt_v1_base``) resolves here to local files with
``huggingface_hub``, so its cache (``HF_HOME`` / ``HF_HUB_CACHE``), offline mode
(``HF_HUB_OFFLINE=1``), revision pinning (``name@revision`` or ``revision=``)
and progress bars all work as in any other HF-based library. A repo may hold
the official ``.npz`` (preferred, it is the reference) or HF-format weights
(``config.json`` + ``model.safetensors``, e.g. on a ``refs/pr/N`` revision).
The SentencePiece tokenizer of the LvT models comes from the same repo.

Nothing here runs unless a hub name is given; local paths never touch the
network.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from open_videoprism.errors import CheckpointError

# The four released repos and their official files.
HUB_FILES: dict[str, str] = {
    "google/videoprism-base-f16r288": "flax_base_f16r288_repeated.npz",
    "google/videoprism-large-f8r288": "flax_large_f8r288_repeated.npz",
    "google/videoprism-lvt-base-f16r288": "flax_lvt_base_f16r288_repeated.npz",
    "google/videoprism-lvt-large-f8r288": "flax_lvt_large_f8r288_repeated.npz",
}
# Names that mean a released checkpoint: the official MODELS names and our registry names.
ALIASES: dict[str, str] = {
    "videoprism_public_v1_base": "google/videoprism-base-f16r288",
    "videoprism_public_v1_large": "google/videoprism-large-f8r288",
    "videoprism_lvt_public_v1_base": "google/videoprism-lvt-base-f16r288",
    "videoprism_lvt_public_v1_large": "google/videoprism-lvt-large-f8r288",
    "videoprism_v1_base": "google/videoprism-base-f16r288",
    "videoprism_v1_large": "google/videoprism-large-f8r288",
    "videoprism_lvt_v1_base": "google/videoprism-lvt-base-f16r288",
    "videoprism_lvt_v1_large": "google/videoprism-lvt-large-f8r288",
}
# ``hf-hub:org/name`` (as open_clip spells it) names any other repo in the same layout, e.g. a mirror.
PREFIX = "hf-hub:"
TOKENIZER_FILES = ("spiece.model", "sentencepiece.model", "tokenizer.model")
HF_WEIGHTS = ("config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors")


@dataclass(frozen=True)
class HubFiles:
    """What a hub name resolved to: a checkpoint path (file or HF folder) and the tokenizer, if any."""

    repo: str
    revision: str | None
    checkpoint: Path
    tokenizer: Path | None


def parse(name: str) -> tuple[str, str | None] | None:
    """``(repo, revision)`` if ``name`` is a hub name (``repo[@rev]``, alias, ``hf-hub:``), else None."""
    if not isinstance(name, str):
        return None
    base, _, rev = name.partition("@")
    if base.startswith(PREFIX):
        return base[len(PREFIX):], rev or None
    if base in ALIASES:
        return ALIASES[base], rev or None
    if base in HUB_FILES:
        return base, rev or None
    return None


def is_hub_name(name: object) -> bool:
    """Whether :func:`resolve` would handle ``name`` (a local path that exists never is)."""
    return isinstance(name, str) and parse(name) is not None and not Path(name).exists()


def _cache_dir() -> str | None:
    # huggingface_hub reads HF_HOME at import; read it per call so a changed environment is honoured.
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(constants.HF_HUB_OFFLINE)


def prefetch_command(repo: str, revision: str | None = None) -> str:
    """The shell command that fills the cache for ``repo`` (shown when it is missing offline)."""
    rev = f" --revision {revision}" if revision else ""
    return f"videoprism download {repo}{rev}"


def _missing(repo: str, revision: str | None, why: str) -> CheckpointError:
    files = HUB_FILES.get(repo, "the checkpoint")
    tok = f" {TOKENIZER_FILES[0]}" if "lvt" in repo else ""
    return CheckpointError(
        f"{repo}{'@' + revision if revision else ''}: {why}; fetch {files}{tok} once with network access: "
        f"`{prefetch_command(repo, revision)}` (or `hf download {repo} {files}{tok}"
        f"{' --revision ' + revision if revision else ''}`), then rerun (HF_HUB_OFFLINE=1 works after that)"
    )


def _choose(repo: str, files: list[str]) -> tuple[list[str], bool]:
    """``(files to fetch, is_npz)``: the official .npz if present, else the HF-format weights."""
    npz = HUB_FILES.get(repo)
    if npz in files:
        return [npz], True
    npzs = sorted(f for f in files if f.endswith(".npz") and "/" not in f)
    if npzs:
        return [npzs[0]], True
    if "config.json" in files and any(fnmatch.fnmatch(f, p) for f in files for p in HF_WEIGHTS[1:]):
        return [f for f in files if any(fnmatch.fnmatch(f, p) for p in HF_WEIGHTS)], False
    raise CheckpointError(
        f"{repo}: holds neither an official .npz nor HF-format weights (config.json + model.safetensors); "
        f"files: {', '.join(sorted(files)[:10])}"
    )


def _tokenizer_file(files: list[str]) -> str | None:
    return next((f for f in TOKENIZER_FILES if f in files), None)


def _resolve_offline(repo: str, revision: str | None, cache_dir: str | None, why: str) -> HubFiles:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        raise _missing(repo, revision, why) from None
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    try:
        chosen, is_npz = _choose(repo, files)
    except CheckpointError:
        raise _missing(repo, revision, f"{why}, and the cached snapshot {folder} has no weights") from None
    tok = _tokenizer_file(files)
    return HubFiles(repo, revision, folder / chosen[0] if is_npz else folder, folder / tok if tok else None)


def resolve(name: str, revision: str | None = None, *, local_files_only: bool = False) -> HubFiles:
    """Local paths of a released checkpoint (and its tokenizer), downloading what the cache lacks.

    ``revision`` (a branch, tag, ``refs/pr/N`` or commit hash) overrides one given as ``name@rev``.
    Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only``) only the cache is read; when the
    files are not there the error names the command that fetches them.
    """
    parsed = parse(name)
    if parsed is None:
        raise CheckpointError(f"{name!r} is not a hub name; known: {', '.join(sorted(HUB_FILES))}")
    repo, rev = parsed[0], revision or parsed[1]
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise CheckpointError(f"{repo}: loading by name needs huggingface_hub (pip install huggingface_hub)") from None
    cache_dir = _cache_dir()
    if local_files_only or _offline():
        return _resolve_offline(repo, rev, cache_dir, "not in the Hugging Face cache and offline mode is on")

    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = HfApi().list_repo_files(repo, revision=rev)
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as exc:
        raise CheckpointError(f"{repo}{'@' + rev if rev else ''}: {type(exc).__name__} from the Hub") from None
    except Exception as exc:  # noqa: BLE001 - no network (any transport error): fall back to the cache, as transformers does
        return _resolve_offline(repo, rev, cache_dir, f"the Hub is unreachable ({type(exc).__name__})")
    chosen, is_npz = _choose(repo, files)
    tok = _tokenizer_file(files)
    if is_npz:
        ckpt = Path(hf_hub_download(repo, chosen[0], revision=rev, cache_dir=cache_dir))
        tok_path = Path(hf_hub_download(repo, tok, revision=rev, cache_dir=cache_dir)) if tok else None
        return HubFiles(repo, rev, ckpt, tok_path)
    folder = Path(snapshot_download(repo, revision=rev, cache_dir=cache_dir,
                                    allow_patterns=list(HF_WEIGHTS) + ([tok] if tok else [])))
    return HubFiles(repo, rev, folder, folder / tok if tok else None)


__all__ = ["ALIASES", "HUB_FILES", "HubFiles", "is_hub_name", "parse", "prefetch_command", "resolve"]
