"""Config sections as dataclasses: one torch-free way to build them from a mapping, refusing unknown keys; the
config error every check raises, and the one check that both config validation and the SAD stage make."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

__all__ = ["ConfigError", "check_offset_coverage", "known_fields"]


def known_fields(cls: type, mapping: Mapping[str, Any], section: str) -> dict[str, Any]:
    """``mapping`` as keyword arguments of dataclass ``cls``; unknown keys fail naming the config ``section``."""
    known = {field.name for field in fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ValueError(f"{section} config: unknown keys {unknown} (known: {sorted(known)})")
    return dict(mapping)


class ConfigError(ValueError):
    """A config value is invalid; the message starts with the dotted key path."""


def check_offset_coverage(max_offset: int, n_positions: int, what: str) -> None:
    """Fail unless RoPE offsets 0..``max_offset`` cover every query-key distance of ``n_positions`` tokens.

    A RoPE head has one QK form per offset δ = t − j, so SAD of a sequence of n tokens needs the SVDs of offsets
    0..n − 1. The one place this is decided: config validation (our dynamics series, whose length is known) and
    the SAD stage (prompt lengths known after tokenising) both call it.
    """
    if max_offset < n_positions - 1:
        raise ConfigError(
            f"config key svd.max_offset: {max_offset} is below {n_positions - 1}: {what} has {n_positions} tokens, "
            f"and a RoPE model needs one SVD per query-key offset: raise svd.max_offset to at least {n_positions - 1}"
        )
