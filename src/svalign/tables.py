"""Every Parquet table the pipeline writes, declared in one torch-free place.

Stage modules import their schemas from here; figure scripts and report captions read tables with them without
importing torch. ``python -m svalign.tables`` regenerates docs/schemas.md.
"""

from __future__ import annotations

import sys

import pyarrow as pa

from svalign.io import HEAD_KEYS, Column, TableSchema
from svalign.sae.schemas import SAE_TABLES
from svalign.toy.config import SIGNIFICANT_SIGMA_RATIO

__all__ = [
    "DYNAMICS_HEAD_SCORES",
    "DYNAMICS_PROMPTS",
    "DYNAMICS_SAD",
    "DYNAMICS_TRAINING_LOG",
    "EXPLORER_EXAMPLES",
    "EXPLORER_READOUTS",
    "EXPLORER_TOKENS",
    "HEAD_SPECTRUM_BLOCKS",
    "HEAD_SVD",
    "HEAD_SVD_BASES",
    "HEAD_WEIGHTS",
    "RESULTS_CLAIMS",
    "SAD_PAIRS",
    "SAD_PROMPTS",
    "SAD_SUMMARY",
    "TABLES",
    "TOY_ANISOTROPY",
    "TOY_INSTANCE_COLUMNS",
    "TOY_METRICS",
    "TOY_SWEEP",
    "TOY_TRAJECTORY",
    "TOY_WEIGHTS",
    "schema",
    "schemas_markdown",
]

_STR, _I64, _F64, _F32, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.float32(), pa.bool_()


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


# --------------------------------------------------------------------------------------------------
# Real-model weights (stage extract_weights)
# --------------------------------------------------------------------------------------------------
HEAD_WEIGHTS = TableSchema(
    "head_weights",
    "Query/key weights of every attention head of one model variant, one row per (layer, head).",
    (
        *HEAD_KEYS,
        Column("kv_head", _I64, "key/value head this query head reads (GQA: head // group)"),
        Column("W_Q", _F32, "query weights (row convention: q = x W_Q + b_Q)", ("d_model", "d_head")),
        Column("W_K", _F32, "key weights of the head's key/value head", ("d_model", "d_head")),
        Column("b_Q", _F32, "query bias (zeros when the model has none)", ("d_head",)),
        Column("b_K", _F32, "key bias (zeros when the model has none)", ("d_head",)),
        Column("has_bias", _BOOL, "the model has q/k biases (the SVD stage then augments x̃ = [x, 1])"),
        Column("rotary_dim", _I64, "rotated dimensions per head (0: no RoPE)"),
        Column("rotary_base", _F64, "RoPE θ base of the row's layer (0: no RoPE)"),
        Column("rotary_style", _STR, "RoPE convention: rotate_half, interleaved (GPT-J), or empty"),
        Column("attn_scale", _F64, "divisor of q·k before the softmax"),
        Column("causal", _BOOL, "causal (decoder) attention"),
        Column("architecture", _STR, "Hugging Face model_type"),
        Column("processing", _STR, "how W_Q/W_K relate to the checkpoint (norm folding)"),
        Column("head_input_hook", _STR, "hook whose output W_Q/W_K act on ({layer} filled in)"),
        Column("sliding_window", _I64, "the row's layer attends to keys t − w < j ≤ t (0: the whole causal prefix)"),
        Column("attn_softcap", _F64, "attention-logit soft-cap c, ℓ → c·tanh(ℓ/c) (0: none); SAD decomposes pre-cap ℓ"),
        Column("qk_norm", _STR, "RMSNorm of q and k: per_head, all_heads or empty; SAD carries per-token 1/ρ"),
    ),
    version=2,
)


