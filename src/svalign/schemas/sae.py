"""SAE stage tables: the offline corpus (SAE_CORPUS); per model tokens, dictionary and quality (rule sae_train) and
alignment, heads, attribution and sites (rule sae_align)."""

from __future__ import annotations

import pyarrow as pa

from svalign.io import HEAD_KEYS, Column, TableSchema

__all__ = [
    "SAE_ALIGNMENT",
    "SAE_ATTRIBUTION",
    "SAE_CORPUS",
    "SAE_DICTIONARY",
    "SAE_HEADS",
    "SAE_QUALITY",
    "SAE_SITES",
    "SAE_SWEEP",
    "SAE_TABLES",
    "SAE_TOKENS",
]

_STR, _I64, _F64, _F32, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.float32(), pa.bool_()


# --------------------------------------------------------------------------------------------------
# SAE stage: results/sae/corpus.parquet (SAE_CORPUS); per model results/sae/{model}/ tokens, dictionary, quality
# (rule sae_train) and alignment, heads, attribution, sites (rule sae_align)
# --------------------------------------------------------------------------------------------------

_SITE = (Column("model", _STR, "model name (key of config `models`)"), Column("layer", _I64, "layer index"))

SAE_CORPUS = TableSchema(
    "sae_corpus",
    "The offline corpus: docstrings of standard-library modules and their public members, then any text sampled "
    "from SmolLM2-135M (svalign.sae.corpus).",
    (
        Column("document", _I64, "document index"),
        Column("source", _STR, "qualified name of the documented object, or 'smollm2 sample <i>'"),
        Column("text", _STR, "the docstring (inspect.getdoc) or the sampled text"),
    ),
)
SAE_TOKENS = TableSchema(
    "sae_tokens",
    "Corpus windows as one model's tokenizer cuts them: the sequences whose head inputs the SAEs train on.",
    (
        Column("model", _STR, "model name"),
        Column("window", _I64, "window index, in the (seeded) order they were sampled"),
        Column("start", _I64, "offset of the window's first token in the tokenised corpus stream"),
        Column("tokens", _I64, "token ids (special tokens included for encoders)", ("context_len",)),
        Column("heldout", _BOOL, "held out of training (sae.heldout_fraction): the quality's held-out columns"),
    ),
    version=2,
)
SAE_DICTIONARY = TableSchema(
    "sae_dictionary",
    "Every latent of every site's TopK SAE (sparsify.SparseCoder): encoder row, decoder direction, frequency.",
    (
        *_SITE,
        Column("latent", _I64, "latent index"),
        Column("encoder", _F32, "encoder row w_a (pre-activation w_a·(x − b_dec) + b_a)", ("d_model",)),
        Column("encoder_bias", _F32, "encoder bias b_a"),
        Column("decoder", _F32, "decoder direction d_a (unit norm)", ("d_model",)),
        Column("frequency", _F64, "fraction of corpus tokens on which the latent is active (after training)"),
    ),
)
_NULL_NAMES = {
    "haar": "the Haar-frame null",
    "subspace": "random frames inside the head's own row/column spaces",
    "covariance": "frames of directions drawn from the inputs' second moment",
}


def _random_shares(dtype: pa.DataType) -> tuple[Column, Column]:
    """The random-dictionary control's latent and pair shares (per pair, or their medians per head and site)."""
    return (
        Column("random_latent_share", dtype, "latent_share through the random-dictionary control"),
        Column("random_pair_share", dtype, "pair_share through the random-dictionary control"),
    )


