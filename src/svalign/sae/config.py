"""Options of the SAE stage (config key ``sae``), without torch: the Snakefile imports this on every call."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from svalign.mappings import known_fields

__all__ = ["SWEEP_KEYS", "TRAINING_KEYS", "SAEConfig", "sweep_points"]

TRAINING_KEYS = (
    "n_tokens",
    "heldout_fraction",
    "context_len",
    "batch_sequences",
    "expansion_factor",
    "k",
    "steps",
    "batch_size",
    "lr",
    "auxk_alpha",
    "dead_after_tokens",
    "seed",
    "sampled_text",
    "pretrained",
)
"""The ``sae`` keys the training job (rule ``sae_train``) reads; editing the others reruns only the analysis."""


SWEEP_KEYS = ("expansion_factor", "k", "seed")
"""The ``sae`` options a sweep point sets (``seed``: the SAE's init and token order)."""


def sweep_points(options: Mapping[str, Sequence[int]]) -> list[dict[str, int]]:
    """Every point of the product ``expansion_factor × k × seeds`` (``sae.sweep``), in that nesting order."""
    values = (options["expansion_factor"], options["k"], options["seeds"])
    return [dict(zip(SWEEP_KEYS, point, strict=True)) for point in itertools.product(*values)]


@dataclass(frozen=True)
class SAEConfig:
    """Options of the SAE stage; the schema's ``sae`` section documents each (same defaults, a test checks).

    Attributes:
        sites: model name → layers whose head input gets an SAE (and whose heads are analysed).
        n_tokens: corpus tokens per model (activations the SAE trains on).
        heldout_fraction: the share of the ``n_tokens`` windows held out of training (quality on text the SAE never
            saw); the SAE trains on the rest.
        context_len: tokens per corpus window (special tokens included for encoders).
        batch_sequences: windows per forward pass while collecting activations.
        expansion_factor: latents per input dimension.
        k: active latents per token (TopK).
        steps, batch_size: optimiser steps and tokens per step.
        lr: Adam learning rate; None: sparsify's rule 2e-4 / sqrt(latents / 2^14).
        auxk_alpha: weight of the AuxK loss that revives dead latents (Gao et al. 2024).
        dead_after_tokens: a latent that has not fired for this many training tokens counts as dead for AuxK.
        seed: seed of the SAE's init and of the token order.
        sampled_text: ``{sequences, tokens, seed, share}``: text sampled from SmolLM2-135M added to the docstring
            corpus (``sequences`` 0: none); ``share`` of the windows are drawn from it.
        prompt_set: SAD prompt set whose firing pairs are attributed to latent pairs.
        null_draws: random frames of each alignment null (Haar, within-subspace, covariance).
        null_seed: seed of those frames (each null draws from its own stream of it).
        fake_dictionaries: dictionaries of the decoder's size drawn from the inputs' second moment, each put
            through the whole Haar-null test: the control whose aligned share the real dictionary must beat.
        top_singular: the criterion's leading singular pairs (mean best |cos| of u_1..u_n and v_1..v_n).
        null_quantile: a head aligns beyond the null when its statistic exceeds this quantile of the null's.
        min_explained_variance: an SAE explaining less of its input's variance is no proxy (flagged in tables).
        min_loss_recovered: nor is one recovering less of the next-token loss when spliced in (causal models).
        pretrained: published SAEs that replace training at some sites: ``{model, layer, path, input}`` each
            (:mod:`svalign.sae.pretrained`; ``input``: ``residual``, the default, or ``head_input``).
        sweep: ``{enabled, expansion_factor, k, seeds}``: the stage rerun at every point of their product
            (:mod:`svalign.sae.sweep`).
    """

    sites: dict[str, list[int]] = field(default_factory=dict)
    n_tokens: int = 16384
    heldout_fraction: float = 0.125
    context_len: int = 64
    batch_sequences: int = 32
    expansion_factor: int = 4
    k: int = 16
    steps: int = 400
    batch_size: int = 512
    lr: float | None = 1e-3
    auxk_alpha: float = 1 / 32
    dead_after_tokens: int = 100000
    seed: int = 0
    sampled_text: dict[str, Any] = field(
        default_factory=lambda: {"sequences": 96, "tokens": 128, "seed": 0, "share": 0.5}
    )
    prompt_set: str = "ioi"
    null_draws: int = 100
    null_seed: int = 0
    fake_dictionaries: int = 10
    top_singular: int = 4
    null_quantile: float = 0.99
    min_explained_variance: float = 0.6
    min_loss_recovered: float = 0.8
    pretrained: list[dict[str, Any]] = field(default_factory=list)
    sweep: dict[str, Any] = field(
        default_factory=lambda: {"enabled": False, "expansion_factor": [8, 16], "k": [16, 32], "seeds": [0, 1]}
    )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> SAEConfig:
        """Build from a config mapping holding some of the fields (``enabled`` is ignored); unknown keys fail."""
        return cls(**known_fields(cls, {k: v for k, v in mapping.items() if k != "enabled"}, "sae"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def training(self) -> dict[str, Any]:
        """The training options (:data:`TRAINING_KEYS`)."""
        return {key: getattr(self, key) for key in TRAINING_KEYS}
