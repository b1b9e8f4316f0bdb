"""The SAD stage over a prompt set: the decomposition of every layer of every forward pass, real and under each
null, and the columns of the ``sad_pairs``, ``sad_summary`` and ``sad_prompts`` tables (:mod:`svalign.tables`;
scripts write them).

:func:`run_sad` is a sequence of named steps: the covariance null's second moments (:func:`svalign.sad.forward.
input_moments`, over the forward passes' kept layer inputs, only when that null runs) → :func:`null_bases` per null
(seeded draws, before any pair is scored) → per forward pass of :func:`svalign.sad.forward.forward_passes`
:func:`process_chunk` (the IOI logit differences, then :func:`layer_pairs` per layer) → :func:`assemble_pairs`
(sorted columns, mean shares) and the diagnostics.

The nulls (:mod:`svalign.nulls`) score the real model's firing pairs with their own terms. The Haar null keeps
every column it had (both N_recon orderings per pair); the others store S per pair and draw (what the claims
resample) and no N_recon (a null reconstructs its own ℓ̃: N_recon is not comparable across it). Each draw is also
scored at its own firing pairs, for the per-head test.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from svalign.definitions import FDR_LEVEL, N_RECON_LIMIT, NULL_PREFIXES, NULLS, lower_half
from svalign.heads import HeadWeights
from svalign.nulls import moment_root, null_generator, null_svd, skip_null_draw
from svalign.sad.config import N_RECON_ORDERS, SADConfig
from svalign.sad.decompose import (
    PairStatistics,
    check_scores,
    layer_svd,
    null_statistics,
    own_firing_sparseness,
    pair_statistics,
    softcap_distortion,
)
from svalign.sad.forward import ForwardChunk, LayerInputs, PromptBatch, check_offsets, forward_passes, input_moments
from svalign.stats import benjamini_hochberg, prediction_test
from svalign.svd import HeadSVD, ModelSVD
from svalign.tables import SAD_PAIRS, SAD_SUMMARY

__all__ = [
    "PAIR_COLUMNS",
    "SCORE_TOLERANCE",
    "Accumulator",
    "LayerPairs",
    "NullPairs",
    "assemble_pairs",
    "layer_pairs",
    "null_bases",
    "pairs_table",
    "process_chunk",
    "prompts_table",
    "run_sad",
    "summarize",
]

SCORE_TOLERANCE = 1e-4
"""Largest relative error allowed between Σ_k a_k(t, j) and the model's own scores (per head)."""

PAIR_COLUMNS = (
    "layer",
    "head",
    "prompt",
    "t",
    "j",
    "attention",
    "ltilde",
    "n_recon",
    "n_recon_signed",
    "n_recon_magnitude",
    "sparseness",
    "top_rank",
    "null_n_recon",
    "null_n_recon_signed",
    "null_n_recon_magnitude",
    "null_sparseness",
    *(f"{NULL_PREFIXES[null]}sparseness" for null in NULLS[1:]),
    "softcap_distortion",
)
"""Per-pair columns that :func:`run_sad` returns (those of :data:`SAD_PAIRS` without the run keys, and the other
soft-cap distortion, which only the summary keeps)."""
_CONFIGURED = ("n_recon", "null_n_recon")  # the arrays of ordering sad.n_recon_order (assemble_pairs)


# --------------------------------------------------------------------------------------------------
# The stage: null bases, prompt chunks, per-layer statistics, assembled columns
# --------------------------------------------------------------------------------------------------


def null_bases(
    model_svd: ModelSVD,
    n_layers: int,
    config: SADConfig,
    null: str = "haar",
    moments: torch.Tensor | None = None,
    layers: Collection[int] | None = None,
) -> list[list[HeadSVD]]:
    """One null's SVDs ``[layer][draw]`` (:func:`svalign.nulls.null_svd`), drawn from its own stream of
    ``config.null_seed`` (:func:`svalign.nulls.null_generator`) layer by layer, draw by draw, before any pair is
    scored. The bases are built once here, not per prompt chunk (they cost as much memory as the rotations).

    Args:
        moments: ``[layer, d_in, d_in]`` the head inputs' second moments (:func:`svalign.sad.forward.input_moments`),
            for the covariance null.
        layers: build only these layers' draws (the others' lists are empty); the stream is advanced past the
            others (:func:`svalign.nulls.skip_null_draw`), so the draws equal those of a run over every layer.
    """
    generator = null_generator(config.null_seed, null)
    bases = []
    for layer in range(n_layers):
        svd = layer_svd(model_svd, layer)
        if layers is not None and layer not in layers:
            for _ in range(config.null_draws):
                skip_null_draw(svd, null, generator)
            bases.append([])
            continue
        root = moment_root(moments[layer]) if null == "covariance" and moments is not None else None
        bases.append([null_svd(svd, null, generator, root) for _ in range(config.null_draws)])
    return bases


