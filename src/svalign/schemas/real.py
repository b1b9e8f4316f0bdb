"""Real-model tables: per-head weights (rule extract_weights), their SVD (rule svd) and the SAD tables (rule sad)."""

from __future__ import annotations

import pyarrow as pa

from svalign.io import HEAD_KEYS, Column, TableSchema

__all__ = [
    "HEAD_SVD",
    "HEAD_SVD_BASES",
    "HEAD_WEIGHTS",
    "SAD_PAIRS",
    "SAD_PROMPTS",
    "SAD_SUMMARY",
]

_STR, _I64, _F64, _F32, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.float32(), pa.bool_()


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
        Column(
            "rotary_frequencies",
            _F64,
            "the layer's RoPE inverse frequencies [rotary_dim / 2] as the model computes them for a rescaled RoPE "
            "(llama3, linear, yarn, dynamic, longrope); empty: θ_i = rotary_base^(−2i/rotary_dim)",
            ("rotary_dim / 2",),
            ragged=True,
        ),
        Column("rotary_attention_factor", _F64, "the layer's factor on cos and sin (YaRN, LongRoPE; else 1)"),
        Column(
            "rotary_max_length",
            _I64,
            "longest sequence the frequencies hold for (length-dependent RoPE: its original context); 0: any",
        ),
        Column("attn_scale", _F64, "divisor of q·k before the softmax"),
        Column("causal", _BOOL, "causal (decoder) attention"),
        Column("architecture", _STR, "Hugging Face model_type"),
        Column("processing", _STR, "how W_Q/W_K relate to the checkpoint (norm folding)"),
        Column("head_input_hook", _STR, "hook whose output W_Q/W_K act on ({layer} filled in)"),
        Column("sliding_window", _I64, "the row's layer attends to keys t − w < j ≤ t (0: the whole causal prefix)"),
        Column("attn_softcap", _F64, "attention-logit soft-cap c, ℓ → c·tanh(ℓ/c) (0: none); SAD decomposes pre-cap ℓ"),
        Column("qk_norm", _STR, "RMSNorm of q and k: per_head, all_heads or empty; SAD carries per-token 1/ρ"),
    ),
    version=3,
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
        Column(
            "subspace_null_sparseness",
            _F32,
            "S under each draw of the within-subspace null (random frames of the head's row/column spaces; NaN: "
            "not in sad.nulls)",
            ("n_null",),
        ),
        Column(
            "covariance_null_sparseness",
            _F32,
            "S under each draw of the covariance null (directions drawn from the head inputs' second moment; NaN: "
            "not in sad.nulls)",
            ("n_null",),
        ),
    ),
    version=3,
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
_NULL_NAMES = {
    "null_": "the rotation null (Haar, whole input space)",
    "subspace_null_": "the within-subspace null",
    "covariance_null_": "the covariance null",
}
_NULL_TEST_COLUMNS = tuple(
    column
    for prefix, name in _NULL_NAMES.items()
    for column in (
        *(
            ()
            if prefix == "null_"  # the rotation null's medians and shares are the columns above
            else (
                Column(f"{prefix}median_sparseness", _F64, f"median_sparseness under {name} (draws pooled)"),
                Column(f"{prefix}share_by_rank", _F64, f"share_by_rank under {name}", ("rank",)),
            )
        ),
        Column(
            f"{prefix}draw_median_sparseness",
            _F64,
            f"median S under each draw of {name} (real firing pairs)",
            ("n_null",),
        ),
        Column(
            f"{prefix}own_draw_median_sparseness",
            _F64,
            f"median S under each draw of {name} at the draw's own firing pairs (its own attention ≥ the threshold; "
            "NaN: none fires)",
            ("n_null",),
        ),
        Column(
            f"{prefix}prompt_share_sparser",
            _F64,
            f"share of the head's prompts whose median S is below {name}'s median S on the same pairs",
        ),
        Column(
            f"{prefix}p_sparser",
            _F64,
            f"one-sided t prediction test of median_sparseness against {prefix}own_draw_median_sparseness (the "
            "head's basis as one more draw): p of a median S this low (NaN: not run)",
        ),
        Column(f"{prefix}p_denser", _F64, f"the other tail: p of a median S this high under {name}"),
        Column(f"{prefix}sparser_bh", _BOOL, "p_sparser rejected by Benjamini–Hochberg at 5 % over the run's heads"),
        Column(f"{prefix}denser_bh", _BOOL, "p_denser rejected by Benjamini–Hochberg at 5 % over the run's heads"),
    )
)
"""Per null (prefix): the summary's medians (but the Haar null's, which keep their names) and the per-head test."""
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
        *_NULL_TEST_COLUMNS,
        Column(
            "softcap_max_distortion",
            _F64,
            "soft-capped models: largest |ℓ̃_post − ℓ̃_pre| over the head's firing pairs, ÷ its largest |ℓ̃_pre| (ℓ̃ "
            "of the capped logit the softmax sees vs the decomposed pre-cap ℓ̃; 0 without a cap)",
        ),
        Column("softcap_median_distortion", _F64, "the median of the same ratio over the head's firing pairs"),
    ),
    version=3,
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
