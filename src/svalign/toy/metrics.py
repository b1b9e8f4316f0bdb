"""Alignment of a trained head with the toy's features, and the columns of the toy's per-run tables.

:func:`head_feature_metrics` measures, per instance, how the singular vectors of ``Ω = W_Q W_Kᵀ`` line up with the
template's feature pairs. It is assembled from four named groups: the spectrum, the pair matching, the gains
ŵ_aᵀ Ω ŵ_b and the feature geometry. :func:`match_pairs` is the one Hungarian matching of template pairs to
singular pairs; :mod:`svalign.toy.theory` uses it for the closed-form optimum too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr

from svalign.definitions import SIGNIFICANT_SIGMA_RATIO
from svalign.io import TableSchema
from svalign.svd import factored_svd
from svalign.tables import TOY_INSTANCE_COLUMNS, TOY_METRICS, TOY_TRAJECTORY
from svalign.toy.config import Template

__all__ = [
    "feature_cosines",
    "head_feature_metrics",
    "instance_columns",
    "match_pairs",
    "metrics_columns",
    "pair_scores",
    "trajectory_columns",
    "unit_features",
    "weights_columns",
]


# --------------------------------------------------------------------------------------------------
# Shared pieces: unit features, cosines, the Hungarian matching
# --------------------------------------------------------------------------------------------------


def unit_features(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature norms ``[I, N]`` and unit feature directions ``[I, D, N]`` of ``W [I, D, N]``."""
    norms = W.norm(dim=1)
    return norms, W / norms.clamp_min(1e-12)[:, None, :]