# --------------------------------------------------------------------------------------------------
# SVD (stage svd)
# --------------------------------------------------------------------------------------------------
HEAD_SVD = TableSchema(
    "head_svd",
    "Singular values and core singular vectors of every head's QK form Ω_δ (one row per layer, head and RoPE "
    "offset δ; models without RoPE have δ = 0 only). Full vectors: U = basis_q @ core_u, V = basis_k @ core_v "
    "with the bases of head_svd_bases (svalign.svd.read_model_svd does it).",
    (
        *HEAD_KEYS,
        Column("offset", _I64, "query − key position offset δ of Ω_δ = A R_δ Bᵀ"),
        Column("sigma", _F32, "singular values, descending", ("rank",)),
        Column("core_u", _F32, "left singular vectors in basis_q coordinates", ("rank", "rank")),
        Column("core_v", _F32, "right singular vectors in basis_k coordinates", ("rank", "rank")),
        Column("recon_error", _F64, "‖U Σ Vᵀ − Ω_δ‖_F / ‖Ω_δ‖_F (computed in float64)"),
    ),
)
HEAD_SVD_BASES = TableSchema(
    "head_svd_bases",
    "Orthonormal bases of each head's query and key factors (shared by all its offsets), one row per head.",
    (
        *HEAD_KEYS,
        Column("augmented", _BOOL, "bias-augmented input x̃ = [x, 1]: the last coordinate is the constant"),
        Column("basis_q", _F32, "Q_A, orthonormal basis of [W_Q; b_Q]", ("d_input", "rank")),
        Column("basis_k", _F32, "Q_B, orthonormal basis of [W_K; b_K]", ("d_input", "rank")),
    ),
)


