"""Head explorer tables: degeneracy blocks of every spectrum, prompt tokens, token read-outs and SAD examples."""

from __future__ import annotations

import pyarrow as pa

from svalign.io import HEAD_KEYS, Column, TableSchema

__all__ = [
    "EXPLORER_EXAMPLES",
    "EXPLORER_READOUTS",
    "EXPLORER_TOKENS",
    "HEAD_DEGENERACY_BLOCKS",
]

_STR, _I64, _F64, _F32, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.float32(), pa.bool_()


# --------------------------------------------------------------------------------------------------
# Head explorer (stage explorer)
# --------------------------------------------------------------------------------------------------
HEAD_DEGENERACY_BLOCKS = TableSchema(
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
        Column("subspace_null_sparseness", _F64, "median over the within-subspace null's draws of S (NaN: not run)"),
        Column("covariance_null_sparseness", _F64, "median over the covariance null's draws of S (NaN: not run)"),
        Column("contributions", _F32, "relative terms c_k(t, j) by σ rank at the pair's offset", ("rank",)),
    ),
    version=2,
)