def feature_cosines(W_unit: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """|cos| between every unit feature ``W_unit [I, D, N]`` and every direction ``[I, D, r]``: ``[I, N, r]``."""
    return (W_unit.mT @ directions).abs()


def pair_scores(cos_u: torch.Tensor, cos_v: torch.Tensor, template: Template) -> np.ndarray:
    """``|cos(w_a, u_k)|·|cos(w_b, v_k)|`` of each template pair (a, b) and singular pair k.

    Args:
        cos_u, cos_v: ``[I, N, r]`` from :func:`feature_cosines` of the left and right singular vectors.

    Returns:
        ``[I, P, r]``.
    """
    queries, keys = list(template.query_features), list(template.key_features)
    return (cos_u[:, queries, :] * cos_v[:, keys, :]).numpy()


def match_pairs(score: np.ndarray) -> np.ndarray:
    """One-to-one (Hungarian) matching of template pairs to singular pairs, maximising the summed score.

    Args:
        score: ``[I, P, r]``, e.g. from :func:`pair_scores`.

    Returns:
        the matched singular pair of each template pair ``[I, P]`` (int64), −1 for pairs left unmatched when
        there are more template pairs than singular pairs.
    """
    matched_rank = np.full(score.shape[:2], -1, dtype=np.int64)
    for i, instance_score in enumerate(score):  # Hungarian matching is sequential by nature; I is small
        rows, cols = linear_sum_assignment(instance_score, maximize=True)
        matched_rank[i, rows] = cols
    return matched_rank


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


# --------------------------------------------------------------------------------------------------
# The metric groups of head_feature_metrics
# --------------------------------------------------------------------------------------------------


def _matching_metrics(
    cos_u: np.ndarray, cos_v: np.ndarray, sigma: np.ndarray, score: np.ndarray, template: Template, target_scale: float
) -> dict[str, np.ndarray]:
    """Matched and best singular pair of each template pair.

    Args:
        cos_u, cos_v: ``[I, N, r]``; sigma: ``[I, r]``; score: ``[I, P, r]`` from :func:`pair_scores`.
    """
    queries, keys = np.asarray(template.query_features)[None], np.asarray(template.key_features)[None]
    values = np.asarray(template.values)
    matched_rank = match_pairs(score)
    has_match = matched_rank >= 0
    safe_rank = np.where(has_match, matched_rank, 0)
    inst = np.arange(len(score))[:, None]
    matched_cos_u = np.where(has_match, cos_u[inst, queries, safe_rank], np.nan)
    matched_cos_v = np.where(has_match, cos_v[inst, keys, safe_rank], np.nan)
    matched_sigma = np.where(has_match, sigma[inst, safe_rank], np.nan)
    best_rank = score.argmax(-1)
    # Unmatched pairs (more pairs than singular pairs) are NaN and left out of the summaries.
    both_sides = np.concatenate([matched_cos_u, matched_cos_v], axis=-1)
    return {
        "matched_rank": matched_rank,
        "matched_cos_u": matched_cos_u,
        "matched_cos_v": matched_cos_v,
        "matched_sigma": matched_sigma,
        "best_rank": best_rank,
        "best_cos_u": cos_u[inst, queries, best_rank],
        "best_cos_v": cos_v[inst, keys, best_rank],
        "sigma_over_target": matched_sigma / (target_scale * values[None]),
        "mean_matched_cos": np.nanmean(both_sides, axis=-1),
        "min_matched_cos": np.nanmin(both_sides, axis=-1),
        "n_distinct_best": np.array([len(set(r)) for r in best_rank]),
        "spearman_sigma_T": np.array([_spearman(s, values) for s in matched_sigma]),
    }


def _gain_metrics(
    W_unit: torch.Tensor, W_Q: torch.Tensor, W_K: torch.Tensor, template: Template
) -> dict[str, np.ndarray]:
    """``gain [I, P]`` = ŵ_aᵀ Ω ŵ_b of each pair, and its rank correlation with the template values."""
    omega_pairs = W_unit.mT @ W_Q @ W_K.mT @ W_unit  # [I, N, N]: ŵ_iᵀ Ω ŵ_j
    gain = omega_pairs[:, torch.tensor(template.query_features), torch.tensor(template.key_features)].numpy()
    values = np.asarray(template.values)
    return {"gain": gain, "spearman_gain_T": np.array([_spearman(g, values) for g in gain])}


def _spectrum_metrics(sigma: np.ndarray, n_pairs: int) -> dict[str, np.ndarray]:
    """Scalars of the singular values ``sigma [I, r]``: σ₂/σ₁, σ_{P+1}/σ_P and the count above the threshold."""
    n_instances, rank = sigma.shape
    separation = sigma[:, n_pairs] / sigma[:, n_pairs - 1] if n_pairs < rank else np.full(n_instances, np.nan)
    return {
        "sigma2_over_sigma1": sigma[:, 1] / sigma[:, 0] if rank > 1 else np.full(n_instances, np.nan),
        "spectral_separation": separation,
        "n_significant": (sigma / sigma[:, :1] > SIGNIFICANT_SIGMA_RATIO).sum(-1),
    }


def _geometry_metrics(
    W: torch.Tensor, W_unit: torch.Tensor, norms: torch.Tensor, template: Template
) -> dict[str, np.ndarray]:
    """Interference between features (max |cos| with any other feature), the attended span, Gram and norms.

    Args:
        W: features ``[I, D, N]`` (float64); W_unit: the same, unit columns; norms: ``[I, N]``.
    """
    n_instances, _, n_features = W.shape
    cos_gram = (W_unit.mT @ W_unit).abs()
    cos_gram.diagonal(dim1=-2, dim2=-1).zero_()
    per_feature_interference = cos_gram.max(-1).values.numpy()  # [I, N]
    attended = list(template.attended_features)
    others = [i for i in range(n_features) if i not in set(attended)]
    # Fraction of the other features' energy inside span(attended): 0 when attended features are
    # orthogonal to everything else (the paper's Fig 1b geometry).
    Q_att, _ = torch.linalg.qr(W[:, :, attended])
    if others:
        W_other = W[:, :, others]
        span_energy = (Q_att.mT @ W_other).square().sum((-1, -2)) / W_other.square().sum((-1, -2)).clamp_min(1e-12)
        mean_other = per_feature_interference[:, others].mean(-1)
    else:
        span_energy = torch.full((n_instances,), float("nan"))
        mean_other = np.full(n_instances, np.nan)
    return {
        "max_interference_attended": per_feature_interference[:, attended].max(-1),
        "max_interference_query": per_feature_interference[:, list(template.query_features)].max(-1),
        "max_interference_key": per_feature_interference[:, list(template.key_features)].max(-1),
        "mean_interference_attended": per_feature_interference[:, attended].mean(-1),
        "mean_interference_other": mean_other,
        "attended_span_energy": span_energy.numpy(),
        "gram": (W.mT @ W).numpy(),
        "feature_norms": norms.numpy(),
    }


def head_feature_metrics(
    W: torch.Tensor, W_Q: torch.Tensor, W_K: torch.Tensor, template: Template, target_scale: float
) -> dict[str, np.ndarray]:
    """Alignment of the head's singular vectors with the features, spectrum and feature geometry.

    Args:
        W: features ``[instance, D, N]``; W_Q, W_K: ``[instance, D, H]``.

    Returns:
        column name -> array with leading ``instance`` axis (``P`` pairs, ``r = min(D, H)``):
        ``sigma [r]``, ``cos_u``/``cos_v [N, r]`` (|cos| between feature i and u_k / v_k), per pair
        ``matched_rank``, ``matched_cos_u``, ``matched_cos_v`` (one-to-one Hungarian matching of pairs to
        singular pairs on |cos u|·|cos v|; rank −1 and NaN when there are more pairs than singular pairs),
        ``best_rank``/``best_cos_u``/``best_cos_v`` (each pair's best singular pair; several pairs may
        claim one), ``matched_sigma``, ``gain`` (ŵ_aᵀ Ω ŵ_b), ``sigma_over_target`` (σ/(βT)); scalars
        ``mean_matched_cos``, ``min_matched_cos``, ``n_distinct_best``, ``sigma2_over_sigma1``,
        ``spectral_separation`` (σ_{P+1}/σ_P), ``n_significant``, ``spearman_sigma_T``,
        ``spearman_gain_T``, ``max_interference_attended`` (and ``_query``/``_key`` for each side),
        ``mean_interference_attended``, ``mean_interference_other``, ``attended_span_energy``; and
        ``gram [N, N]``, ``feature_norms [N]``.
    """
    W, W_Q, W_K = (t.detach().to(torch.float64).cpu() for t in (W, W_Q, W_K))
    norms, W_unit = unit_features(W)  # [I, N], [I, D, N]
    U, S, V = factored_svd(W_Q, W_K)  # [I, D, r], [I, r], [I, D, r]
    cos_u, cos_v = feature_cosines(W_unit, U), feature_cosines(W_unit, V)  # [I, N, r]
    sigma = S.numpy()
    score = pair_scores(cos_u, cos_v, template)  # [I, P, r]
    return {
        "sigma": sigma,
        "cos_u": cos_u.numpy(),
        "cos_v": cos_v.numpy(),
        **_matching_metrics(cos_u.numpy(), cos_v.numpy(), sigma, score, template, target_scale),
        **_gain_metrics(W_unit, W_Q, W_K, template),
        **_spectrum_metrics(sigma, template.n_pairs),
        **_geometry_metrics(W, W_unit, norms, template),
    }


# --------------------------------------------------------------------------------------------------
# Columns of the toy's per-run tables
# --------------------------------------------------------------------------------------------------


def instance_columns(instances: Sequence[dict], experiment: str, repeat: int = 1) -> dict[str, list]:
    """``experiment, instance, seed, sparsity, lam`` of each instance, the instance list repeated ``repeat`` times."""
    rows = list(instances) * repeat
    return {
        "experiment": [experiment] * len(rows),
        **{key: [row[key] for row in rows] for key in ("instance", "seed", "sparsity", "lam")},
    }


def _record_columns(
    template: Template, n_instances: int, records: Sequence[dict[str, np.ndarray]], schema: TableSchema
) -> dict[str, np.ndarray]:
    """The template's pair columns and every metric column of ``schema``, the records stacked row-wise."""
    n_rows = len(records) * n_instances
    pair_columns = {
        "pair_query": np.tile(template.query_features, (n_rows, 1)),
        "pair_key": np.tile(template.key_features, (n_rows, 1)),
        "pair_value": np.tile(template.values, (n_rows, 1)),
    }
    instance_names = {c.name for c in TOY_INSTANCE_COLUMNS}
    names = [c.name for c in schema.columns if c.name not in pair_columns and c.name not in instance_names]
    return {**pair_columns, **{name: np.concatenate([r[name] for r in records]) for name in names}}


def weights_columns(instances: Sequence[dict], weights: dict[str, np.ndarray], experiment: str) -> dict[str, object]:
    """Column data for :data:`~svalign.tables.TOY_WEIGHTS`; ``weights`` as from ``ToyParams.numpy()``."""
    return {**instance_columns(instances, experiment), **weights}


def metrics_columns(
    template: Template, instances: Sequence[dict], final: dict[str, np.ndarray], experiment: str
) -> dict[str, object]:
    """Column data for :data:`~svalign.tables.TOY_METRICS`: the final metrics, one row per instance."""
    return {
        **instance_columns(instances, experiment),
        **_record_columns(template, len(instances), [final], TOY_METRICS),
    }


def trajectory_columns(
    template: Template, instances: Sequence[dict], trajectory: Sequence[dict[str, np.ndarray]], experiment: str
) -> dict[str, object]:
    """Column data for :data:`~svalign.tables.TOY_TRAJECTORY` (rows ordered by step, then instance)."""
    return {
        **instance_columns(instances, experiment, repeat=len(trajectory)),
        **_record_columns(template, len(instances), trajectory, TOY_TRAJECTORY),
    }
