"""The SAD stage over a prompt set: the decomposition of every layer of every forward pass, real and under the
rotation null, and the columns of the ``sad_pairs``, ``sad_summary`` and ``sad_prompts`` tables
(:mod:`svalign.tables`; scripts write them).

:func:`run_sad` is a sequence of named steps: :func:`null_bases` (the seeded rotations, drawn before any data is
seen) → per forward pass of :func:`svalign.sad.forward.forward_passes` :func:`process_chunk` (the IOI logit
differences, then :func:`layer_pairs` per layer) → :func:`assemble_pairs` (sorted columns, mean shares) and the
diagnostics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from svalign.definitions import N_RECON_LIMIT, lower_half
from svalign.heads import HeadWeights
from svalign.sad.config import SADConfig
from svalign.sad.decompose import PairStatistics, check_scores, layer_svd, pair_statistics, rotate_svd
from svalign.sad.forward import ForwardChunk, LayerInputs, PromptBatch, check_offsets, forward_passes
from svalign.svd import HeadSVD, ModelSVD
from svalign.tables import SAD_PAIRS, SAD_SUMMARY

__all__ = [
    "PAIR_COLUMNS",
    "SCORE_TOLERANCE",
    "Accumulator",
    "LayerPairs",
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
)
"""Per-pair columns that :func:`run_sad` returns (those of :data:`SAD_PAIRS` without the run keys)."""
_CONFIGURED = ("n_recon", "null_n_recon")  # the arrays of ordering sad.n_recon_order (assemble_pairs)


# --------------------------------------------------------------------------------------------------
# The stage: null bases, prompt chunks, per-layer statistics, assembled columns
# --------------------------------------------------------------------------------------------------


def null_bases(model_svd: ModelSVD, n_layers: int, config: SADConfig) -> list[list[HeadSVD]]:
    """The rotated SVDs of the null: ``[layer][draw]``, each a layer's :class:`HeadSVD` under one (Q_U, Q_V).

    One (Q_U, Q_V) per layer and draw, shared by the layer's heads and drawn from ``config.null_seed`` before any
    data is seen (layer by layer, draw by draw, Q_U before Q_V). The rotated bases are built once here, not per
    prompt chunk (they cost as much memory as the rotations).
    """
    generator = torch.Generator().manual_seed(config.null_seed)
    bases = []
    for layer in range(n_layers):
        svd = layer_svd(model_svd, layer)
        bases.append([rotate_svd(svd, generator) for _ in range(config.null_draws)])
    return bases


@dataclass
class LayerPairs:
    """One layer's firing pairs of one prompt chunk, real and under each null draw.

    Attributes:
        real: statistics of the real model's terms.
        null_n_recon, null_n_recon_magnitude, null_sparseness: ``[pairs, draws]`` the same pairs under each draw
            (N_recon in the signed and in the magnitude ordering).
        null_shares: per draw, ``[head, r]`` sums of |c_k| / Σ|c| over the pairs.
        score_error: worst relative error of Σ_k a_k against the model's scores (see :func:`check_scores`).
    """

    real: PairStatistics
    null_n_recon: torch.Tensor
    null_n_recon_magnitude: torch.Tensor
    null_sparseness: torch.Tensor
    null_shares: list[torch.Tensor]
    score_error: float


def layer_pairs(
    inputs: LayerInputs,
    svd: HeadSVD,
    nulls: list[HeadSVD],
    *,
    causal: bool,
    offsets_used: bool,
    config: SADConfig,
    layer: int,
) -> LayerPairs:
    """Decompose one layer's scores, check them against the model's, and score its firing pairs, real and null.

    Args:
        inputs: the layer's head inputs, the model's unscaled scores and attention
            (:meth:`svalign.sad.forward.ForwardChunk.inputs`).
        svd: the layer's SVD; nulls: its rotated SVDs, one per draw (:func:`null_bases`).
    """
    firing = (config.threshold, config.skip_first_key, inputs.window)  # which pairs fire: the same for every draw
    terms = inputs.terms(svd, causal, offsets_used)  # [b, h, t, j, r]
    score_error = check_scores(terms, inputs.scores, causal, SCORE_TOLERANCE, layer, inputs.window)
    real = pair_statistics(terms, inputs.pattern, causal, *firing)
    del terms  # one [b, h, t, j, r] tensor at a time
    draws = []
    for null_svd in nulls:
        null_terms = inputs.terms(null_svd, causal, offsets_used)
        draws.append(pair_statistics(null_terms, inputs.pattern, causal, *firing))
        del null_terms
    return LayerPairs(
        real,
        torch.stack([null.n_recon for null in draws], -1),
        torch.stack([null.n_recon_magnitude for null in draws], -1),
        torch.stack([null.sparseness for null in draws], -1),
        [null.share_by_rank for null in draws],
        score_error,
    )


@dataclass
class Accumulator:
    """What :func:`run_sad` gathers over prompt chunks and layers, in processing order.

    Attributes:
        columns: per :data:`PAIR_COLUMNS` (but ``n_recon`` and ``null_n_recon``), one array per (chunk, layer).
        share, null_share: ``[layer, head, r]`` sums over firing pairs of |c_k| / Σ|c| (null: mean over draws).
        worst: worst relative score error so far.
        logit_diff: {prompt: logit(IO) − logit(S)} (IOI on causal models).
    """

    columns: dict[str, list[np.ndarray]]
    share: torch.Tensor
    null_share: torch.Tensor
    worst: float = 0.0
    logit_diff: dict[int, float] = field(default_factory=dict)

    def add(self, layer: int, prompts: torch.Tensor, pairs: LayerPairs, null_draws: int) -> None:
        """Append one layer's pairs of one chunk (``prompts``: the chunk's prompt indices ``[n]``)."""
        self.worst = max(self.worst, pairs.score_error)
        for share in pairs.null_shares:  # draw by draw, as the accumulated float sums require
            self.null_share[layer] += share / null_draws
        real = pairs.real
        self.share[layer] += real.share_by_rank
        n = len(real.head)
        self.columns["layer"].append(np.full(n, layer))
        self.columns["prompt"].append(prompts[real.prompt].numpy())
        for name in ("head", "t", "j", "attention", "ltilde", "sparseness", "top_rank"):
            self.columns[name].append(getattr(real, name).numpy())
        self.columns["n_recon_signed"].append(real.n_recon.numpy())
        self.columns["n_recon_magnitude"].append(real.n_recon_magnitude.numpy())
        # [pairs, draws]; reshaped with the draw count so a layer without firing pairs gives (0, draws)
        self.columns["null_n_recon_signed"].append(pairs.null_n_recon.numpy().reshape(n, null_draws))
        self.columns["null_n_recon_magnitude"].append(pairs.null_n_recon_magnitude.numpy().reshape(n, null_draws))
        self.columns["null_sparseness"].append(pairs.null_sparseness.numpy().reshape(n, null_draws))


def process_chunk(
    chunk: ForwardChunk, model_svd: ModelSVD, nulls: list[list[HeadSVD]], config: SADConfig, collected: Accumulator
) -> None:
    """One forward pass (:func:`svalign.sad.forward.forward_passes`): every layer's pairs into ``collected``."""
    collected.logit_diff.update(chunk.ioi_logit_diff())
    weights = chunk.weights
    for layer in range(weights.n_layers):
        pairs = layer_pairs(
            chunk.inputs(layer),
            layer_svd(model_svd, layer),
            nulls[layer],
            causal=weights.causal,
            offsets_used=model_svd.uses_offsets,
            config=config,
            layer=layer,
        )
        collected.add(layer, chunk.batch.prompt, pairs, config.null_draws)


