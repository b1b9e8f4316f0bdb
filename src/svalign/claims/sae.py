"""The SAE claims (our extension: the paper estimates ‖E_X‖₂ from GPT-2 SAEs but never compares singular vectors
with SAE latents), from the SAE stage's tables, with bootstrap intervals over heads and prompts (torch-free).

* :func:`sae_alignment_claim`: the share of a model's site heads (trained) whose top singular vectors align with
  the SAE's decoder directions beyond the Haar-frame null (``sae_heads.aligned``). The null's quantile is fixed
  per site (drawn once, independent of the head), so a resample draws the **heads** with replacement.
* :func:`sae_attribution_claim`: the pooled share of firing pairs whose dominant latent pair is the dominant
  singular term's, against the rotation null's share, chance and a random dictionary of the SAE's size, and the
  share of firing pairs whose logit the latent×latent terms carry. A resample draws the **prompts** with
  replacement (a drawn prompt brings all its firing pairs, as in :mod:`svalign.claims.sad`).

An SAE that does not reconstruct its input (``sae_sites.sae_usable`` false at some site of the model) is no proxy
for features: both claims are then ``inconclusive`` whatever their intervals, and say why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc

from svalign import io
from svalign.captions import recorded_option
from svalign.claims.core import Claim, Reading, combine, compare
from svalign.definitions import MATCH_MARGIN, MIN_LATENT_SHARE, MOST_HEADS, NULLS, PAPER_SAE_INTERFERENCE
from svalign.io import PathLike
from svalign.stats import BootstrapOptions, generator, percentile_interval, pooled_ratio, resample_counts
from svalign.tables import SAE_ATTRIBUTION, SAE_HEADS, SAE_SITES

__all__ = ["PAPER_SAE_TEXT", "sae_alignment_claim", "sae_attribution_claim", "unusable_text"]

PAPER_SAE_TEXT = (
    f"not in the paper (its GPT-2 SAE estimate ‖E_X‖₂ ≈ {PAPER_SAE_INTERFERENCE[0]:g}–{PAPER_SAE_INTERFERENCE[1]:g} "
    "only)"
)
"""The ``paper`` column of both SAE claims: the paper has no number for them."""


def _trained_sites(sites_path: PathLike) -> Any:
    """The trained variant's :data:`SAE_SITES` rows (DataFrame, by layer); fails when there are none."""
    sites = io.to_frame(io.read_table(sites_path, SAE_SITES))
    trained = sites[sites["variant"] == "trained"].sort_values("layer").reset_index(drop=True)
    if trained.empty:
        raise ValueError(f"{sites_path}: no trained SAE site")
    return trained


def _layers(sites: Any) -> str:
    layers = [int(layer) for layer in sites["layer"]]
    return f"layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}"


def unusable_text(sites_path: PathLike) -> str:
    """Why the model's SAEs are no proxy for features ("" when every site's SAE reconstructs its input).

    E.g. "the SAE does not reconstruct its input (explained variance 0.913 training / 0.867 held out / 0.555
    prompts at layer 1; each must reach 0.60): no proxy for features". The threshold is the run's
    ``sae.min_explained_variance`` (the one ``sae_usable`` used).
    """
    sites = _trained_sites(sites_path)
    bad = sites[~sites["sae_usable"].astype(bool)]
    if bad.empty:
        return ""
    values = ", ".join(
        f"{row.explained_variance:.3f} training / {row.heldout_explained_variance:.3f} held out / "
        f"{row.prompt_explained_variance:.3f} prompts"
        + (f", loss recovered {row.heldout_loss_recovered:.1%}" if np.isfinite(row.heldout_loss_recovered) else "")
        + f" at layer {int(row.layer)}"
        for row in bad.itertuples()
    )
    level = float(recorded_option(sites_path, "min_explained_variance"))
    measured = np.isfinite(bad["heldout_loss_recovered"]).any()
    loss_text = f", loss recovered {float(recorded_option(sites_path, 'min_loss_recovered')):.0%}" if measured else ""
    return (
        f"the SAE does not reconstruct its input (explained variance {values}; each must reach {level:.2f}"
        f"{loss_text}): no proxy for features"
    )