# --------------------------------------------------------------------------------------------------
# SAD (stage sad)
# --------------------------------------------------------------------------------------------------
SAD_PAIRS = TableSchema(
    "sad_pairs",
    "Every firing (query, key) pair of every head, with its decomposition statistics, real and under the "
    "rotation null. Rows are sorted by layer (one row group per layer: filter on `layer` to read a part).",
    (
        *HEAD_KEYS,
        Column("prompt_set", _STR, "ioi or plain"),
        Column("prompt", _I64, "prompt index in the prompt set"),
        Column("t", _I64, "query position"),
        Column("j", _I64, "key position"),
        Column("attention", _F32, "attention weight A(t, j)"),
        Column("ltilde", _F32, "relative attention ℓ̃(t, j) (unscaled logit units)"),
        Column(
            "n_recon",
            _I64,
            "terms needed to reconstruct ℓ̃ (−1: ℓ̃ ≤ 0), in the ordering sad.n_recon_order (provenance): equal to "
            "n_recon_signed or n_recon_magnitude",
        ),
        Column("n_recon_signed", _I64, "N_recon taking the largest c_k first (the authors' rule; −1: ℓ̃ ≤ 0)"),
        Column("n_recon_magnitude", _I64, "N_recon taking the largest |c_k| first (−1: ℓ̃ ≤ 0)"),
        Column("sparseness", _F32, "Rolls–Tovée S of the relative terms (lower = sparser)"),
        Column("top_rank", _I64, "σ rank (0 = largest) of the largest |c_k|"),
        Column("null_n_recon", _I64, "N_recon (ordering sad.n_recon_order) under each rotation-null draw", ("n_null",)),
        Column("null_n_recon_signed", _I64, "n_recon_signed under each rotation-null draw", ("n_null",)),
        Column("null_n_recon_magnitude", _I64, "n_recon_magnitude under each rotation-null draw", ("n_null",)),
        Column("null_sparseness", _F32, "S under each rotation-null draw", ("n_null",)),
    ),
    version=2,
)
_N_RECON_ORDER_COLUMNS = tuple(
    column
    for order in ("signed", "magnitude")
    for column in (
        Column(f"median_n_recon_{order}", _F64, f"median N_recon, {order} ordering"),
        Column(
            f"frac_n_recon_le4_{order}", _F64, f"fraction of the pairs with ℓ̃ > 0 with N_recon ≤ 4, {order} ordering"
        ),
        Column(f"null_median_n_recon_{order}", _F64, f"median N_recon, {order} ordering, rotation null (draws pooled)"),
        Column(f"null_frac_n_recon_le4_{order}", _F64, f"frac_n_recon_le4_{order} under the rotation null"),
    )
)
"""The summary's N_recon columns under each ordering by name, whatever sad.n_recon_order says."""
SAD_SUMMARY = TableSchema(
    "sad_summary",
    "Per-head summary of the SAD statistics, real and under the rotation null.",
    (
        *HEAD_KEYS,
        Column("prompt_set", _STR, "ioi or plain"),
        Column("rank", _I64, "number of singular values r"),
        Column("n_recon_order", _STR, "sad.n_recon_order: the ordering of the plain N_recon columns"),
        Column("n_pairs", _I64, "firing pairs"),
        Column("n_nonpositive", _I64, "firing pairs with ℓ̃ ≤ 0 (N_recon undefined)"),
        Column("n_recon_hist", _I64, "count of firing pairs with N_recon = 1..r (ordering n_recon_order)", ("rank",)),
        Column("median_n_recon", _F64, "median N_recon over pairs with ℓ̃ > 0 (ordering n_recon_order)"),
        Column("frac_n_recon_le4", _F64, "fraction of the pairs with ℓ̃ > 0 that have N_recon ≤ 4 (n_recon_order)"),
        *_N_RECON_ORDER_COLUMNS,
        Column("median_sparseness", _F64, "median Rolls–Tovée S"),
        Column("frac_top_lower_half", _F64, "fraction of pairs whose largest |c_k| has rank ≥ r/2"),
        Column("null_median_n_recon", _F64, "median_n_recon under the rotation null (all draws pooled)"),
        Column("null_frac_n_recon_le4", _F64, "frac_n_recon_le4 under the rotation null (all draws pooled)"),
        Column("null_median_sparseness", _F64, "median_sparseness under the rotation null (all draws pooled)"),
        Column("share_by_rank", _F64, "mean over firing pairs of |c_k| / Σ|c| at each σ rank k", ("rank",)),
        Column("null_share_by_rank", _F64, "the same under the rotation null", ("rank",)),
    ),
    version=2,
)
SAD_PROMPTS = TableSchema(
    "sad_prompts",
    "The prompts of one SAD run: text, whether it was kept, its length in tokens and, for IOI on causal models, "
    "the model's logit difference logit(IO) − logit(S) at the last position.",
    (
        *HEAD_KEYS[:2],  # model, variant
        Column("prompt_set", _STR, "ioi or plain"),
        Column("prompt", _I64, "prompt index in the prompt set"),
        Column("text", _STR, "the prompt"),
        Column("kept", pa.bool_(), "used (IOI names are single tokens for this tokenizer)"),
        Column("n_tokens", _I64, "length in tokens (−1 if not kept)"),
        Column("io_name", _STR, "indirect object (IOI; empty otherwise)"),
        Column("s_name", _STR, "subject (IOI; empty otherwise)"),
        Column("logit_diff", _F64, "logit(IO) − logit(S) at the last position (NaN when not applicable)"),
    ),
)