def assemble_pairs(
    collected: Accumulator, n_layers: int, n_heads: int, n_recon_order: str = "signed"
) -> dict[str, Any]:
    """The pair columns sorted by (layer, head, prompt, t, j), the mean shares by rank and the logit differences.

    Returns:
        :data:`PAIR_COLUMNS` arrays ``[pairs]`` (null ones ``[pairs, draws]``; ``n_recon`` and ``null_n_recon``
        are those of ``n_recon_order``), ``share_by_rank`` and ``null_share_by_rank`` ``[layer, head, r]`` (means
        over each head's firing pairs) and ``logit_diff``.
    """
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
    pairs["share_by_rank"] = (collected.share / counts.clamp_min(1).unsqueeze(-1)).numpy()
    pairs["null_share_by_rank"] = (collected.null_share / counts.clamp_min(1).unsqueeze(-1)).numpy()
    pairs["logit_diff"] = collected.logit_diff
    return pairs


def run_sad(
    model: Any, weights: HeadWeights, model_svd: ModelSVD, batches: list[PromptBatch], config: SADConfig
) -> tuple[dict[str, Any], dict[str, float]]:
    """SAD statistics of every firing pair of every head, real and under the rotation null.

    Fails before any computation when a RoPE model's SVD lacks offsets for the longest prompt.

    Returns:
        (pair columns of :func:`assemble_pairs`; diagnostics: worst score error ``max_score_error`` and, for IOI on
        causal models, the mean logit difference ``ioi_logit_diff_mean`` and accuracy ``ioi_accuracy``).
    """
    check_offsets(model_svd, batches)
    nulls = null_bases(model_svd, weights.n_layers, config)
    rank = model_svd.svd.S.shape[-1]
    collected = Accumulator(
        columns={name: [] for name in PAIR_COLUMNS},
        share=torch.zeros(weights.n_layers, weights.n_heads, rank),
        null_share=torch.zeros(weights.n_layers, weights.n_heads, rank),
    )
    for chunk in forward_passes(model, weights, batches, config.chunk_prompts, model_svd.augmented):
        process_chunk(chunk, model_svd, nulls, config, collected)
    diagnostics: dict[str, Any] = {"max_score_error": collected.worst}
    if collected.logit_diff:
        values = np.array(list(collected.logit_diff.values()))
        diagnostics.update(ioi_logit_diff_mean=float(values.mean()), ioi_accuracy=float((values > 0).mean()))
    return assemble_pairs(collected, weights.n_layers, weights.n_heads, config.n_recon_order), diagnostics


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


def summarize(pairs: dict[str, Any], rank: int, keys: dict[str, Any]) -> dict[str, list]:
    """Per-(layer, head) rows of :data:`SAD_SUMMARY` from :func:`run_sad`'s pair columns and the key columns.

    The plain N_recon columns follow ``pairs["n_recon_order"]``; the ``_signed`` and ``_magnitude`` ones name
    their ordering.
    """
    out: dict[str, list] = {c.name: [] for c in SAD_SUMMARY.columns}
    n_layers, n_heads = pairs["share_by_rank"].shape[:2]
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    for layer, head in heads:
        sel = (pairs["layer"] == layer) & (pairs["head"] == head)
        nr, s, top = pairs["n_recon"][sel], pairs["sparseness"][sel], pairs["top_rank"][sel]
        for name, value in keys.items():
            out[name].append(value)
        out["layer"].append(int(layer))
        out["head"].append(int(head))
        out["rank"].append(rank)
        out["n_recon_order"].append(pairs["n_recon_order"])
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
        out["null_share_by_rank"].append(pairs["null_share_by_rank"][layer, head])
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