SAE_QUALITY = TableSchema(
    "sae_quality",
    "One row per site: the SAE's reconstruction quality on its corpus activations and its dictionary's interference.",
    (
        *_SITE,
        Column("hook", _STR, "the head-input hook (the SVD and SAD stages' own)"),
        Column("n_tokens", _I64, "corpus tokens (activations) the SAE trained and was evaluated on"),
        Column("n_latents", _I64, "dictionary size"),
        Column("k", _I64, "active latents per token (TopK)"),
        Column("explained_variance", _F64, "1 − FVU: 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² over the corpus tokens"),
        Column("l0", _F64, "mean number of latents with a nonzero activation per token"),
        Column("dead_fraction", _F64, "fraction of latents active on no corpus token"),
        Column("interference_norm", _F64, "‖DᵀD − I‖₂ of the unit decoder directions (all latents): paper's ‖E_X‖₂"),
        Column("final_loss", _F64, "training loss (FVU + α·AuxK) of the last step"),
        Column("n_heldout_tokens", _I64, "tokens of the held-out windows (never trained on)"),
        Column("heldout_explained_variance", _F64, "explained_variance on the held-out windows"),
        Column("heldout_l0", _F64, "l0 on the held-out windows"),
        Column("heldout_dead_fraction", _F64, "fraction of latents active on no held-out token"),
        Column("heldout_loss_clean", _F64, "mean next-token cross-entropy on the held-out windows (NaN: encoders)"),
        Column(
            "heldout_loss_sae",
            _F64,
            "the same with the residual entering the site's layer replaced by the SAE's reconstruction of its "
            "normalised form, mapped back through the token's own norm (a·x̂ + c)",
        ),
        Column(
            "heldout_loss_ablated", _F64, "the same with x̂ replaced by the head input's training mean (mean ablation)"
        ),
        Column(
            "heldout_loss_recovered", _F64, "(loss_ablated − loss_sae) / (loss_ablated − loss_clean) on those windows"
        ),
        Column("b_dec", _F32, "decoder bias b_dec", ("d_model",)),
        Column(
            "second_moment",
            _F32,
            "E[x xᵀ] of the corpus head inputs (uncentred): the covariance null and the fake dictionaries draw from it",
            ("d_model", "d_model"),
        ),
        Column(
            "position_basis",
            _F32,
            "the positional subspace: top principal directions of the per-position mean head input over the corpus "
            "windows (zero columns beyond the positions' rank)",
            ("d_model", "position_rank"),
        ),
    ),
    version=3,
)
SAE_ALIGNMENT = TableSchema(
    "sae_alignment",
    "Every singular vector of every head at the sites (offset 0 under RoPE) against the SAE's decoder directions: "
    "its best |cos|, the latent it picks, that latent's frequency. Rows by (variant, layer, head, side, rank).",
    (
        *HEAD_KEYS,
        Column("side", _STR, "u (left, query side) or v (right, key side)"),
        Column("rank", _I64, "σ rank k (0 = largest)"),
        Column("sigma", _F64, "σ_k"),
        Column("best_cos", _F64, "max over latents a of |cos(u_k, [d_a, 0])| (augmented inputs: 0 on the bias)"),
        Column("latent", _I64, "the latent a that attains it"),
        Column("frequency", _F64, "that latent's corpus frequency"),
        Column("null_mean", _F64, "mean best |cos| of a Haar-random unit vector at this rank (pooled null draws)"),
        Column("null_upper", _F64, "the null's quantile sae.null_quantile of best |cos| (pooled over ranks)"),
    ),
)
SAE_HEADS = TableSchema(
    "sae_heads",
    "One row per head and variant: alignment statistic (mean best |cos| over u_1..u_n, v_1..v_n, n = "
    "sae.top_singular) against the Haar-frame null, and the head's feature-pair attribution summary.",
    (
        *HEAD_KEYS,
        Column("statistic", _F64, "mean best |cos| of the top-n singular vectors (both sides)"),
        Column("null_statistic", _F64, "the same statistic's null quantile (sae.null_quantile, Haar frames)"),
        Column("null_median", _F64, "the null statistic's median"),
        Column("aligned", _BOOL, "statistic > null_statistic (aligned beyond the null)"),
        Column("sae_usable", _BOOL, "the site's SAE explains ≥ sae.min_explained_variance of the variance"),
        Column("n_pairs", _I64, "firing pairs attributed (trained variant; 0 for random)"),
        Column("match_rate", _F64, "share of pairs whose dominant latent pair is the dominant singular term's"),
        Column("null_match_rate", _F64, "the same with the rotation null's singular terms (draws pooled)"),
        Column("chance_rate", _F64, "mean 1/(n_active(t)·n_active(j)): a uniformly random latent pair"),
        Column("random_match_rate", _F64, "match_rate through the random-dictionary control (sae_attribution)"),
        Column("latent_share", _F64, "median share of the logit carried by latent×latent terms (rest: b_dec, error)"),
        Column("pair_share", _F64, "median share of a logit's total |M_ab| carried by its dominant latent pair"),
        *_random_shares(_F64),
        Column(
            "positional_share",
            _F64,
            "mean energy share of u_1..u_n, v_1..v_n in the site's positional subspace (quality.position_basis)",
        ),
        Column("positional", _BOOL, "positional_share > 0.5 (definitions.POSITIONAL_SHARE): a positional head"),
        Column(
            "statistic_without_position",
            _F64,
            "the statistic with the positional subspace projected out of the singular vectors and the decoder",
        ),
        Column(
            "aligned_without_position",
            _BOOL,
            "statistic_without_position above its own Haar null's quantile (the frames projected alike)",
        ),
        Column(
            "fake_p_aligned",
            _F64,
            "(1 + fake dictionaries giving the head a statistic at least as high) / (1 + fake dictionaries): how "
            "often a dictionary without features matches the head as well (NaN: no control)",
        ),
        *(
            column
            for null, name in _NULL_NAMES.items()
            for column in (
                Column(f"{null}_p_aligned", _F64, f"Monte Carlo p of a statistic this high under {name}"),
                Column(f"{null}_p_below", _F64, f"the other tail: p of a statistic this low under {name}"),
                Column(
                    f"{null}_aligned_bh",
                    _BOOL,
                    f"{null}_p_aligned rejected by Benjamini–Hochberg at 5 % over the variant's site heads",
                ),
                Column(f"{null}_below_bh", _BOOL, f"{null}_p_below rejected by Benjamini–Hochberg at 5 %"),
            )
        ),
    ),
    version=3,
)
SAE_ATTRIBUTION = TableSchema(
    "sae_attribution",
    "Every firing pair (SAD's definition, prompt set sae.prompt_set) of every head at the sites, trained variant: "
    "ℓ(t, j) = Σ_{a,b} f_a(t) f_b(j) d̃_aᵀ Ω_δ d̃_b over active latents plus b_dec and SAE-error components (exact).",
    (
        *HEAD_KEYS,
        Column("prompt", _I64, "prompt index in the prompt set"),
        Column("t", _I64, "query position"),
        Column("j", _I64, "key position"),
        Column("logit", _F32, "the model's own unscaled score ℓ(t, j)"),
        Column("relative_error", _F32, "|Σ_ab M_ab − ℓ| / max |ℓ| of the head in the chunk"),
        Column("query_latent", _I64, "a* of the dominant latent pair (largest |M_ab| over latent×latent)"),
        Column("key_latent", _I64, "b* of the dominant latent pair"),
        Column("pair_share", _F32, "|M_a*b*| / Σ_ab |M_ab| (all components)"),
        Column("latent_share", _F32, "Σ_{latent a, b} M_ab / ℓ"),
        Column("top_rank", _I64, "k* = argmax_k |a_k(t, j)|, the dominant singular term"),
        Column("u_latent", _I64, "active latent at t with the largest |cos| with u_k*"),
        Column("v_latent", _I64, "active latent at j with the largest |cos| with v_k*"),
        Column("match", _BOOL, "(a*, b*) = (u_latent, v_latent)"),
        Column("null_match", _F64, "share of rotation-null draws whose dominant term's latents match (a*, b*)"),
        Column("chance", _F64, "1 / (n_active(t) · n_active(j))"),
        Column(
            "random_match",
            _BOOL,
            "match through the random-dictionary control (as many directions drawn from the inputs' second moment, "
            "k atoms per token by non-negative matching pursuit around the SAE's b_dec)",
        ),
        *_random_shares(_F32),
    ),
    version=2,
)
SAE_SITES = TableSchema(
    "sae_sites",
    "One row per site and variant: how many heads align beyond the null, medians real vs null, the attribution "
    "match rates and the dictionary's interference on the prompt set.",
    (
        *_SITE,
        Column("variant", _STR, "trained, or random (its singular vectors against the trained model's SAE)"),
        Column("n_heads", _I64, "heads at the site"),
        Column("aligned_fraction", _F64, "share of heads aligned beyond the null (sae_heads.aligned)"),
        Column("median_best_cos", _F64, "median over heads and the top-n singular vectors of best |cos|"),
        Column("null_median_best_cos", _F64, "the Haar-frame null's median best |cos| at the same ranks"),
        Column("match_rate", _F64, "pooled share of firing pairs whose dominant latent pair matches (trained only)"),
        Column("null_match_rate", _F64, "the same under the rotation null"),
        Column("chance_rate", _F64, "mean chance level of a match"),
        Column("random_match_rate", _F64, "the same through the random-dictionary control"),
        Column("latent_share", _F64, "median over firing pairs of the logit share carried by latent×latent terms"),
        Column("pair_share", _F64, "median over firing pairs of the dominant latent pair's share of Σ|M_ab|"),
        *_random_shares(_F64),
        Column("n_active_latents", _I64, "latents active on at least one token of the prompt set"),
        Column("interference_norm_active", _F64, "‖DᵀD − I‖₂ over those latents' unit decoder directions"),
        Column("explained_variance", _F64, "the site's SAE quality on its training windows (from sae_quality)"),
        Column("heldout_explained_variance", _F64, "the same on the held-out windows (from sae_quality)"),
        Column("prompt_explained_variance", _F64, "the same on the head inputs of the prompt set sae.prompt_set"),
        Column("prompt_l0", _F64, "mean active latents per token on that prompt set"),
        Column(
            "heldout_loss_recovered",
            _F64,
            "next-token loss recovered with the SAE spliced in, on the held-out windows (from sae_quality; NaN: "
            "encoders)",
        ),
        Column(
            "sae_usable",
            _BOOL,
            "explained variance ≥ sae.min_explained_variance on the training windows, the held-out windows and the "
            "prompt set alike, and (causal models) held-out loss recovered ≥ sae.min_loss_recovered",
        ),
        Column("n_fake_dictionaries", _I64, "fake dictionaries of the control (sae.fake_dictionaries; 0: not run)"),
        Column(
            "fake_aligned_mean",
            _F64,
            "mean over the fake dictionaries (the decoder's size, directions drawn from the inputs' second moment) of "
            "the share of heads aligned beyond their own Haar null: the baseline the real dictionary must beat",
        ),
        Column("fake_aligned_max", _F64, "the largest of those shares"),
    ),
    version=3,
)

