"""Checks of the pipeline config that JSON Schema cannot express (cross-field constraints).

The Snakefile calls :func:`check_config` right after ``validate``; every error names the config key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from svalign.toy import ToyConfig

__all__ = ["ConfigError", "check_config"]


class ConfigError(ValueError):
    """A config value is invalid; the message starts with the dotted key path."""


def check_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the key of the first cross-field inconsistency."""
    for name, experiment in config.get("toy", {}).get("experiments", {}).items():
        try:
            ToyConfig.from_mapping(dict(experiment))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"config key toy.experiments.{name}: {error}") from error
