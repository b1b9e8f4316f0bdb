"""The statistics the verdicts rest on, each defined once (docs/method.md, "Definitions"; torch-free: numpy only).

Per firing pair the definitions are in :mod:`svalign.sad.decompose` (torch): the relative attention ℓ̃ and terms
c_k (:func:`~svalign.sad.decompose.relative`), which pairs fire (:func:`~svalign.sad.decompose.firing_mask`),
N_recon under both orderings (:func:`~svalign.sad.decompose.n_recon`) and the Rolls–Tovée S
(:func:`~svalign.sad.decompose.rolls_tovee`). Here are the aggregates built on them, which the SAD stage's summary,
the results table, its bootstrap resamples, the report captions and the figure titles all call:

* :func:`lower_half`: a σ rank in the lower half of the spectrum;
* :func:`share_at_most`: the share of heads whose median N_recon is at most :data:`N_RECON_LIMIT`;
* :func:`share_sparser`: the share of heads whose median S is below their null's;
* :func:`pooled_share`: a fraction pooled over firing pairs (not a mean over heads);
* :func:`crossings` / :func:`anisotropy_crossing`: where a decreasing curve crosses a level;
  :func:`anisotropy_curves` and :func:`crossing_text`: the anisotropy sweep's curves and their crossing in words
  (the results table, the captions and the figure titles say it the same way);
* :data:`SIGNIFICANT_SIGMA_RATIO`: when a singular value counts as "significant";
* :func:`gap_below_null`: how far S lies below the null's S, as a fraction of the null's.

Functions take arrays whose last axis is the heads (or the curve), so the same call serves the point estimate
``[heads]`` and every bootstrap resample ``[resamples, heads]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "FDR_LEVEL",
    "MATCH_MARGIN",
    "MIN_LATENT_SHARE",
    "MOST_HEADS",
    "NULLS",
    "NULL_GAP",
    "NULL_LABELS",
    "NULL_PREFIXES",
    "N_RECON_LIMIT",
    "OFTEN",
    "PAPER_ALIGNMENT_LEVEL",
    "PAPER_ANISOTROPY_NORM",
    "PAPER_SAE_INTERFERENCE",
    "POSITIONAL_SHARE",
    "POSITION_RANK",
    "SIGNIFICANT_SIGMA_RATIO",
    "anisotropy_crossing",
    "anisotropy_curves",
    "crossing_text",
    "crossings",
    "gap_below_null",
    "grid_crossings",
    "lower_half",
    "pooled_share",
    "share_at_most",
    "share_sparser",
]

# The paper's numbers that verdicts, captions and figures compare against: defined here only.
PAPER_ALIGNMENT_LEVEL = 0.75
"""Paper Fig 4: mean matched |cos| stays above this ..."""
PAPER_ANISOTROPY_NORM = 55.0
"""... up to this interference ‖E_X‖₂."""
PAPER_SAE_INTERFERENCE = (10.0, 55.0)
"""The paper's ‖E_X‖₂ estimate from GPT-2 SAE decoder directions."""
N_RECON_LIMIT = 4
"""The paper's "1–4 singular vectors": a head is sparse when its median N_recon is at most this."""
MOST_HEADS = 0.5
""""Most heads": strictly more than this share of the heads."""
OFTEN = 0.2
""""Often" (paper Fig 8): at least this share of the firing pairs (our reading)."""
MATCH_MARGIN = 0.05
"""SAE claim (our extension, no paper number): a firing logit's dominant latent pair "is" the dominant singular
pair's when the pooled match rate exceeds the rotation null's, chance and the random-dictionary control's by more
than this (five percentage points)."""
MIN_LATENT_SHARE = 0.5
"""SAE attribution claim: latent×latent terms must carry at least this share of the logit in most firing pairs (the
rest is b_dec and the SAE's error, which no latent explains)."""
NULL_GAP = 0.1
""""Absent under the null" over training: S at least this fraction below the null's S at the last checkpoint."""
SIGNIFICANT_SIGMA_RATIO = 0.05
"""σ_k/σ_1 above this counts as a "significant" singular value (paper Fig 2b; toy metrics, spectra figure)."""
POSITION_RANK = 16
"""The positional subspace of a site: this many top principal directions of the per-position mean head input."""
POSITIONAL_SHARE = 0.5
"""A head is *positional* when its top singular vectors hold more than this share of their energy in the positional
subspace (a random direction holds about POSITION_RANK / d_model of it)."""
FDR_LEVEL = 0.05
"""Benjamini–Hochberg false-discovery rate of the per-head tests (:func:`svalign.stats.benjamini_hochberg`)."""

# The nulls of a singular basis (svalign.nulls draws them), loosest first; the paper's is the reference.
NULLS = ("haar", "subspace", "covariance")
NULL_LABELS = {
    "haar": "Haar rotation of the whole input space (the paper's)",
    "subspace": "random frame inside the head's own row/column subspaces",
    "covariance": "directions drawn from the head inputs' second moment",
}
NULL_PREFIXES = {"haar": "null_", "subspace": "subspace_null_", "covariance": "covariance_null_"}
"""Column prefix of each null in the SAD tables (the Haar null keeps the plain ``null_`` of earlier versions)."""