# --------------------------------------------------------------------------------------------------
# Training dynamics (stage dynamics)
# --------------------------------------------------------------------------------------------------
_RUN_KEYS = (
    Column("model", _STR, "name of the trained dynamics model (key of config `dynamics`)"),
    Column("seed", _I64, "training seed (init and data)"),
)
DYNAMICS_TRAINING_LOG = TableSchema(
    "dynamics_training_log",
    "Training-batch losses of the from-scratch transformer on repeated random segments, every log_every updates.",
    (
        *_RUN_KEYS,
        Column("step", _I64, "optimiser update (1-based); the losses are of the weights before this update"),
        Column("loss", _F64, "mean next-token cross-entropy over all positions (nats)"),
        Column("icl_loss", _F64, "cross-entropy on the predictable tokens of the repeated copy (in-context loss)"),
        Column("lr", _F64, "learning rate of this update"),
    ),
)
DYNAMICS_PROMPTS = TableSchema(
    "dynamics_prompts",
    "The repeated-segment prompts of our dynamics series (rule dynamics_prompts): sequences of the training "
    "distribution, drawn from their own stream, that the SAD stage reads as its `repeated` prompt set.",
    (
        Column("prompt", _I64, "prompt index"),
        Column("text", _STR, "the sequence as words t<i>, one token each under the series' tokenizer"),
        Column("start", _I64, "position where the repeated segment starts"),
        Column("period", _I64, "segment length: the copy starts at start + period"),
    ),
)
DYNAMICS_HEAD_SCORES = TableSchema(
    "dynamics_head_scores",
    "Induction and previous-token scores of every head of every checkpoint, with the checkpoint's losses on a "
    "fixed evaluation batch of repeated random segments. One row per (step, layer, head).",
    (
        *_RUN_KEYS,
        Column("step", _I64, "checkpoint step (optimiser updates; 0 = init)"),
        Column("layer", _I64, "layer index"),
        Column("head", _I64, "head index"),
        Column(
            "induction_score", _F64, "mean attention from each token of the copy to the key after its first occurrence"
        ),
        Column("previous_token_score", _F64, "mean attention from position t to t − 1"),
        Column("loss", _F64, "checkpoint's mean next-token cross-entropy on the evaluation batch (nats)"),
        Column("icl_loss", _F64, "checkpoint's cross-entropy on the predictable tokens of the copy"),
    ),
)
DYNAMICS_SAD = TableSchema(
    "dynamics_sad",
    "Per-head SAD summary of every training checkpoint (real and rotation null), with the checkpoint's task "
    "scores and losses (our series) and the tracked head marked.",
    (
        Column("checkpoint", _STR, "model name of the checkpoint (dyn_stepNNNNNN or dyn_cNNN)"),
        Column("series", _STR, "ours (trained here) or external"),
        Column("step", _I64, "training step of the checkpoint"),
        Column("layer", _I64, "layer index"),
        Column("head", _I64, "head index"),
        Column("chosen", pa.bool_(), "the tracked head (config dynamics.head, else best induction score at the end)"),
        Column("n_pairs", _I64, "firing pairs"),
        Column("median_n_recon", _F64, "median N_recon over pairs with ℓ̃ > 0"),
        Column("null_median_n_recon", _F64, "the same under the rotation null"),
        Column("median_sparseness", _F64, "median Rolls–Tovée S (lower = sparser)"),
        Column("null_median_sparseness", _F64, "the same under the rotation null"),
        Column("induction_score", _F64, "induction score of the head (NaN for external checkpoints)"),
        Column("previous_token_score", _F64, "previous-token score of the head (NaN for external checkpoints)"),
        Column("loss", _F64, "checkpoint's evaluation loss (nats; NaN for external checkpoints)"),
        Column("icl_loss", _F64, "checkpoint's in-context loss on the copy (nats; NaN for external checkpoints)"),
    ),
)