def _site_medians(sites_path: PathLike, heads: Any) -> str:
    """Per site: its SAE's explained variance and ‖E_X‖₂, the median best |cos| real vs Haar null vs random-init
    twin; then the twin's aligned share."""
    sites = io.to_frame(io.read_table(sites_path, SAE_SITES))
    parts = []
    for layer, rows in sites.groupby("layer"):
        by_variant = rows.set_index("variant")
        real = by_variant.loc["trained"]
        text = (
            f"layer {int(layer)} (explained variance {real['explained_variance']:.2f}, ‖E_X‖₂ of the active latents "
            f"{real['interference_norm_active']:.1f}): median best |cos| {real['median_best_cos']:.3f} real vs "
            f"{real['null_median_best_cos']:.3f} null"
        )
        if "random" in by_variant.index:
            text += f" vs {by_variant.loc['random', 'median_best_cos']:.3f} random-init"
        parts.append(text)
    twin = heads[heads["variant"] == "random"]
    twin_text = f"random-init twin: {twin['aligned'].mean():.0%} aligned" if len(twin) else "random-init twin not run"
    return "; ".join(parts) + f"; {twin_text}"


def sae_alignment_claim(
    heads_path: PathLike, sites_path: PathLike, model: str, options: BootstrapOptions | None = None
) -> Claim:
    """The top singular vectors of most site heads align with SAE decoder directions beyond the Haar-frame null.

    Tested number: the share of the trained site heads with ``aligned`` (mean best |cos| of u_1..u_n, v_1..v_n
    above the null's ``sae.null_quantile``), pooled over the model's sites; interval over heads (the null's
    quantile fixed). Inconclusive whenever a site's SAE is not usable (:func:`unusable_text`).
    """
    options = BootstrapOptions.from_mapping(options)
    heads = io.to_frame(io.read_table(heads_path, SAE_HEADS))
    trained = heads[heads["variant"] == "trained"].sort_values(["layer", "head"])
    if trained.empty:
        raise ValueError(f"{heads_path}: no trained SAE heads")
    aligned = trained["aligned"].to_numpy(dtype=np.float64)  # [heads]
    counts = resample_counts(len(aligned), options.resamples, generator(options, 0))  # [resamples, heads]
    share = (aligned.mean(), counts @ aligned / len(aligned))  # the estimate and its resamples
    test = compare("share of site heads aligned beyond the null", *share, ">", MOST_HEADS, options, ".1%")
    fake = _fake_baseline(sites_path)
    control_name = "aligned share − the fake dictionaries' aligned share"
    control = compare(control_name, share[0] - fake, share[1] - fake, ">", 0.0, options, ".1%")
    readings, significant = _null_readings(trained, counts, options)
    unusable = unusable_text(sites_path)
    quantile, top = recorded_option(heads_path, "null_quantile"), recorded_option(heads_path, "top_singular")
    ours = (
        f"{test.estimate:.0%} of {len(aligned)} heads align beyond the null's {quantile:g} quantile, against "
        f"{_fake_text(heads_path, trained, fake)}; significant after correction: "
        + ", ".join(significant)
        + f"; {_position_text(trained)}"
        + "; "
        + _site_medians(sites_path, heads)
    )
    return Claim(
        key=f"sae_alignment_{model}",
        claim="singular vectors align with SAE latents beyond the null",
        paper=PAPER_SAE_TEXT,
        ours=f"{unusable}; {ours}" if unusable else ours,
        setting=f"{model}, TopK SAE on the head input at {_layers(_trained_sites(sites_path))}",
        verdict="inconclusive" if unusable else combine((test.verdict, control.verdict)),
        criterion=(
            f"share of site heads aligned beyond the null > {MOST_HEADS:.0%} and above the fake dictionaries' share; "
            f"inconclusive when a site's SAE explains < "
            f"{recorded_option(sites_path, 'min_explained_variance'):.0%} of its input's variance"
        ),
        tests=(test, control),
        resampled=f"over {len(aligned)} heads, {options.resamples} resamples; the null's quantile fixed",
        confidence=options.confidence,
        reading=f"aligned: mean best |cos| of u_1..u_{top}, v_1..v_{top} > the Haar-frame null's {quantile:g} quantile",
        other_readings=readings,
    )


