"""The SAE stage's numbers for figures and report captions, computed from its tables (torch- and matplotlib-free:
the Snakefile imports this on every call).

* :func:`site_interference`: per site the dictionary's ‖DᵀD − I‖₂ over all latents and over the latents active on
  the prompts (the anisotropy figure's markers);
* :func:`quality_text`, :func:`alignment_text`, :func:`heads_text`, :func:`interference_text`: caption sentences
  (reStructuredText, ``|`` and ``*`` escaped), every number read from the tables when the report renders;
* :class:`SAECaptions`: those functions for a rule's ``params`` (inert for Snakemake, as
  :class:`svalign.report.Measured` is).

Options (``sae.top_singular``, ``null_quantile``, ``min_explained_variance``, ``prompt_set``) are read from the
provenance of the table they shaped, so a caption states the run's own, not the current config's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from svalign import io
from svalign.definitions import PAPER_SAE_INTERFERENCE, anisotropy_curves, pooled_share
from svalign.io import PathLike
from svalign.sae.config import SAEConfig
from svalign.tables import SAE_ALIGNMENT, SAE_HEADS, SAE_QUALITY, SAE_SITES, TOY_ANISOTROPY

__all__ = [
    "VARIANT_NAMES",
    "SAECaptions",
    "alignment_text",
    "heads_text",
    "interference_inputs",
    "interference_text",
    "quality_text",
    "recorded_option",
    "site_interference",
    "variants_present",
]

VARIANT_NAMES = {"trained": "trained", "random": "random init"}


def recorded_option(path: PathLike, name: str) -> Any:
    """An ``sae`` option as the run that wrote ``path`` used it (its provenance), else :class:`SAEConfig`'s default."""
    return io.read_provenance(path).get("config", {}).get(name, getattr(SAEConfig, name))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def variants_present(frame: pd.DataFrame) -> list[str]:
    """The variants in ``frame``, trained first (the order of :data:`VARIANT_NAMES`)."""
    present = set(frame["variant"])
    return [v for v in VARIANT_NAMES if v in present] + sorted(present - set(VARIANT_NAMES))


