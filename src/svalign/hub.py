"""Hugging Face Hub names as configured sources, read from the local Hub cache without network (torch-free: the
Snakefile calls :func:`cached_snapshot` when it plans the jobs).

The cache is ``huggingface_hub``'s own (``HF_HUB_CACHE``, by default ``$HF_HOME/hub``, i.e.
``~/.cache/huggingface/hub``): ``models--OWNER--NAME/refs/REVISION`` holds the commit a branch or tag points at, and
``models--OWNER--NAME/snapshots/COMMIT/`` that commit's files. The commit a configured name and revision resolve to
is a param of every job that boots the model, so a moved branch (``main``) or another revision reruns them.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "BUILTIN_SOURCES",
    "cache_dir",
    "cached_revisions",
    "cached_snapshot",
    "download_command",
    "is_hub_name",
]

BUILTIN_SOURCES = ("minilm", "smollm2")
"""Models that ship as pip packages (``source: minilm`` / ``smollm2``)."""
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def is_hub_name(source: str) -> bool:
    """Whether a configured ``source`` is a Hub name (not a built-in model, not a local path)."""
    if source in BUILTIN_SOURCES or source.startswith((".", "/", "~")) or Path(source).expanduser().exists():
        return False
    return bool(_HUB_NAME.match(source))


def cache_dir() -> Path:
    """The Hub cache in use (``HF_HUB_CACHE`` / ``HF_HOME``, as ``huggingface_hub`` resolves them)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _repo(name: str) -> Path:
    return cache_dir() / f"models--{name.replace('/', '--')}"


def cached_snapshot(name: str, revision: str | None = None) -> str | None:
    """The commit that ``revision`` (a branch, tag or commit; default ``main``) of ``name`` resolves to in the
    cache, or None when the cache does not hold it. Resolved by ``huggingface_hub`` itself, offline, exactly as the
    job that loads the model resolves it (:func:`svalign.models.resolve_model_dir`)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=True)).name
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None


def cached_revisions(name: str) -> list[str]:
    """The branches and tags of ``name`` the cache holds a snapshot of (sorted)."""
    refs = _repo(name) / "refs"
    if not refs.is_dir():
        return []
    found = [path.relative_to(refs).as_posix() for path in refs.rglob("*") if path.is_file()]
    return sorted(revision for revision in found if cached_snapshot(name, revision))


def download_command(name: str, revision: str | None = None, local_dir: str | None = None) -> str:
    """The ``hf`` command (huggingface_hub's CLI) that fetches ``name`` at ``revision``."""
    command = f"hf download {name}"
    if revision:
        command += f" --revision {revision}"
    if local_dir:
        command += f" --local-dir {local_dir}"
    return command