def lower_half(top_rank: Any, rank: int) -> np.ndarray:
    """Whether a σ rank (0 = largest σ) is in the lower half of the spectrum: rank ≥ r/2 (for r = 32: ranks
    16–31, the 16 smallest singular values)."""
    return np.asarray(top_rank) >= rank / 2


def share_at_most(medians: Any, limit: float = N_RECON_LIMIT) -> np.ndarray:
    """Share of heads (last axis) whose median N_recon is ≤ ``limit``; a head with no pair of ℓ̃ > 0 (median NaN)
    counts as not sparse and stays in the denominator."""
    medians = np.asarray(medians, dtype=np.float64)
    return (medians <= limit).mean(-1)


def share_sparser(real: Any, null: Any) -> np.ndarray:
    """Share of heads (last axis) whose median S is below their rotation null's; heads without firing pairs (NaN)
    are left out of numerator and denominator."""
    real, null = np.asarray(real, dtype=np.float64), np.asarray(null, dtype=np.float64)
    defined = ~(np.isnan(real) | np.isnan(null))
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((real < null) & defined).sum(-1) / defined.sum(-1)


def pooled_share(fractions: Any, counts: Any) -> float:
    """A fraction pooled over firing pairs from per-head fractions and the pair counts they are over:
    Σ fraction · count / Σ count (every pair weighs the same; a mean over heads would weigh every head the same)."""
    fractions, counts = np.asarray(fractions, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    used = counts > 0
    return float((fractions[used] * counts[used]).sum() / counts[used].sum()) if used.any() else float("nan")


def crossings(curves: Any, norms: Any, level: float) -> np.ndarray:
    """Where each curve (last axis, over increasing ``norms``) first drops below ``level``.

    Linear interpolation inside the first segment that starts at or above ``level`` and ends below it; a curve
    that starts below gives its first norm, one that never drops gives ``inf``.

    Args:
        curves: ``[…, n]`` values at ``norms`` ``[n]``.

    Returns:
        ``[…]`` crossing norms.
    """
    y, x = np.asarray(curves, dtype=np.float64), np.asarray(norms, dtype=np.float64)
    never = np.where(y[..., 0] < level, x[0], np.inf)
    if y.shape[-1] < 2:
        return never
    drops = (y[..., :-1] >= level) & (y[..., 1:] < level)
    first = drops.argmax(-1)[..., None]
    y0, y1 = np.take_along_axis(y, first, -1)[..., 0], np.take_along_axis(y, first + 1, -1)[..., 0]
    x0, x1 = x[first[..., 0]], x[np.minimum(first[..., 0] + 1, len(x) - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = x0 + (y0 - level) * (x1 - x0) / (y0 - y1)
    return np.where(drops.any(-1), inside, never)


def grid_crossings(curves: Any, norms: Any, level: float) -> np.ndarray:
    """The other reading of the crossing: the first grid norm whose value is below ``level`` (no interpolation;
    ``inf`` if none). Same shapes as :func:`crossings`."""
    y, x = np.asarray(curves, dtype=np.float64), np.asarray(norms, dtype=np.float64)
    below = y < level
    return np.where(below.any(-1), x[below.argmax(-1)], np.inf)


def anisotropy_crossing(mean_by_norm: Any, level: float = PAPER_ALIGNMENT_LEVEL) -> float | None:
    """:func:`crossings` of one curve given as a Series (‖E_X‖₂ → mean |cos|, sorted); None if it never drops.
    The one definition of "the crossing" for the results table, the captions and the figure title. A curve already
    below ``level`` at the first norm gives that norm (the verdict's number); it crossed nowhere, and
    :func:`svalign.claims.toy.crossing_text` words it so ("is below 0.75 from the first norm (0)")."""
    value = float(crossings(np.asarray(mean_by_norm.values), np.asarray(mean_by_norm.index), level))
    return None if np.isinf(value) else value


def gap_below_null(real: Any, null: Any) -> np.ndarray:
    """How far S lies below the null's S, as a fraction of the null's: 1 − S / S_null (0.1 = 10 % below)."""
    return 1 - np.asarray(real, dtype=np.float64) / np.asarray(null, dtype=np.float64)


def anisotropy_curves(table) -> tuple[Any, Any]:
    """Mean matched |cos| over feature seeds by interference norm (sorted): trained head, closed form Ω*."""
    by_norm = table.groupby("interference_norm")
    return (
        by_norm["mean_matched_cos"].mean().sort_index(),
        by_norm["closed_form_mean_matched_cos"].mean().sort_index(),
    )


def crossing_text(curve, threshold: float = PAPER_ALIGNMENT_LEVEL, norm: str = "‖E_X‖₂") -> str:
    """Where ``curve`` (:func:`anisotropy_crossing`) drops below ``threshold``, as a predicate of "the curve":
    "crosses 0.75 at ‖E_X‖₂ ≈ 43", "is below 0.75 from the first norm (0)" (a curve that starts below has no
    crossing, though its crossing norm is the first), or "stays above 0.75 (up to ‖E_X‖₂ = 60)"."""
    value = anisotropy_crossing(curve, threshold)
    if value is None:
        return f"stays above {threshold:g} (up to {norm} = {curve.index.max():g})"
    if float(curve.iloc[0]) < threshold:
        return f"is below {threshold:g} from the first norm ({curve.index[0]:g})"
    return f"crosses {threshold:g} at {norm} ≈ {value:.0f}"
