"""Checks of the pipeline config that JSON Schema cannot express (cross-field constraints).

The Snakefile calls :func:`check_config` right after ``validate``; every error names the config key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from svalign.mappings import ConfigError, check_offset_coverage
from svalign.toy.config import ToyConfig

__all__ = ["ConfigError", "check_config", "check_offset_coverage", "enabled_models", "not_a_number", "sae_sites"]


def enabled_models(config: Mapping[str, Any]) -> list[str]:
    """Names of the configured models whose stages run (``models.<name>.enabled``, default true), sorted."""
    return sorted(name for name, entry in config["models"].items() if entry.get("enabled", True))


def _check_memory(config: ToyConfig, key: str, limit_gb: float) -> None:
    needed = config.estimated_memory_bytes() / 2**30
    if needed > limit_gb:
        raise ConfigError(
            f"config key {key}: this grid needs about {needed:.1f} GiB ({len(config.instances())} instances x "
            f"batch x (1 + context_len) x features), more than toy.max_memory_gb = {limit_gb:g}; "
            "shrink the grid or batch_size, or raise toy.max_memory_gb"
        )


def not_a_number(config: Any, key: str = "") -> list[str]:
    """Dotted keys of every NaN in ``config`` (JSON Schema's range checks let NaN through: NaN < x is false)."""
    if isinstance(config, float) and math.isnan(config):
        return [key or "<root>"]
    if isinstance(config, Mapping):
        return [bad for name, value in config.items() for bad in not_a_number(value, f"{key}.{name}".lstrip("."))]
    if isinstance(config, list | tuple):
        return [bad for index, value in enumerate(config) for bad in not_a_number(value, f"{key}[{index}]")]
    return []


def check_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the key of the first NaN or cross-field inconsistency."""
    nan_keys = not_a_number(config)
    if nan_keys:
        raise ConfigError(f"config key {nan_keys[0]}: NaN is not a value (every NaN: {', '.join(nan_keys)})")
    toy = config.get("toy", {})
    limit_gb = float(toy.get("max_memory_gb", 16.0))
    for name, experiment in toy.get("experiments", {}).items():
        try:
            toy_config = ToyConfig.from_mapping(dict(experiment))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"config key toy.experiments.{name}: {error}") from error
        _check_memory(toy_config, f"toy.experiments.{name}", limit_gb)
    sweeps = toy.get("sweeps", {})
    if sweeps.get("enabled", False):
        from svalign.toy.config import sweep_config, sweep_points

        try:
            for point in sweep_points(dict(sweeps["base"]), dict(sweeps["grid"])):
                sweep_config(dict(sweeps["base"]), [point], sweeps["seeds"])
        except (TypeError, ValueError) as error:
            raise ConfigError(f"config key toy.sweeps: {error}") from error
    _check_dynamics(config.get("dynamics", {}), config.get("svd", {}))
    _check_sae(config)
    anisotropy = toy.get("anisotropy", {})
    if anisotropy.get("enabled", False):
        try:
            experiment = ToyConfig.from_mapping(dict(anisotropy["experiment"]))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"config key toy.anisotropy.experiment: {error}") from error
        if experiment.d_model < experiment.n_features + 1:
            raise ConfigError("config key toy.anisotropy.experiment.d_model: must be at least n_features + 1")
        too_large = [n for n in anisotropy["interference_norms"] if n >= experiment.n_features - 1]
        if too_large:
            raise ConfigError(
                f"config key toy.anisotropy.interference_norms: {too_large} not below n_features - 1 = "
                f"{experiment.n_features - 1}"
            )


def _check_sae(config: Mapping[str, Any]) -> None:
    sae = config.get("sae", {})
    if not sae.get("enabled", True):
        return
    for smaller, larger in (("context_len", "n_tokens"), ("batch_size", "n_tokens")):
        if smaller in sae and larger in sae and sae[smaller] > sae[larger]:
            raise ConfigError(
                f"config key sae.{smaller}: {sae[smaller]} exceeds sae.{larger} = {sae[larger]} (the corpus sample "
                f"must hold at least one {'window' if smaller == 'context_len' else 'training batch'})"
            )
    for model in sae.get("sites", {}):  # sites of a disabled model are skipped with it (see sae_sites)
        if model not in config.get("models", {}):
            raise ConfigError(
                f"config key sae.sites.{model}: no model {model!r} in `models` (configured: "
                f"{sorted(config.get('models', {}))})"
            )


def sae_sites(config: Mapping[str, Any]) -> dict[str, list[int]]:
    """The SAE sites that run: model → sorted layers, for enabled models only (empty when the stage is off)."""
    sae = config.get("sae", {})
    if not sae.get("enabled", True):
        return {}
    enabled = set(enabled_models(config))
    return {model: sorted(layers) for model, layers in sae.get("sites", {}).items() if model in enabled}


def _check_dynamics(dynamics: Mapping[str, Any], svd: Mapping[str, Any]) -> None:
    if not dynamics.get("enabled", False):
        return
    from svalign.dynamics.config import DynamicsConfig

    try:
        train = DynamicsConfig.from_mapping(dict(dynamics.get("train") or {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config key dynamics.train: {error}") from error
    max_offset = svd.get("max_offset", 31)
    if not dynamics.get("checkpoints"):
        check_offset_coverage(max_offset, train.seq_len, "a sequence of dynamics.train.seq_len")
    if dynamics.get("checkpoints"):
        if dynamics.get("prompt_set") == "repeated":
            raise ConfigError(
                "config key dynamics.prompt_set: repeated prompts exist only for our own series; with external "
                "checkpoints use ioi or plain"
            )
        if dynamics.get("head") is None:
            raise ConfigError(
                "config key dynamics.head: external checkpoints have no task scores to pick a head by; set "
                "{layer: L, head: H}"
            )