def _null_readings(trained: Any, counts: np.ndarray, options: BootstrapOptions) -> tuple[tuple[Reading, ...], list]:
    """Per null, the share of the trained site heads significantly aligned after Benjamini–Hochberg (interval over
    the heads ``counts [resamples, heads]``), and its counts in words (aligned / below)."""
    readings, significant = [], []
    for null in NULLS:
        flags = trained[f"{null}_aligned_bh"].to_numpy(dtype=np.float64)
        share = compare(
            "share of site heads significantly aligned",
            flags.mean(),
            counts @ flags / len(flags),
            ">",
            MOST_HEADS,
            options,
            ".1%",
        )
        readings.append(Reading(f"{null} null, per-head Monte Carlo test with Benjamini–Hochberg at 5 %", (share,)))
        significant.append(f"{null} {int(flags.sum())} aligned / {int(trained[f'{null}_below_bh'].sum())} below")
    return tuple(readings), significant


def _position_text(trained: Any) -> str:
    """How many aligned heads are positional, and how many stay aligned with the positional subspace projected out."""
    aligned = trained["aligned"].astype(bool)
    positional = int((aligned & trained["positional"].astype(bool)).sum())
    kept = int((aligned & trained["aligned_without_position"].astype(bool)).sum())
    return (
        f"{positional} of {int(aligned.sum())} aligned heads positional, {kept} aligned without the positional subspace"
    )


def _fake_text(heads_path: PathLike, trained: Any, fake: float) -> str:
    """The fake dictionaries' aligned share and how many heads the SAE matches better than every fake."""
    n_fakes = int(recorded_option(heads_path, "fake_dictionaries"))
    above = int(np.isclose(trained["fake_p_aligned"].to_numpy(dtype=np.float64), 1 / (n_fakes + 1)).sum())
    return (
        f"{fake:.0%} with fake dictionaries of the same size drawn from the data ({above} heads match the SAE "
        "better than every fake)"
    )


def _fake_baseline(sites_path: PathLike) -> float:
    """The fake dictionaries' aligned share, pooled over the trained sites' heads (NaN when the control did not
    run: then the control's test is inconclusive)."""
    sites = io.to_frame(io.read_table(sites_path, SAE_SITES))
    trained = sites[(sites["variant"] == "trained") & (sites["n_fake_dictionaries"] > 0)]
    if trained.empty or len(trained) < (sites["variant"] == "trained").sum():
        return float("nan")
    return float(np.average(trained["fake_aligned_mean"], weights=trained["n_heads"]))


RATES = ("match", "null_match", "chance", "random_match", "carried")
"""Per-pair rates the attribution claim pools: ``carried`` is latent_share ≥ MIN_LATENT_SHARE."""


def _prompt_rates(attribution_path: PathLike, options: BootstrapOptions) -> tuple[dict, dict, int, int]:
    """Pooled :data:`RATES` over the firing pairs, and their resamples over prompts.

    Returns:
        (rate name → point estimate, rate name → ``[resamples]``, firing pairs, prompts with firing pairs).
    """
    columns = ["variant", "prompt", "match", "null_match", "chance", "random_match", "latent_share"]
    table = io.read_table(attribution_path, SAE_ATTRIBUTION, columns=columns)
    trained = table.filter(pc.equal(table.column("variant"), "trained"))
    _, unit = np.unique(trained.column("prompt").to_numpy(), return_inverse=True)
    n_prompts = int(unit.max()) + 1 if len(unit) else 0
    pairs = np.bincount(unit, minlength=n_prompts).astype(np.float64)  # [prompts]
    counts = resample_counts(n_prompts, options.resamples, generator(options, 0)) if n_prompts else None
    values = {
        name: trained.column(name).to_numpy(zero_copy_only=False).astype(np.float64) for name in RATES[:-1]
    }  # [pairs] each
    values["carried"] = trained.column("latent_share").to_numpy() >= MIN_LATENT_SHARE
    point, resampled = {}, {}
    for name, value in values.items():
        point[name] = float(value.mean()) if len(value) else float("nan")
        if counts is not None:
            resampled[name] = pooled_ratio(counts, np.bincount(unit, weights=value, minlength=n_prompts), pairs)
    return point, resampled, len(unit), n_prompts