# --------------------------------------------------------------------------------------------------
# Head explorer (stage explorer)
# --------------------------------------------------------------------------------------------------
HEAD_SPECTRUM_BLOCKS = TableSchema(
    "head_spectrum_blocks",
    "Degeneracy-aware spectrum of every head and offset (rule explorer_spectra, svalign.degeneracy): adjacent "
    "singular values whose relative gap is below explorer.degeneracy_gap form one block, inside which only the "
    "subspace is defined; directions below the numerical rank form one last block.",
    (
        *HEAD_KEYS,
        Column("offset", _I64, "query − key position offset δ of Ω_δ (0 without RoPE)"),
        Column("sigma", _F32, "singular values, descending (as in head_svd)", ("rank",)),
        Column("block", _I64, "block of each direction (0, 1, …; the below-rank ones share the last)", ("rank",)),
        Column("numerical_rank", _I64, "directions with σ_k > explorer.rank_rtol · σ_1 (the rest are not resolved)"),
        Column("n_blocks", _I64, "number of blocks (the below-rank block included)"),
        Column("degenerate_top", _BOOL, "a direction k < explorer.top_directions lies in a block of ≥ 2 resolved ones"),
        Column("first_degenerate", _I64, "first direction in a block of ≥ 2 resolved directions (−1: none)"),
        Column("min_gap_top", _F64, "smallest relative gap (σ_k − σ_{k+1}) / σ_k for k < explorer.top_directions"),
    ),
)
EXPLORER_TOKENS = TableSchema(
    "explorer_tokens",
    "The tokens of every kept prompt the head explorer read (rule explorer_readouts), so that read-outs and "
    "examples can be shown in context.",
    (
        *HEAD_KEYS[:2],  # model, variant
        Column("prompt_set", _STR, "ioi or plain"),
        Column("prompt", _I64, "prompt index in the prompt set (as in sad_prompts)"),
        Column("tokens", _STR, "each token as the tokenizer decodes it alone", ("n_tokens",), ragged=True),
        Column("token_ids", _I64, "token ids", ("n_tokens",), ragged=True),
    ),
)
EXPLORER_READOUTS = TableSchema(
    "explorer_readouts",
    "Token read-outs of every head's leading singular directions (rule explorer_readouts; δ = 0 under RoPE): the "
    "prompt positions whose head input x̃ projects most on u_k (query side) or v_k (key side), and the vocabulary "
    "tokens whose embedding, through the head's input normalisation at layer 0, does. One row per (head, "
    "direction, side, pole, source, place).",
    (
        *HEAD_KEYS,
        Column("rank", _I64, "direction k (σ rank at offset 0, 0 = largest)"),
        Column("side", _STR, "query (x̃_t · u_k) or key (v_k · x̃_j)"),
        Column("pole", _STR, "high (the largest projections) or low (the smallest, most negative)"),
        Column("source", _STR, "context (prompt positions) or embedding (vocabulary through the normalisation)"),
        Column("order", _I64, "place in the list (0 = strongest)"),
        Column("value", _F32, "the projection (q/k-norm models: times the per-token 1/ρ)"),
        Column("token", _STR, "the token as decoded alone"),
        Column("token_id", _I64, "its id"),
        Column("prompt_set", _STR, "prompt set of a context read-out (empty for embedding)"),
        Column("prompt", _I64, "prompt index (−1 for embedding)"),
        Column("position", _I64, "token position in the prompt (−1 for embedding)"),
        Column("context", _STR, "the surrounding tokens with the token in ⟦ ⟧ (empty for embedding)"),
    ),
)
EXPLORER_EXAMPLES = TableSchema(
    "explorer_examples",
    "SAD examples of every head (rule explorer_readouts): its firing pairs with the largest attention (at most "
    "explorer.examples_per_key_token per key token) from sad_pairs, with every relative term c_k recomputed.",
    (
        *HEAD_KEYS,
        Column("example", _I64, "place among the head's examples (0 = largest attention)"),
        Column("prompt_set", _STR, "ioi or plain"),
        Column("prompt", _I64, "prompt index in the prompt set"),
        Column("t", _I64, "query position"),
        Column("j", _I64, "key position"),
        Column("offset", _I64, "the SVD offset the pair reads (t − j under RoPE, else 0)"),
        Column("query_token", _STR, "token at t"),
        Column("key_token", _STR, "token at j"),
        Column("attention", _F32, "A(t, j)"),
        Column("ltilde", _F32, "relative attention ℓ̃(t, j) (from sad_pairs; Σ_k c_k equals it)"),
        Column("n_recon", _I64, "N_recon in the ordering sad.n_recon_order (−1: ℓ̃ ≤ 0)"),
        Column("sparseness", _F32, "Rolls–Tovée S of the relative terms"),
        Column("top_rank", _I64, "σ rank of the largest |c_k|"),
        Column("null_n_recon", _F64, "median over the rotation-null draws of N_recon"),
        Column("null_sparseness", _F64, "median over the rotation-null draws of S"),
        Column("contributions", _F32, "relative terms c_k(t, j) by σ rank at the pair's offset", ("rank",)),
    ),
)