def site_interference(quality: Iterable[pd.DataFrame], sites: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Per site (model, layer): ``interference_norm`` over all ``n_latents`` (:data:`SAE_QUALITY`) and
    ``interference_norm_active`` over the ``n_active_latents`` active on the prompts (:data:`SAE_SITES`, trained
    rows). Sites in both tables, by model and layer."""
    keys = ["model", "layer"]
    quality = pd.concat(list(quality), ignore_index=True)[[*keys, "n_latents", "interference_norm"]]
    sites = pd.concat(list(sites), ignore_index=True)
    active = sites[sites["variant"] == "trained"][[*keys, "n_active_latents", "interference_norm_active"]]
    return quality.merge(active, on=keys, how="inner").sort_values(keys).reset_index(drop=True)


def quality_text(quality_path: PathLike, sites_path: PathLike) -> str:
    """Per site: the SAE's size, explained variance and whether it is usable, L0, dead latents, interference."""
    quality = io.read_frame(quality_path, SAE_QUALITY).drop(columns=["b_dec", "second_moment", "position_basis"])
    sites = io.read_frame(sites_path, SAE_SITES)
    sites = sites[sites["variant"] == "trained"]
    level = float(recorded_option(sites_path, "min_explained_variance"))
    prompt_set = recorded_option(sites_path, "prompt_set")
    parts = []
    sites = sites.drop(columns=["explained_variance", "heldout_explained_variance", "heldout_loss_recovered"])
    for row in quality.merge(sites, on=["model", "layer"]).itertuples():
        usable = (
            f"usable (≥ {level:.2f})" if row.sae_usable else f"NOT usable (below {level:.2f}): no proxy for features"
        )
        parts.append(
            f"Layer {row.layer}: {row.n_latents} latents (k = {row.k}) trained on {row.n_tokens} corpus tokens, "
            f"explained variance {row.explained_variance:.3f} (held out {row.heldout_explained_variance:.3f}, "
            f"{prompt_set} prompts {row.prompt_explained_variance:.3f}){_loss_text(row)}, {usable}; L0 {row.l0:.1f}, "
            f"{row.dead_fraction:.1%} dead latents; ‖DᵀD − I‖₂ = {row.interference_norm:.1f} over all latents, "
            f"{row.interference_norm_active:.1f} over the {row.n_active_latents} active on the {prompt_set} prompts."
        )
    return _escape(" ".join(parts))


def _loss_text(row: Any) -> str:
    """ ", next-token loss recovered …" of one site's quality row ("" for encoders: no next-token loss)."""
    if not np.isfinite(row.heldout_loss_recovered):
        return ""
    return (
        f", next-token loss recovered {row.heldout_loss_recovered:.1%} on held-out windows "
        f"({row.heldout_loss_clean:.2f} clean, {row.heldout_loss_sae:.2f} SAE spliced in, "
        f"{row.heldout_loss_ablated:.2f} mean-ablated)"
    )


def alignment_text(alignment_path: PathLike, sites_path: PathLike) -> str:
    """Per site: mean best |cos| of the top-n singular vectors per variant against the null, and the aligned share."""
    n, quantile = (
        int(recorded_option(alignment_path, "top_singular")),
        float(recorded_option(alignment_path, "null_quantile")),
    )
    columns = ["variant", "layer", "rank", "best_cos", "null_mean", "null_upper"]
    alignment = io.read_frame(alignment_path, SAE_ALIGNMENT, columns)
    sites = io.read_frame(sites_path, SAE_SITES).set_index(["layer", "variant"])
    parts = []
    for layer, rows in alignment.groupby("layer"):
        top = rows[rows["rank"] < n]
        means = ", ".join(
            f"{VARIANT_NAMES.get(v, v)} {top.loc[top['variant'] == v, 'best_cos'].mean():.3f}"
            for v in variants_present(rows)
        )
        null = rows[rows["variant"] == variants_present(rows)[0]]
        shares = ", ".join(
            f"{VARIANT_NAMES.get(v, v)} {sites.loc[(layer, v), 'aligned_fraction']:.0%}"
            for v in variants_present(rows)
            if (layer, v) in sites.index
        )
        parts.append(
            f"Layer {layer}: mean best |cos| of u_1..u_{n}, v_1..v_{n} over heads: {means}; one Haar-random vector's "
            f"best |cos|: mean {null['null_mean'].mean():.3f}, {quantile:g} quantile {null['null_upper'].mean():.3f}. "
            f"Heads aligned beyond the null: {shares}."
        )
    return _escape(" ".join(parts))


def _attribution_text(trained: pd.DataFrame, prompt_set: str) -> str:
    """One site's attribution rates pooled over its trained heads' firing pairs ("" without pairs)."""
    pairs = trained["n_pairs"]
    if pairs.sum() == 0:
        return f"; no firing pairs on the {prompt_set} prompts"
    columns = ("match_rate", "random_match_rate", "null_match_rate", "chance_rate")
    rate = {c: pooled_share(trained[c].fillna(0), pairs) for c in columns}
    return (
        f"; over {int(pairs.sum())} firing pairs ({prompt_set} prompts) the dominant latent pair is the dominant "
        f"singular pair's in {rate['match_rate']:.1%} (a random dictionary of the SAE's size "
        f"{rate['random_match_rate']:.1%}, rotation null {rate['null_match_rate']:.1%}, chance "
        f"{rate['chance_rate']:.1%}); median share of the logit carried by latent pairs "
        f"{trained['latent_share'].median():.2f} (random dictionary {trained['random_latent_share'].median():.2f})"
    )


def heads_text(heads_path: PathLike) -> str:
    """Per site: heads aligned per variant, the null's quantile and median, the pooled attribution rates."""
    heads = io.read_frame(heads_path, SAE_HEADS)
    quantile, prompt_set = (
        float(recorded_option(heads_path, "null_quantile")),
        recorded_option(heads_path, "prompt_set"),
    )
    parts = []
    for layer, rows in heads.groupby("layer"):
        by_variant = {v: rows[rows["variant"] == v] for v in variants_present(rows)}
        counts = ", ".join(
            f"{VARIANT_NAMES.get(v, v)} {int(r['aligned'].sum())} of {len(r)}" for v, r in by_variant.items()
        )
        trained = by_variant.get("trained", rows)
        parts.append(
            f"Layer {layer}: heads aligned beyond the null: {counts} (the statistic's {quantile:g} quantile under the "
            f"null {trained['null_statistic'].iloc[0]:.3f}, median {trained['null_median'].iloc[0]:.3f})"
            + ("" if trained["sae_usable"].all() else ", but the site's SAE is NOT usable")
            + _attribution_text(trained, prompt_set)
            + "."
        )
    return _escape(" ".join(parts))


def _toy_level(anisotropy_path: PathLike | None, norm: float) -> str:
    """The toy head's mean matched |cos| at ``norm`` (linear between grid norms), or why there is none."""
    if anisotropy_path is None or not np.isfinite(norm):
        return ""
    trained, _ = anisotropy_curves(io.read_frame(anisotropy_path, TOY_ANISOTROPY))
    if norm > trained.index.max():
        return f", beyond the sweep (up to {trained.index.max():g})"
    return f", where the toy head's mean matched |cos| is {np.interp(norm, trained.index, trained.to_numpy()):.2f}"


def interference_inputs(inputs: Mapping[str, PathLike] | Any) -> pd.DataFrame | None:
    """:func:`site_interference` from rule ``toy_figure_anisotropy``'s named inputs (``quality_<model>``,
    ``sites_<model>`` per SAE model; a Mapping or a Snakemake input list); None when the SAE stage did not run."""
    named = dict(inputs.items())
    models = sorted(name.removeprefix("quality_") for name in named if name.startswith("quality_"))
    if not models:
        return None
    columns = ["model", "layer", "n_latents", "interference_norm"]
    return site_interference(
        [io.read_frame(named[f"quality_{m}"], SAE_QUALITY, columns) for m in models],
        [io.read_frame(named[f"sites_{m}"], SAE_SITES) for m in models],
    )


def interference_text(inputs: Mapping[str, PathLike] | Any) -> str:
    """The anisotropy caption's SAE sentence, from rule ``toy_figure_anisotropy``'s named inputs
    (:func:`interference_inputs`; ``anisotropy`` places each norm on the toy curve); "" without the SAE stage."""
    table = interference_inputs(inputs)
    if table is None:
        return ""
    toy = dict(inputs.items()).get("anisotropy")
    low, high = PAPER_SAE_INTERFERENCE
    parts = []
    for row in table.itertuples():
        where = (
            "inside" if low <= row.interference_norm <= high else ("below" if row.interference_norm < low else "above")
        )
        parts.append(
            f"{row.model} layer {row.layer}: {row.interference_norm:.1f} over all {row.n_latents} latents ({where} the "
            f"paper's {low:g}–{high:g}{_toy_level(toy, row.interference_norm)}), "
            f"{row.interference_norm_active:.1f} over the {row.n_active_latents} latents active on the prompts"
        )
    return _escape(
        "Markers: our SAE dictionaries' ‖DᵀD − I‖₂ of the unit decoder directions (stage SAE; all latents: solid "
        "line and ▼, latents active on the prompts: dotted line and ▲): " + "; ".join(parts) + "."
    )


class SAECaptions:
    """The caption functions for a rule's ``params`` (``captions=SAE_CAPTIONS``): a caption writes e.g.
    ``{{ snakemake.params.captions.quality(snakemake.input.quality, snakemake.input.sites) }}``. Snakemake
    ignores objects of this kind when it decides about reruns, and nothing is read until the report renders."""

    quality = staticmethod(quality_text)
    alignment = staticmethod(alignment_text)
    heads = staticmethod(heads_text)
    interference = staticmethod(interference_text)

    def __repr__(self) -> str:
        return "SAECaptions()"