def _strongest_control(rates: dict[str, Any]) -> Any:
    """max(rotation null's match rate, chance, random dictionary's match rate) of a point or resampled rates."""
    return np.maximum(np.maximum(rates["null_match"], rates["chance"]), rates["random_match"])


def _attribution_tests(point: dict, resampled: dict, options: BootstrapOptions) -> tuple[Any, Any]:
    """The attribution claim's two tests: the match rate beats every control by MATCH_MARGIN; latent×latent terms
    carry at least MIN_LATENT_SHARE of the logit in most firing pairs."""
    beats = compare(
        "match rate − max(null, chance, random dictionary)",
        float(point["match"] - _strongest_control(point)),
        resampled["match"] - _strongest_control(resampled),
        ">",
        MATCH_MARGIN,
        options,
        ".1%",
    )
    carried = compare(
        f"share of firing pairs with latent×latent share ≥ {MIN_LATENT_SHARE:g}",
        point["carried"],
        resampled["carried"],
        ">",
        MOST_HEADS,
        options,
        ".1%",
    )
    return beats, carried


def sae_attribution_claim(
    attribution_path: PathLike, sites_path: PathLike, model: str, options: BootstrapOptions | None = None
) -> Claim:
    """A firing logit's dominant latent pair is the one its dominant singular term picks, beyond every control.

    Tested numbers, each pooled over the trained firing pairs at the model's sites (SAD's firing pairs on
    ``sae.prompt_set``) and resampled over prompts: the match rate − max(rotation null's match rate, chance, the
    random-dictionary control's match rate) must lie above :data:`~svalign.definitions.MATCH_MARGIN`; and the share
    of firing pairs whose latent×latent terms carry ≥ :data:`~svalign.definitions.MIN_LATENT_SHARE` of the logit
    must exceed one half (else the latents do not explain the logit, whatever they match). Inconclusive when a
    site's SAE is not usable or there are no firing pairs.
    """
    options = BootstrapOptions.from_mapping(options)
    point, resampled, n_pairs, n_prompts = _prompt_rates(attribution_path, options)
    unusable = unusable_text(sites_path)
    tests, rates = (), "no firing pairs at the SAE sites"
    if n_pairs:
        tests = _attribution_tests(point, resampled, options)
        shown = {}
        for name in point:
            low, high = percentile_interval(resampled[name], options.confidence)
            shown[name] = f"{point[name]:.1%} [{float(low):.1%}, {float(high):.1%}]"
        rates = (
            f"dominant latent pair = the dominant singular pair's in {shown['match']} of {n_pairs} firing pairs, "
            f"vs {shown['random_match']} through a random dictionary of the SAE's size, {shown['null_match']} under "
            f"the rotation null and {shown['chance']} by chance; latent×latent terms carry ≥ {MIN_LATENT_SHARE:g} "
            f"of the logit in {shown['carried']} of the pairs"
        )
    prompt_set = recorded_option(attribution_path, "prompt_set")
    return Claim(
        key=f"sae_attribution_{model}",
        claim="the dominant latent pair of a firing logit is the dominant singular pair's",
        paper=PAPER_SAE_TEXT,
        ours=f"{unusable}; {rates}" if unusable else rates,
        setting=f"{model}, {prompt_set} prompts, TopK SAE on the head input at {_layers(_trained_sites(sites_path))}",
        verdict="inconclusive" if unusable or not tests else combine(test.verdict for test in tests),
        criterion=(
            f"match rate − max(null match rate, chance, random-dictionary match rate) > {MATCH_MARGIN:.0%} and "
            f"latent×latent share ≥ {MIN_LATENT_SHARE:g} in > {MOST_HEADS:.0%} of the firing pairs (pooled over "
            "firing pairs); inconclusive when a site's SAE does not reconstruct its input"
        ),
        tests=tests,
        resampled=f"over {n_prompts} prompts with firing pairs, {options.resamples} resamples",
        confidence=options.confidence,
    )