@dataclass
class NullPairs:
    """One null's statistics of one layer's firing pairs of a prompt chunk.

    Attributes:
        n_recon: {ordering: ``[pairs, draws]``} (the Haar null only, both orderings; the others' N_recon is not
            computed: a null reconstructs its own ℓ̃, so N_recon is not comparable across it, docs/method.md).
        sparseness: ``[pairs, draws]`` Rolls–Tovée S.
        shares: per draw, ``[head, r]`` sums of |c_k| / Σ|c| over the pairs.
        own: per draw, (head ``[own pairs]``, S ``[own pairs]``) at the draw's own firing pairs
            (:func:`svalign.sad.decompose.own_firing_sparseness`), what the per-head test compares with.
    """

    n_recon: dict[str, torch.Tensor]
    sparseness: torch.Tensor
    shares: list[torch.Tensor]
    own: list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LayerPairs:
    """One layer's firing pairs of one prompt chunk, real and under each null.

    Attributes:
        real: statistics of the real model's terms.
        nulls: {null: :class:`NullPairs`} of the configured nulls.
        score_error: worst relative error of Σ_k a_k against the model's scores (see :func:`check_scores`).
        softcap_distortion: ``[pairs]`` |ℓ̃_post − ℓ̃_pre| of a soft-capped model, else zeros.
    """

    real: PairStatistics
    nulls: dict[str, NullPairs]
    score_error: float
    softcap_distortion: torch.Tensor


def layer_pairs(
    inputs: LayerInputs,
    svd: HeadSVD,
    nulls: dict[str, list[HeadSVD]],
    *,
    weights: HeadWeights,
    offsets_used: bool,
    config: SADConfig,
    layer: int,
) -> LayerPairs:
    """Decompose one layer's scores, check them against the model's, and score its firing pairs, real and null.

    Args:
        inputs: the layer's head inputs, the model's unscaled scores and attention
            (:meth:`svalign.sad.forward.ForwardChunk.inputs`).
        svd: the layer's SVD; nulls: {null: its SVDs, one per draw} (:func:`null_bases`).
        weights: the model's head weights (causal mask, soft-cap, score divisor).
    """
    causal = weights.causal
    firing = (config.threshold, config.skip_first_key, inputs.window)  # which pairs fire: the same for every draw
    terms = inputs.terms(svd, causal, offsets_used)  # [b, h, t, j, r]
    score_error = check_scores(terms, inputs.scores, causal, SCORE_TOLERANCE, layer, inputs.window)
    real = pair_statistics(terms, inputs.pattern, causal, *firing)
    del terms  # one [b, h, t, j, r] tensor at a time
    index = (real.prompt, real.head, real.t, real.j)  # the firing pairs, as pair_statistics found them
    scored = {}
    for null, draws in nulls.items():
        orders = N_RECON_ORDERS if null == "haar" else ()  # the Haar null keeps its N_recon columns
        results, own = [], []
        for draw in draws:
            null_terms = inputs.terms(draw, causal, offsets_used)
            results.append(null_statistics(null_terms, index, causal, orders, inputs.window))
            own.append(own_firing_sparseness(null_terms, causal, weights.attn_scale, weights.softcap, *firing))
            del null_terms
        scored[null] = NullPairs(
            {order: torch.stack([r[0][order] for r in results], -1) for order in orders},
            torch.stack([r[1] for r in results], -1),
            [r[2] for r in results],
            own,
        )
    if weights.softcap:
        distortion = softcap_distortion(
            inputs.scores, index, causal, weights.softcap, weights.attn_scale, inputs.window
        )
    else:
        distortion = torch.zeros(len(index[0]))
    return LayerPairs(real, scored, score_error, distortion)


