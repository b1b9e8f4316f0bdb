"""Config sections as dataclasses: one torch-free way to build them from a mapping, refusing unknown keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

__all__ = ["known_fields"]


def known_fields(cls: type, mapping: Mapping[str, Any], section: str) -> dict[str, Any]:
    """``mapping`` as keyword arguments of dataclass ``cls``; unknown keys fail naming the config ``section``."""
    known = {field.name for field in fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ValueError(f"{section} config: unknown keys {unknown} (known: {sorted(known)})")
    return dict(mapping)
