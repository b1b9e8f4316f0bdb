"""Options of the SAD stage (config key ``sad``), without torch: the Snakefile imports this on every call.

The prompt-set keys of the ``sad`` section (``prompt_sets``, ``n_ioi_prompts``, ``prompt_seed``) are not options of
the decomposition: they choose the prompts (:func:`svalign.sad.prompts.prompt_set`), so editing them reruns only
the jobs of the prompt sets they concern.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from svalign.definitions import NULLS
from svalign.mappings import known_fields

__all__ = ["N_RECON_ORDERS", "SADConfig"]

N_RECON_ORDERS = ("signed", "magnitude")
"""Orderings of the relative terms for N_recon: by value c_k (the authors' rule), or by |c_k|."""


@dataclass(frozen=True)
class SADConfig:
    """Options of the decomposition; the schema's ``sad`` section documents each (same defaults, a test checks).

    Attributes:
        threshold: a pair (t, j) fires when A(t, j) ≥ threshold; None: A(t, j) ≥ 1/|K(t)| (uniform attention).
        skip_first_key: ignore pairs whose key is position 0 (BOS / [CLS]).
        null_draws: draws of each null.
        null_seed: seed of the null draws (each null draws from its own stream: :func:`svalign.nulls.null_generator`).
        nulls: the nulls to run (:data:`svalign.definitions.NULLS`); ``haar``, the paper's, is always among them.
        chunk_prompts: prompts per forward pass (bounds memory).
        n_recon_order: which ordering of the relative terms fills the tables' plain N_recon columns (``n_recon``,
            ``median_n_recon``, …): ``signed`` (the n largest c_k, the authors' rule) or ``magnitude`` (the n
            largest |c_k|). Both orderings are computed in every run and stored under their own names.
    """

    threshold: float | None = None
    skip_first_key: bool = False
    null_draws: int = 5
    null_seed: int = 0
    chunk_prompts: int = 32
    n_recon_order: str = "signed"
    nulls: tuple[str, ...] = NULLS

    def __post_init__(self) -> None:
        object.__setattr__(self, "nulls", tuple(self.nulls))  # a config list becomes a hashable tuple
        unknown = [null for null in self.nulls if null not in NULLS]
        if unknown or "haar" not in self.nulls or len(set(self.nulls)) != len(self.nulls):
            raise ValueError(
                f"sad.nulls: {list(self.nulls)} must name each null once, among {', '.join(NULLS)}, and include haar "
                "(the paper's null, the reference of every verdict)"
            )
        if self.n_recon_order not in N_RECON_ORDERS:
            raise ValueError(f"sad.n_recon_order: {self.n_recon_order!r} is not one of {', '.join(N_RECON_ORDERS)}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> SADConfig:
        """Build from a config mapping holding some of the fields; unknown keys fail with their names."""
        return cls(**known_fields(cls, mapping, "sad"))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "nulls": list(self.nulls)}