@dataclass
class Accumulator:
    """What :func:`run_sad` gathers over prompt chunks and layers, in processing order.

    Attributes:
        columns: per :data:`PAIR_COLUMNS` (but ``n_recon`` and ``null_n_recon``), one array per (chunk, layer).
        share: ``[layer, head, r]`` sums over firing pairs of |c_k| / Σ|c|; null_share: {null: the same, mean
            over its draws}.
        own: {null: (layer, draw, head ``[own pairs]``, S ``[own pairs]``) per (chunk, layer, draw)}, the draws'
            own firing pairs (compact: int16 heads, float32 S).
        worst: worst relative score error so far.
        logit_diff: {prompt: logit(IO) − logit(S)} (IOI on causal models).
    """

    columns: dict[str, list[np.ndarray]]
    share: torch.Tensor
    null_share: dict[str, torch.Tensor]
    n_recon_order: str = "signed"
    own: dict[str, list[tuple]] = field(default_factory=lambda: {null: [] for null in NULLS})
    worst: float = 0.0
    logit_diff: dict[int, float] = field(default_factory=dict)

    def add(self, layer: int, prompts: torch.Tensor, pairs: LayerPairs, null_draws: int) -> None:
        """Append one layer's pairs of one chunk (``prompts``: the chunk's prompt indices ``[n]``)."""
        self.worst = max(self.worst, pairs.score_error)
        real = pairs.real
        self.share[layer] += real.share_by_rank
        n = len(real.head)
        self.columns["layer"].append(np.full(n, layer))
        self.columns["prompt"].append(prompts[real.prompt].numpy())
        for name in ("head", "t", "j", "attention", "ltilde", "sparseness", "top_rank"):
            self.columns[name].append(getattr(real, name).numpy())
        self.columns["n_recon_signed"].append(real.n_recon.numpy())
        self.columns["n_recon_magnitude"].append(real.n_recon_magnitude.numpy())
        self.columns["softcap_distortion"].append(pairs.softcap_distortion.numpy())
        for null in NULLS:
            prefix = NULL_PREFIXES[null]
            scored = pairs.nulls.get(null)
            for share in scored.shares if scored else []:  # draw by draw, as the accumulated float sums require
                self.null_share[null][layer] += share / null_draws
            # [pairs, draws]; reshaped with the draw count so a layer without firing pairs gives (0, draws)
            if scored is None:  # a null this run skips: NaN draws (they compress to nothing)
                self.columns[prefix + "sparseness"].append(np.full((n, null_draws), np.nan, np.float32))
                continue
            self.columns[prefix + "sparseness"].append(scored.sparseness.numpy().reshape(n, null_draws))
            for draw, (head, sparseness) in enumerate(scored.own):
                self.own[null].append((layer, draw, head.numpy().astype(np.int16), sparseness.numpy()))
            for order, counts in scored.n_recon.items():  # the Haar null's
                self.columns[f"null_n_recon_{order}"].append(counts.numpy().reshape(n, null_draws))


def process_chunk(
    chunk: ForwardChunk,
    model_svd: ModelSVD,
    nulls: dict[str, list[list[HeadSVD]]],
    config: SADConfig,
    collected: Accumulator,
) -> None:
    """One forward pass (:func:`svalign.sad.forward.forward_passes`): every layer's pairs into ``collected``.

    Args:
        nulls: {null: ``[layer][draw]`` SVDs} (:func:`null_bases`).
    """
    collected.logit_diff.update(chunk.ioi_logit_diff())
    weights = chunk.weights
    for layer in range(weights.n_layers):
        pairs = layer_pairs(
            chunk.inputs(layer),
            layer_svd(model_svd, layer),
            {null: bases[layer] for null, bases in nulls.items()},
            weights=weights,
            offsets_used=model_svd.uses_offsets,
            config=config,
            layer=layer,
        )
        collected.add(layer, chunk.batch.prompt, pairs, config.null_draws)