_VERDICT = "pass, differs or inconclusive (the results table's rule, on this point's tables)"
SAE_SWEEP = TableSchema(
    "sae_sweep",
    "One row per SAE sweep point (expansion_factor × k × seed, config sae.sweep) and site, trained variant: the "
    "point's SAE quality, alignment counts, controls, attribution and verdicts, and their agreement across seeds.",
    (
        *_SITE,
        Column("expansion_factor", _I64, "latents per input dimension"),
        Column("k", _I64, "active latents per token (TopK)"),
        Column("seed", _I64, "the SAE's seed (init and token order)"),
        Column("n_heads", _I64, "heads at the site"),
        Column("heldout_explained_variance", _F64, "explained variance on the held-out windows"),
        Column("prompt_explained_variance", _F64, "explained variance on the prompt set"),
        Column("heldout_loss_recovered", _F64, "next-token loss recovered with the SAE spliced in (NaN: encoders)"),
        Column("sae_usable", _BOOL, "sae_sites.sae_usable"),
        Column("aligned_fraction", _F64, "share of heads aligned beyond the Haar null's quantile"),
        *(
            Column(f"{null}_aligned_bh", _I64, f"heads significantly aligned under {name} (Benjamini–Hochberg)")
            for null, name in _NULL_NAMES.items()
        ),
        Column("fake_aligned_mean", _F64, "the fake dictionaries' mean aligned share (the baseline)"),
        Column("match_rate", _F64, "attribution match rate (pooled over the site's firing pairs)"),
        Column("random_match_rate", _F64, "the same through the random-dictionary control"),
        Column("latent_share", _F64, "median share of the logit carried by latent×latent terms"),
        Column("alignment_verdict", _STR, f"the model's SAE alignment claim: {_VERDICT}"),
        Column("attribution_verdict", _STR, f"the model's SAE attribution claim: {_VERDICT}"),
        Column("n_seeds", _I64, "seeds at this (expansion_factor, k)"),
        Column(
            "head_agreement",
            _F64,
            "share of the site's heads whose aligned flag is the same under every seed of this (expansion_factor, k)",
        ),
        Column("verdicts_stable", _BOOL, "every seed of this (expansion_factor, k) gives the same two verdicts"),
    ),
)

SAE_TABLES = (
    SAE_CORPUS,
    SAE_TOKENS,
    SAE_DICTIONARY,
    SAE_QUALITY,
    SAE_ALIGNMENT,
    SAE_HEADS,
    SAE_ATTRIBUTION,
    SAE_SITES,
    SAE_SWEEP,
)
