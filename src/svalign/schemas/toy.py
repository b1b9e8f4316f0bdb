"""Toy stage tables: results/toy/{experiment}/ weights, metrics, trajectory; the anisotropy sweep and the robustness
sweeps."""

from __future__ import annotations

import pyarrow as pa

from svalign.definitions import SIGNIFICANT_SIGMA_RATIO
from svalign.io import Column, TableSchema

__all__ = [
    "TOY_ANISOTROPY",
    "TOY_INSTANCE_COLUMNS",
    "TOY_METRICS",
    "TOY_SWEEP",
    "TOY_TRAJECTORY",
    "TOY_WEIGHTS",
]

_I64, _F64, _F32 = pa.int64(), pa.float64(), pa.float32()


# --------------------------------------------------------------------------------------------------
# Toy model (stage toy)
# --------------------------------------------------------------------------------------------------
TOY_INSTANCE_COLUMNS = (
    Column("experiment", pa.string(), "toy experiment name (key of toy.experiments)"),
    Column("instance", pa.int64(), "index of the instance in the batched run"),
    Column("seed", pa.int64(), "seed of the instance's init and data streams"),
    Column("sparsity", pa.float64(), "probability S that a feature is zero"),
    Column("lam", pa.float64(), "weight λ of the attention loss (0: no-head control)"),
)
_METRIC_COLUMNS = (
    Column("step", _I64, "optimiser step the metrics refer to"),
    Column("recon_loss", _F64, "reconstruction loss on the fixed evaluation batch"),
    Column("attention_loss", _F64, "attention loss (KL for cross_entropy, MSE otherwise) on the evaluation batch"),
    Column("pair_query", _I64, "query feature a_p of each template pair", ("n_pairs",)),
    Column("pair_key", _I64, "key feature b_p of each template pair", ("n_pairs",)),
    Column("pair_value", _F64, "template value T[a_p, b_p] (target logit / β)", ("n_pairs",)),
    Column("sigma", _F64, "singular values of Ω = W_Q W_Kᵀ, descending", ("rank",)),
    Column("cos_u", _F64, "|cos(w_i, u_k)|: features vs left (query) singular vectors", ("n_features", "rank")),
    Column("cos_v", _F64, "|cos(w_i, v_k)|: features vs right (key) singular vectors", ("n_features", "rank")),
    Column("matched_rank", _I64, "singular pair assigned to each template pair (Hungarian; -1 none)", ("n_pairs",)),
    Column("matched_cos_u", _F64, "|cos(w_a, u_k)| of the matched pair (NaN if unmatched)", ("n_pairs",)),
    Column("matched_cos_v", _F64, "|cos(w_b, v_k)| of the matched pair (NaN if unmatched)", ("n_pairs",)),
    Column("matched_sigma", _F64, "σ_k of the matched singular pair", ("n_pairs",)),
    Column("best_rank", _I64, "best singular pair of each template pair (may repeat)", ("n_pairs",)),
    Column("best_cos_u", _F64, "|cos(w_a, u_k)| at the best singular pair", ("n_pairs",)),
    Column("best_cos_v", _F64, "|cos(w_b, v_k)| at the best singular pair", ("n_pairs",)),
    Column("gain", _F64, "ŵ_aᵀ Ω ŵ_b, the head's logit gain between the unit pair features", ("n_pairs",)),
    Column("sigma_over_target", _F64, "matched σ / (β T[a, b])", ("n_pairs",)),
    Column("mean_matched_cos", _F64, "mean over pairs and both sides of the matched |cos|"),
    Column("min_matched_cos", _F64, "smallest matched |cos| over pairs and sides"),
    Column("n_distinct_best", _I64, "number of distinct singular pairs claimed by best matching"),
    Column("sigma2_over_sigma1", _F64, "σ_2/σ_1"),
    Column("spectral_separation", _F64, "σ_{P+1}/σ_P for P template pairs (NaN when P >= rank)"),
    Column("n_significant", _I64, f"number of σ_k with σ_k/σ_1 > {SIGNIFICANT_SIGMA_RATIO}"),
    Column("spearman_sigma_T", _F64, "Spearman of matched σ vs T over pairs (NaN for one pair)"),
    Column("spearman_gain_T", _F64, "Spearman of the gain ŵ_aᵀΩŵ_b vs T over pairs (NaN for one pair)"),
    Column("max_interference_attended", _F64, "max |cos(w_i, w_j)| over attended i and any j != i"),
    Column("max_interference_query", _F64, "max |cos(w_a, w_j)| over query-side features a and any j != a"),
    Column("max_interference_key", _F64, "max |cos(w_b, w_j)| over key-side features b and any j != b"),
    Column("mean_interference_attended", _F64, "mean over attended i of max_j |cos(w_i, w_j)|"),
    Column("mean_interference_other", _F64, "mean over non-attended i of max_j |cos(w_i, w_j)|"),
    Column("attended_span_energy", _F64, "fraction of the other features' squared norm in span(attended)"),
    Column("feature_norms", _F64, "‖w_i‖", ("n_features",)),
    Column("closed_form_rel_error", _F64, "‖Ω − Ω*‖_F / ‖Ω*‖_F, Ω* the closed-form optimum for these features"),
    Column("closed_form_sigma", _F64, "σ of Ω* at the singular pair matched to each template pair", ("n_pairs",)),
    Column("closed_form_cos_u", _F64, "|cos| of trained and closed-form u matched to each pair", ("n_pairs",)),
    Column("closed_form_cos_v", _F64, "|cos| of trained and closed-form v matched to each pair", ("n_pairs",)),
)
TOY_WEIGHTS = TableSchema(
    "toy_weights",
    "Final parameters of every toy instance, one row per instance.",
    (
        *TOY_INSTANCE_COLUMNS,
        Column("W", _F32, "feature directions (columns)", ("d_model", "n_features")),
        Column("b", _F32, "autoencoder bias", ("n_features",)),
        Column("W_Q", _F32, "query weights", ("d_model", "d_head")),
        Column("W_K", _F32, "key weights", ("d_model", "d_head")),
    ),
)
TOY_METRICS = TableSchema(
    "toy_metrics",
    "Alignment, spectrum and geometry of every toy instance after training, one row per instance.",
    TOY_INSTANCE_COLUMNS
    + _METRIC_COLUMNS
    + (Column("gram", _F64, "feature Gram matrix WᵀW", ("n_features", "n_features")),),
)
TOY_TRAJECTORY = TableSchema(
    "toy_trajectory",
    "The metrics of toy_metrics (without the Gram matrix) every log_every steps, one row per instance and step.",
    TOY_INSTANCE_COLUMNS + _METRIC_COLUMNS,
)
TOY_ANISOTROPY = TableSchema(
    "toy_anisotropy",
    "Alignment of a head trained on frozen features with controlled interference ‖XᵀX − I‖₂, and of the "
    "closed-form optimum for the same features; one row per (interference norm, feature seed).",
    (
        Column("interference_norm", _F64, "target ‖E_X‖₂, E_X = XᵀX − I (unit-norm features)"),
        Column("measured_norm", _F64, "‖E_X‖₂ of the constructed features"),
        Column("feature_seed", _I64, "seed of the feature construction"),
        Column("instance", _I64, "instance in the batched run (seeds its head init and data)"),
        Column("mean_matched_cos", _F64, "trained head: mean matched |cos| over pairs and sides"),
        Column("min_matched_cos", _F64, "trained head: smallest matched |cos|"),
        Column("closed_form_mean_matched_cos", _F64, "closed-form Ω*: mean matched |cos|"),
        Column("closed_form_min_matched_cos", _F64, "closed-form Ω*: smallest matched |cos|"),
        Column("closed_form_rel_error", _F64, "‖Ω − Ω*‖_F / ‖Ω*‖_F"),
        Column("attention_loss", _F64, "final attention loss on the evaluation batch"),
    ),
)
TOY_SWEEP = TableSchema(
    "toy_sweep",
    "Final metrics of every instance of every sweep point (one-at-a-time around the base experiment).",
    (
        Column("lam", _F64, "λ of the point"),
        Column("sparsity", _F64, "S of the point"),
        Column("n_features", _I64, "N of the point"),
        Column("context_len", _I64, "m of the point"),
        Column("d_head", _I64, "H of the point"),
        Column("n_pairs", _I64, "template pairs P (H < P: pairs must share singular pairs)"),
        Column("seed", _I64, "instance seed"),
        Column("mean_matched_cos", _F64, "mean matched |cos| (Hungarian; pairs without a singular pair left out)"),
        Column("min_matched_cos", _F64, "smallest matched |cos|"),
        Column("n_matched", _I64, "pairs that got their own singular pair (≤ min(P, H))"),
        Column("best_mean_cos", _F64, "mean |cos| when every pair takes its best singular pair (may share)"),
        Column("n_distinct_best", _I64, "distinct singular pairs claimed by best matching"),
        Column("sigma2_over_sigma1", _F64, "σ_2/σ_1"),
        Column("max_interference_query", _F64, "max |cos| of query-side attended features with any other"),
        Column("attention_loss", _F64, "final attention loss"),
    ),
)