def assemble_pairs(collected: Accumulator, n_layers: int, n_heads: int, nulls: tuple[str, ...]) -> dict[str, Any]:
    """The pair columns sorted by (layer, head, prompt, t, j), the mean shares by rank and the logit differences.

    Returns:
        :data:`PAIR_COLUMNS` arrays ``[pairs]`` (null ones ``[pairs, draws]``; ``n_recon`` and ``null_n_recon``
        are those of the accumulator's ordering), ``share_by_rank`` ``[layer, head, r]`` and per null
        ``{prefix}share_by_rank`` (means over each head's firing pairs) and ``{prefix}own`` (``layer``, ``head``,
        ``draw``, ``sparseness`` ``[own pairs]`` at the draws' own firing pairs; None when the null did not run),
        ``nulls`` (those run) and ``logit_diff``.
    """
    n_recon_order = collected.n_recon_order
    pairs = {k: np.concatenate(v) for k, v in collected.columns.items() if k not in _CONFIGURED}
    order = np.lexsort((pairs["j"], pairs["t"], pairs["prompt"], pairs["head"], pairs["layer"]))
    pairs = {k: v[order] for k, v in pairs.items()}
    for name in _CONFIGURED:
        pairs[name] = pairs[f"{name}_{n_recon_order}"]
    pairs["n_recon_order"] = n_recon_order
    counts = torch.zeros(n_layers, n_heads)
    counts.index_put_(
        (torch.from_numpy(pairs["layer"]), torch.from_numpy(pairs["head"])),
        torch.ones(len(pairs["layer"])),
        accumulate=True,
    )
    per_pair = counts.clamp_min(1).unsqueeze(-1)
    pairs["share_by_rank"] = (collected.share / per_pair).numpy()
    for null in NULLS:
        share = collected.null_share[null] / per_pair if null in nulls else torch.full_like(collected.share, math.nan)
        pairs[NULL_PREFIXES[null] + "share_by_rank"] = share.numpy()
    for null in NULLS:
        parts = collected.own[null]
        pairs[NULL_PREFIXES[null] + "own"] = (
            {
                "layer": np.concatenate([np.full(len(head), layer, np.int16) for layer, _, head, _ in parts]),
                "draw": np.concatenate([np.full(len(head), draw, np.int16) for _, draw, head, _ in parts]),
                "head": np.concatenate([head for _, _, head, _ in parts]),
                "sparseness": np.concatenate([values for *_, values in parts]),
            }
            if parts
            else None
        )
    pairs["nulls"] = list(nulls)
    pairs["logit_diff"] = collected.logit_diff
    return pairs


def run_sad(
    model: Any, weights: HeadWeights, model_svd: ModelSVD, batches: list[PromptBatch], config: SADConfig
) -> tuple[dict[str, Any], dict[str, float]]:
    """SAD statistics of every firing pair of every head, real and under each null of ``config.nulls``.

    Fails before any computation when a RoPE model's SVD lacks offsets for the longest prompt.

    Returns:
        (pair columns of :func:`assemble_pairs`; diagnostics: worst score error ``max_score_error`` and, for IOI on
        causal models, the mean logit difference ``ioi_logit_diff_mean`` and accuracy ``ioi_accuracy``).
    """
    check_offsets(model_svd, batches)
    moments = None
    chunks: Iterable[ForwardChunk] = forward_passes(model, weights, batches, config.chunk_prompts, model_svd.augmented)
    if "covariance" in config.nulls:
        # The covariance null's draws need the second moment of every token before any pair is scored: the forward
        # passes run once and their layer inputs are kept for the scoring (a few hundred MB for SmolLM2's 128 IOI
        # prompts) rather than computed again.
        chunks = [chunk.kept() for chunk in chunks]
        moments = input_moments(chunks, weights.n_layers)
    nulls = {null: null_bases(model_svd, weights.n_layers, config, null, moments) for null in config.nulls}
    rank = model_svd.svd.S.shape[-1]
    zeros = torch.zeros(weights.n_layers, weights.n_heads, rank)
    collected = Accumulator(
        columns={name: [] for name in PAIR_COLUMNS},
        share=zeros.clone(),
        null_share={null: zeros.clone() for null in NULLS},
        n_recon_order=config.n_recon_order,
    )
    for chunk in chunks:
        process_chunk(chunk, model_svd, nulls, config, collected)
    diagnostics: dict[str, Any] = {"max_score_error": collected.worst}
    if collected.logit_diff:
        values = np.array(list(collected.logit_diff.values()))
        diagnostics.update(ioi_logit_diff_mean=float(values.mean()), ioi_accuracy=float((values > 0).mean()))
    return assemble_pairs(collected, weights.n_layers, weights.n_heads, config.nulls), diagnostics