# --------------------------------------------------------------------------------------------------
# Results table (stage results_table)
# --------------------------------------------------------------------------------------------------
RESULTS_CLAIMS = TableSchema(
    "results_claims",
    "The paper's claims beside our measurements (rule results_table); one row per claim and model.",
    (
        Column("key", pa.string(), "stable identifier of the claim (and model)"),
        Column("claim", pa.string(), "the paper's statement, in our words"),
        Column("paper", pa.string(), "the paper's number or qualitative result"),
        Column("ours", pa.string(), "our measured value(s)"),
        Column("setting", pa.string(), "model / config the number comes from"),
        Column(
            "verdict",
            pa.string(),
            "pass (the whole interval meets the criterion), differs (none of it does) or inconclusive (it straddles)",
        ),
        Column("criterion", pa.string(), "the acceptance level the verdict applies"),
        Column("statistic", pa.string(), "the number that sets the verdict (of several: the first with that verdict)"),
        Column("estimate", _F64, "its value on our data (inf: a curve that never crosses its level)"),
        Column("ci_low", _F64, "lower end of its bootstrap percentile interval"),
        Column("ci_high", _F64, "upper end of its bootstrap percentile interval"),
        Column("confidence", _F64, "coverage of the intervals (config report.confidence)"),
        Column("intervals", pa.string(), "every number the verdict uses: estimate [interval] (criterion: verdict)"),
        Column("resampled", pa.string(), "what the intervals resample (prompts, null draws, seeds) and how often"),
        Column("reading", pa.string(), "the reading of a definition the verdict uses (empty: none has another)"),
        Column("other_readings", pa.string(), "the tested numbers and verdicts under the other readings"),
    ),
    version=2,
)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

TABLES: dict[str, tuple[TableSchema, ...]] = {
    "toy": (TOY_WEIGHTS, TOY_METRICS, TOY_TRAJECTORY, TOY_ANISOTROPY, TOY_SWEEP),
    "extract_weights": (HEAD_WEIGHTS,),
    "svd": (HEAD_SVD, HEAD_SVD_BASES),
    "sad": (SAD_PAIRS, SAD_SUMMARY, SAD_PROMPTS),
    "dynamics": (DYNAMICS_TRAINING_LOG, DYNAMICS_PROMPTS, DYNAMICS_HEAD_SCORES, DYNAMICS_SAD),
    "explorer": (HEAD_SPECTRUM_BLOCKS, EXPLORER_TOKENS, EXPLORER_READOUTS, EXPLORER_EXAMPLES),
    "sae": SAE_TABLES,  # declared in svalign.sae.schemas
    "results_table": (RESULTS_CLAIMS,),
}


def schema(name: str) -> TableSchema:
    """The declared schema called ``name`` (e.g. ``toy_metrics``)."""
    for schemas in TABLES.values():
        for candidate in schemas:
            if candidate.name == name:
                return candidate
    raise KeyError(f"no table schema {name!r}")


def schemas_markdown() -> str:
    """Markdown documentation of every table, by stage."""
    parts = [
        "# Parquet tables\n\n",
        "Generated by `python -m svalign.tables > docs/schemas.md` from the declarations in `src/svalign/tables.py`; "
        "do not edit by hand. Tensor columns are Arrow fixed-shape tensors (`svalign.io.tensor` / "
        "`svalign.io.to_frame` return them with their shape); each file's provenance is in its metadata under "
        "the key `svalign` (`svalign.io.read_provenance`).\n",
    ]
    for stage, schemas in TABLES.items():
        parts.append(f"\n## Stage `{stage}`\n\n")
        parts.extend(schema.markdown() + "\n" for schema in schemas)
    return "".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(schemas_markdown())
