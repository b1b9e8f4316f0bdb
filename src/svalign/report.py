"""The paper's claims beside our measurements, computed from the pipeline's Parquet tables.

Each ``*_claim`` function (package :mod:`svalign.claims`) reads the tables one claim rests on and returns a
:class:`Claim`: the paper's statement and number, ours, the setting, every number the verdict uses with its
bootstrap interval, and a verdict under the acceptance level written next to it: ``pass`` where the whole interval
meets it, ``differs`` where none of it does, ``inconclusive`` where the interval straddles it. A claim that
depends on a definition with another reading (N_recon's ordering) carries its verdict under each. The same
functions feed

* the results table (rule ``results_table``: ``results/report/claims.{parquet,md,csv}``), and
* the report captions, which call them through :class:`Measured` when ``snakemake --report`` renders them,
  so every number in a caption comes from the current tables, never typed in.

The statistics themselves are defined once in :mod:`svalign.definitions` (figure titles call the same functions).
The Snakefile imports this module on every call, dry runs included, so it imports no torch.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from svalign.claims.core import Claim, claims_markdown, claims_table
from svalign.claims.dynamics import dynamics_claim
from svalign.claims.sad import nrecon_claim, null_claim, small_sigma_claim
from svalign.claims.sae import sae_alignment_claim, sae_attribution_claim
from svalign.claims.toy import anisotropy_claim, multi_pair_claim, single_pair_claim
from svalign.io import PathLike
from svalign.stats import BootstrapOptions
from svalign.tables import RESULTS_CLAIMS

__all__ = [
    "CLAIM_FUNCTIONS",
    "RESULTS_CLAIMS",
    "BootstrapOptions",
    "Claim",
    "Measured",
    "anisotropy_claim",
    "claims_from_inputs",
    "claims_markdown",
    "claims_table",
    "dynamics_claim",
    "multi_pair_claim",
    "nrecon_claim",
    "null_claim",
    "sae_alignment_claim",
    "sae_attribution_claim",
    "single_pair_claim",
    "small_sigma_claim",
]

CLAIM_FUNCTIONS = {
    "single_pair": single_pair_claim,
    "multi_pair": multi_pair_claim,
    "anisotropy": anisotropy_claim,
    "nrecon": nrecon_claim,
    "small_sigma": small_sigma_claim,
    "null": null_claim,
    "dynamics": dynamics_claim,
    "sae_alignment": sae_alignment_claim,
    "sae_attribution": sae_attribution_claim,
}
"""Claim functions by name; each takes its tables' paths (SAD: summary, pairs, model; SAE: heads or attribution,
sites, model) and ``options``."""


class Measured:
    """Claims for report captions, computed from Parquet when the caption renders.

    A rule puts ``measured=Measured(config["report"])`` in its ``params``; its caption writes e.g.
    ``{{ snakemake.params.measured.single_pair(snakemake.input[0]) }}`` (a :class:`Claim` prints as our value;
    ``.paper``, ``.verdict`` and ``.rst`` are there too), and the claim is computed with the results table's
    bootstrap options. Snakemake ignores objects of this kind when it decides about reruns (the repr is the
    same for any options: a caption does not rerun its rule), and nothing is read until the report is built.
    """

    def __init__(self, options: Mapping[str, Any] | BootstrapOptions | None = None) -> None:
        self.options = BootstrapOptions.from_mapping(options)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "options":
            raise AttributeError(name)
        try:
            return functools.partial(CLAIM_FUNCTIONS[name], options=self.options)
        except KeyError:
            raise AttributeError(f"no claim {name!r}; known: {sorted(CLAIM_FUNCTIONS)}") from None

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return name in CLAIM_FUNCTIONS

    def __repr__(self) -> str:
        return "Measured()"


def claims_from_inputs(
    inputs: Mapping[str, PathLike], options: Mapping[str, Any] | BootstrapOptions | None = None
) -> list[Claim]:
    """Every claim the given tables support, in the table's order.

    ``inputs`` names tables as rule ``results_table`` does (``results_table_inputs`` in
    workflow/rules/report_functions.smk):
    ``single_pair``, ``multi_pair`` (toy metrics), ``anisotropy``, ``sad_<model>`` and ``pairs_<model>`` (summary
    and pairs of the trained variant on IOI prompts), ``dynamics`` with ``dynamics_first`` and ``dynamics_last``
    (pairs of the first and last checkpoint), ``sae_heads_<model>``, ``sae_sites_<model>`` and
    ``sae_attribution_<model>`` (the SAE stage's tables). Other names are left to :mod:`svalign.claims.details`.
    """
    options = BootstrapOptions.from_mapping(options)
    claims = []
    for name in ("single_pair", "multi_pair", "anisotropy"):
        if name in inputs:
            claims.append(CLAIM_FUNCTIONS[name](inputs[name], options=options))
    sad_models = sorted(name.removeprefix("sad_") for name in inputs if name.startswith("sad_"))
    for kind in ("nrecon", "small_sigma", "null"):
        for model in sad_models:
            claims.append(CLAIM_FUNCTIONS[kind](inputs[f"sad_{model}"], inputs[f"pairs_{model}"], model, options))
    if "dynamics" in inputs:
        claims.append(dynamics_claim(inputs["dynamics"], inputs["dynamics_first"], inputs["dynamics_last"], options))
    sae_models = sorted(name.removeprefix("sae_sites_") for name in inputs if name.startswith("sae_sites_"))
    for model in sae_models:
        sites = inputs[f"sae_sites_{model}"]
        claims.append(sae_alignment_claim(inputs[f"sae_heads_{model}"], sites, model, options))
        claims.append(sae_attribution_claim(inputs[f"sae_attribution_{model}"], sites, model, options))
    return claims