# --------------------------------------------------------------------------------------------------
# Table columns
# --------------------------------------------------------------------------------------------------


def _median_or_nan(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else math.nan


def _fraction_or_nan(condition: np.ndarray) -> float:
    return float(condition.mean()) if len(condition) else math.nan


def _n_recon_columns(n_recon: np.ndarray, null_n_recon: np.ndarray, suffix: str) -> dict[str, float]:
    """One head's median N_recon and share ≤ 4 over its pairs with ℓ̃ > 0, real and null (draws pooled)."""
    defined, null_defined = n_recon[n_recon > 0], null_n_recon[null_n_recon > 0]
    return {
        f"median_n_recon{suffix}": _median_or_nan(defined),
        f"frac_n_recon_le4{suffix}": _fraction_or_nan(defined <= N_RECON_LIMIT),
        f"null_median_n_recon{suffix}": _median_or_nan(null_defined),
        f"null_frac_n_recon_le4{suffix}": _fraction_or_nan(null_defined <= N_RECON_LIMIT),
    }


def _prompt_share_sparser(real: np.ndarray, null: np.ndarray, prompts: np.ndarray) -> float:
    """Share of one head's prompts whose median S is below the null's on the same pairs (a description: the test
    is over draws, :func:`_null_columns`).

    Args:
        real: ``[pairs]`` S; null: ``[pairs, draws]`` the null's S (a prompt's null median pools its pairs and
            draws); prompts: ``[pairs]`` each pair's prompt.
    """
    if not len(real) or np.isnan(null).all():
        return math.nan
    real_median = pd.Series(real).groupby(prompts).median()
    null_median = pd.Series(null.ravel()).groupby(np.repeat(prompts, null.shape[1])).median()
    return float((real_median < null_median).mean())


def _own_draw_medians(own: dict[str, np.ndarray] | None, n_layers: int, n_heads: int, n_draws: int) -> np.ndarray:
    """``[layer, head, draw]`` median S over each draw's own firing pairs (NaN: none) from ``{prefix}own``."""
    medians = np.full((n_layers, n_heads, n_draws), np.nan)
    if own is not None and len(own["head"]):
        grouped = pd.DataFrame(own).groupby(["layer", "head", "draw"])["sparseness"].median()
        index = grouped.index.to_frame().to_numpy().astype(np.int64).T
        medians[index[0], index[1], index[2]] = grouped.to_numpy()
    return medians


def _null_columns(pairs: dict[str, Any], sel: np.ndarray, null: str, own_medians: np.ndarray) -> dict[str, Any]:
    """One head's columns of one null (prefix :data:`NULL_PREFIXES`): medians, the median S of each draw at the
    real firing pairs and at the draw's own, and the test of the head's median S against the latter
    (:func:`svalign.stats.prediction_test`: the head's basis is one basis, compared with the null's bases, each
    scored at its own firing pairs; the Benjamini–Hochberg columns are set over all heads afterwards).

    Args:
        own_medians: ``[draws]`` the head's :func:`_own_draw_medians`.
    """
    prefix = NULL_PREFIXES[null]
    real, draws = pairs["sparseness"][sel], pairs[prefix + "sparseness"][sel]
    ran = null in pairs["nulls"] and len(real) > 0
    testable = ran and int(np.isfinite(own_medians).sum()) > 1
    finite = own_medians[np.isfinite(own_medians)]
    lower, upper = prediction_test(np.median(real), finite) if testable else (np.nan, np.nan)
    columns = {
        "draw_median_sparseness": np.median(draws, axis=0) if len(draws) else np.full(draws.shape[1], np.nan),
        "own_draw_median_sparseness": own_medians,
        "prompt_share_sparser": _prompt_share_sparser(real, draws, pairs["prompt"][sel]) if ran else math.nan,
        "p_sparser": float(lower),
        "p_denser": float(upper),
    }
    if null != "haar":  # the Haar null's medians are the summary's original null_ columns
        columns["median_sparseness"] = _median_or_nan(draws.ravel()) if ran else math.nan
    return {prefix + name: value for name, value in columns.items()}


def summarize(pairs: dict[str, Any], rank: int, keys: dict[str, Any]) -> dict[str, list]:
    """Per-(layer, head) rows of :data:`SAD_SUMMARY` from :func:`run_sad`'s pair columns and the key columns.

    The plain N_recon columns follow ``pairs["n_recon_order"]``; the ``_signed`` and ``_magnitude`` ones name
    their ordering. Each null's per-head test (the head's median S against the null draws') is corrected for the
    run's heads by Benjamini–Hochberg at :data:`svalign.definitions.FDR_LEVEL`, each tail on its own.
    """
    out: dict[str, list] = {c.name: [] for c in SAD_SUMMARY.columns}
    n_layers, n_heads = pairs["share_by_rank"].shape[:2]
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    order = pairs["n_recon_order"]
    n_draws = pairs["null_sparseness"].shape[1]
    own = {null: _own_draw_medians(pairs[NULL_PREFIXES[null] + "own"], n_layers, n_heads, n_draws) for null in NULLS}
    for layer, head in heads:
        sel = (pairs["layer"] == layer) & (pairs["head"] == head)
        nr, s, top = pairs["n_recon"][sel], pairs["sparseness"][sel], pairs["top_rank"][sel]
        for name, value in keys.items():
            out[name].append(value)
        out["layer"].append(int(layer))
        out["head"].append(int(head))
        out["rank"].append(rank)
        out["n_recon_order"].append(order)
        out["n_pairs"].append(int(sel.sum()))
        out["n_nonpositive"].append(int((nr <= 0).sum()))
        out["n_recon_hist"].append(np.bincount(nr[nr > 0] - 1, minlength=rank)[:rank])
        for suffix in ("", "_signed", "_magnitude"):
            columns = _n_recon_columns(pairs["n_recon" + suffix][sel], pairs["null_n_recon" + suffix][sel], suffix)
            for name, value in columns.items():
                out[name].append(value)
        out["median_sparseness"].append(_median_or_nan(s))
        out["frac_top_lower_half"].append(_fraction_or_nan(lower_half(top, rank)))
        out["null_median_sparseness"].append(_median_or_nan(pairs["null_sparseness"][sel].ravel()))
        out["share_by_rank"].append(pairs["share_by_rank"][layer, head])
        for null in NULLS:
            out[NULL_PREFIXES[null] + "share_by_rank"].append(pairs[NULL_PREFIXES[null] + "share_by_rank"][layer, head])
            for name, value in _null_columns(pairs, sel, null, own[null][layer, head]).items():
                out[name].append(value)
        distortion, ltilde = pairs["softcap_distortion"][sel], pairs["ltilde"][sel]
        scale = np.abs(ltilde).max() if len(ltilde) else math.nan
        relative = distortion / scale if scale > 0 else distortion * math.nan
        out["softcap_max_distortion"].append(float(relative.max()) if len(relative) else math.nan)
        out["softcap_median_distortion"].append(_median_or_nan(relative))
    for null in NULLS:
        prefix = NULL_PREFIXES[null]
        for tail in ("sparser", "denser"):
            rejected = benjamini_hochberg(out[f"{prefix}p_{tail}"], FDR_LEVEL)
            out[f"{prefix}{tail}_bh"] = [bool(r) and null in pairs["nulls"] for r in rejected]
    return out


def pairs_table(pairs: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    """Column data for :data:`SAD_PAIRS` from :func:`run_sad`'s pair arrays and the key columns."""
    n = len(pairs["layer"])
    data = {name: [value] * n for name, value in keys.items()}
    data.update({c.name: pairs[c.name] for c in SAD_PAIRS.columns if c.name not in keys})
    return data


def prompts_table(
    texts: list[str],
    answers: list[tuple[str, str]] | None,
    batches: list[PromptBatch],
    logit_diff: dict[int, float],
    keys: dict[str, str],
) -> dict[str, Any]:
    """Column data for :data:`svalign.tables.SAD_PROMPTS`: every prompt of the set, kept or not."""
    n_tokens = {int(p): b.tokens.shape[1] for b in batches for p in b.prompt}
    n = len(texts)
    return {
        **{name: [value] * n for name, value in keys.items()},
        "prompt": np.arange(n),
        "text": texts,
        "kept": [i in n_tokens for i in range(n)],
        "n_tokens": [n_tokens.get(i, -1) for i in range(n)],
        "io_name": [a[0] for a in answers] if answers else [""] * n,
        "s_name": [a[1] for a in answers] if answers else [""] * n,
        "logit_diff": [logit_diff.get(i, math.nan) for i in range(n)],
    }
