"""Sparse attention decomposition (SAD): attention logits split over singular-vector terms.

For a head with singular triplets (σ_k, u_k, v_k) of its QK form (per RoPE offset δ = t − j), input rows x̃_t
(the normalised residual the head's W_Q/W_K read, bias-augmented when the model has q/k biases), the score of
query t on key j splits exactly as

    ℓ(t, j) = Σ_k a_k(t, j),    a_k(t, j) = σ_k (x̃_t · u_k)(v_k · x̃_j).

Relative terms c_k(t, j) = a_k(t, j) − mean_{i ∈ K(t), i ≠ j} a_k(t, i) sum to the relative attention
ℓ̃(t, j) = ℓ(t, j) − mean_{i ≠ j} ℓ(t, i). For every *firing* pair (attention A(t, j) above a threshold):

* N_recon: the smallest n such that the n largest c_k (descending) sum to at least ℓ̃ (ratio rounded to 5
  decimals); undefined (−1) when ℓ̃ ≤ 0.
* Rolls–Tovée sparseness S(c) = (mean |c_k|)² / mean(c_k²) ∈ [1/r, 1]; lower = sparser.
* the σ rank of the largest |c_k| (0 = largest singular value).

The null replaces U, V by Q_U U, Q_V V with Haar-random orthogonal Q_U, Q_V in input space (σ kept). Everything is
vectorised over prompts × heads × query positions × keys; the only loops are over layers and prompt chunks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from svalign.svd import HeadSVD
from svalign.tables import SAD_PAIRS, SAD_SUMMARY

__all__ = [
    "SAD_PAIRS",
    "SAD_SUMMARY",
    "PairStatistics",
    "decompose",
    "haar_orthogonal",
    "n_recon",
    "pair_statistics",
    "relative",
    "rolls_tovee",
    "rotate_svd",
]

log = logging.getLogger(__name__)

RATIO_DECIMALS = 5


# --------------------------------------------------------------------------------------------------
# Decomposition
# --------------------------------------------------------------------------------------------------


def decompose(x: torch.Tensor, svd: HeadSVD, causal: bool, offsets_used: bool) -> torch.Tensor:
    """Terms a_k(t, j) of every head of one layer.

    Args:
        x: head inputs ``[batch, pos, d_in]`` (``d_in`` = d_model, +1 with the bias coordinate set to 1).
        svd: the layer's SVD, tensors ``[head, n_offsets, …]`` (bases ``[head, d_in, r]``).
        causal: keys j > t are masked (their terms are 0).
        offsets_used: RoPE model: pair (t, j) uses the SVD of offset δ = t − j (needs n_offsets ≥ pos).

    Returns:
        ``[batch, head, query, key, r]`` terms; masked entries are 0.
    """
    n_pos = x.shape[1]
    p = torch.einsum("btd,hdr->bhtr", x, svd.basis_q)  # x̃_t in the query basis
    q = torch.einsum("btd,hdr->bhtr", x, svd.basis_k)
    if not offsets_used:
        alpha = p @ svd.core_u[:, 0].unsqueeze(0)  # [b, h, t, r]: x̃_t · u_k
        beta = q @ svd.core_v[:, 0].unsqueeze(0)  # [b, h, j, r]: v_k · x̃_j
        terms = alpha.unsqueeze(3) * beta.unsqueeze(2) * svd.S[:, 0][None, :, None, None, :]
    else:
        if svd.S.shape[1] < n_pos:
            raise ValueError(
                f"prompts of {n_pos} tokens need RoPE offsets up to {n_pos - 1}, but the SVD has "
                f"{svd.S.shape[1]} offsets: raise svd.max_offset to at least {n_pos - 1}"
            )
        offsets = svd.S.shape[1] if not causal else n_pos
        core_u, core_v, sigma = svd.core_u[:, :offsets], svd.core_v[:, :offsets], svd.S[:, :offsets]
        alpha = torch.einsum("bhtr,hdrk->bhtdk", p, core_u)  # [b, h, t, δ, r]
        beta = torch.einsum("bhjr,hdrk->bhjdk", q, core_v)
        t_index = torch.arange(n_pos).view(-1, 1).expand(n_pos, n_pos)
        j_index = t_index.T
        delta = (t_index - j_index).clamp(min=0)  # masked pairs (j > t) read δ = 0 and are zeroed below
        terms = alpha[:, :, t_index, delta] * beta[:, :, j_index, delta] * sigma[:, delta].unsqueeze(0)
    if causal:
        mask = torch.ones(n_pos, n_pos, dtype=torch.bool, device=x.device).tril()
        terms = terms * mask[None, None, :, :, None]
    return terms


def relative(values: torch.Tensor, causal: bool) -> torch.Tensor:
    """``v(t, j) − mean_{i ∈ K(t), i ≠ j} v(t, i)`` along the key axis (axis 3 of ``[b, h, t, j, …]``).

    Works for scores ``[b, h, t, j]`` and terms ``[b, h, t, j, r]``. Masked keys must hold 0. Entries with a
    single allowed key (t = 0 under a causal mask) are NaN.
    """
    n_pos = values.shape[3]
    extra = values.dim() - 4
    if causal:
        n_keys = torch.arange(1, n_pos + 1, dtype=values.dtype, device=values.device)  # |K(t)| = t + 1
    else:
        n_keys = torch.full((n_pos,), float(n_pos), dtype=values.dtype, device=values.device)
    n_keys = n_keys.view(1, 1, n_pos, 1, *([1] * extra))
    total = values.sum(dim=3, keepdim=True)
    others = (total - values) / (n_keys - 1)
    return values - others


def n_recon(contributions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smallest n whose n largest contributions reach ``target`` (ratio rounded to 5 decimals); −1 if target ≤ 0.

    Args:
        contributions: ``[pairs, r]`` relative terms c_k (they sum to ``target``).
        target: ``[pairs]`` relative attention ℓ̃.
    """
    ordered = contributions.sort(dim=-1, descending=True).values
    ratio = ordered.cumsum(-1) / target.unsqueeze(-1)
    reached = torch.round(ratio * 10**RATIO_DECIMALS) >= 10**RATIO_DECIMALS
    reached[..., -1] = True  # the full sum equals ℓ̃ by construction
    count = reached.float().argmax(-1) + 1
    return torch.where(target > 0, count, torch.full_like(count, -1))


def rolls_tovee(contributions: torch.Tensor) -> torch.Tensor:
    """Rolls–Tovée sparseness ``(mean |c|)² / mean(c²)`` ∈ [1/r, 1] of each row of ``[pairs, r]``."""
    return contributions.abs().mean(-1).square() / contributions.square().mean(-1).clamp_min(1e-30)


def haar_orthogonal(dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A Haar-distributed random orthogonal ``[dim, dim]`` matrix (QR of a Gaussian with sign correction)."""
    gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    Q, R = torch.linalg.qr(gaussian)
    return (Q * torch.sign(torch.diagonal(R)).unsqueeze(0)).to(dtype)


def rotate_svd(svd: HeadSVD, Q_U: torch.Tensor, Q_V: torch.Tensor) -> HeadSVD:
    """The spectrum-preserving null: U → Q_U U, V → Q_V V (σ and the cores kept), via the bases."""
    return HeadSVD(Q_U @ svd.basis_q, Q_V @ svd.basis_k, svd.S, svd.core_u, svd.core_v)


@dataclass
class PairStatistics:
    """Statistics of the firing pairs of one layer, flat over (prompt, head, t, j)."""

    prompt: torch.Tensor
    head: torch.Tensor
    t: torch.Tensor
    j: torch.Tensor
    attention: torch.Tensor
    ltilde: torch.Tensor
    n_recon: torch.Tensor
    sparseness: torch.Tensor
    top_rank: torch.Tensor
    share_by_rank: torch.Tensor  # [head, r]: sum over firing pairs of |c_k| / Σ_k |c_k|


def firing_mask(pattern: torch.Tensor, causal: bool, threshold: float | None, skip_first_key: bool) -> torch.Tensor:
    """Pairs (t, j) with A(t, j) ≥ threshold (default 1/|K(t)|) and at least two allowed keys.

    Args:
        pattern: attention weights ``[b, h, t, j]``.
    """
    n_pos = pattern.shape[-1]
    positions = torch.arange(n_pos, device=pattern.device)
    n_keys = (positions + 1).float() if causal else torch.full((n_pos,), float(n_pos), device=pattern.device)
    limit = (1.0 / n_keys).view(1, 1, n_pos, 1) if threshold is None else torch.tensor(threshold)
    mask = pattern >= limit
    allowed = positions.view(1, -1) <= positions.view(-1, 1) if causal else torch.ones(n_pos, n_pos, dtype=torch.bool)
    mask &= allowed.to(pattern.device)
    mask &= (n_keys >= 2).view(1, 1, n_pos, 1)
    if skip_first_key:
        mask[..., 0] = False
    return mask


def pair_statistics(
    terms: torch.Tensor, pattern: torch.Tensor, causal: bool, threshold: float | None, skip_first_key: bool
) -> PairStatistics:
    """N_recon, S and the top rank of every firing pair of one layer.

    Args:
        terms: ``[b, h, t, j, r]`` from :func:`decompose`.
        pattern: attention weights ``[b, h, t, j]`` of the real model (fixes the firing pairs).
    """
    mask = firing_mask(pattern, causal, threshold, skip_first_key)
    index = mask.nonzero(as_tuple=True)
    contributions = relative(terms, causal)[index]  # [pairs, r]
    ltilde = contributions.sum(-1)
    share = contributions.abs() / contributions.abs().sum(-1, keepdim=True).clamp_min(1e-30)
    share_by_rank = torch.zeros(terms.shape[1], terms.shape[-1], dtype=share.dtype).index_add_(0, index[1], share)
    return PairStatistics(
        prompt=index[0],
        head=index[1],
        t=index[2],
        j=index[3],
        attention=pattern[index],
        ltilde=ltilde,
        n_recon=n_recon(contributions, ltilde),
        sparseness=rolls_tovee(contributions),
        top_rank=contributions.abs().argmax(-1),
        share_by_rank=share_by_rank,
    )


def augment_inputs(x: torch.Tensor, augmented: bool) -> torch.Tensor:
    """Append the constant coordinate 1 when the SVD is over bias-augmented inputs."""
    return torch.cat([x, torch.ones_like(x[..., :1])], -1) if augmented else x


def check_scores(terms: torch.Tensor, scores: torch.Tensor, causal: bool, tolerance: float, layer: int) -> float:
    """Assert Σ_k a_k(t, j) equals the model's own (unscaled) scores; returns the worst relative error.

    The error of each head is relative to that head's largest |score| in the batch.
    """
    n_pos = scores.shape[-1]
    allowed = torch.ones(n_pos, n_pos, dtype=torch.bool, device=scores.device)
    if causal:
        allowed = allowed.tril()
    reconstructed = terms.sum(-1)
    difference = ((reconstructed - scores) * allowed).abs().amax(dim=(0, 2, 3))
    scale = (scores * allowed).abs().amax(dim=(0, 2, 3)).clamp_min(1e-12)
    worst = float((difference / scale).max())
    if not worst <= tolerance:
        head = int((difference / scale).argmax())
        raise ArithmeticError(
            f"layer {layer}, head {head}: the SVD terms sum to the model's scores only to {worst:.2e} (relative), "
            f"tolerance {tolerance:g}: the weights, SVD and head inputs disagree (processing or RoPE convention)"
        )
    return worst


def _median_or_nan(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else math.nan


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------

_STR, _I64, _F64, _F32 = pa.string(), pa.int64(), pa.float64(), pa.float32()


def summarize(pairs: dict[str, np.ndarray], rank: int, keys: dict[str, Any]) -> dict[str, list]:
    """Per-(layer, head) rows of :data:`SAD_SUMMARY` from :data:`SAD_PAIRS` column arrays."""
    out: dict[str, list] = {c.name: [] for c in SAD_SUMMARY.columns}
    n_layers, n_heads = pairs["share_by_rank"].shape[:2]
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    for layer, head in heads:
        sel = (pairs["layer"] == layer) & (pairs["head"] == head)
        nr, s, top = pairs["n_recon"][sel], pairs["sparseness"][sel], pairs["top_rank"][sel]
        null_nr, null_s = pairs["null_n_recon"][sel].ravel(), pairs["null_sparseness"][sel].ravel()
        defined, null_defined = nr[nr > 0], null_nr[null_nr > 0]
        for name, value in keys.items():
            out[name].append(value)
        out["layer"].append(int(layer))
        out["head"].append(int(head))
        out["rank"].append(rank)
        out["n_pairs"].append(int(sel.sum()))
        out["n_nonpositive"].append(int((nr <= 0).sum()))
        out["n_recon_hist"].append(np.bincount(defined - 1, minlength=rank)[:rank])
        out["median_n_recon"].append(_median_or_nan(defined))
        out["frac_n_recon_le4"].append(float((defined <= 4).mean()) if len(defined) else math.nan)
        out["median_sparseness"].append(_median_or_nan(s))
        out["frac_top_lower_half"].append(float((top >= rank / 2).mean()) if len(top) else math.nan)
        out["null_median_n_recon"].append(_median_or_nan(null_defined))
        out["null_frac_n_recon_le4"].append(float((null_defined <= 4).mean()) if len(null_defined) else math.nan)
        out["null_median_sparseness"].append(_median_or_nan(null_s))
        out["share_by_rank"].append(pairs["share_by_rank"][layer, head])
        out["null_share_by_rank"].append(pairs["null_share_by_rank"][layer, head])
    return out


# --------------------------------------------------------------------------------------------------
# Prompts → tokens, model activations, and the whole stage
# --------------------------------------------------------------------------------------------------


@dataclass
class PromptBatch:
    """Prompts of one token length (padding-free), with their indices in the prompt set.

    Attributes:
        tokens: ``[n, pos]`` token ids.
        prompt: ``[n]`` prompt indices.
        io_token, s_token: ``[n]`` IOI answer tokens (−1 for plain text).
    """

    tokens: torch.Tensor
    prompt: torch.Tensor
    io_token: torch.Tensor
    s_token: torch.Tensor


def _single_token(tokenizer: Any, name: str, causal: bool) -> int | None:
    if causal:
        ids = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(name))
    return int(ids[0]) if len(ids) == 1 else None


def tokenize_prompts(
    tokenizer: Any, texts: list[str], causal: bool, n_ctx: int, answers: list[tuple[str, str]] | None = None
) -> tuple[list[PromptBatch], list[int]]:
    """Tokenise and group prompts by length; IOI prompts whose names are not single tokens are dropped.

    Causal models get no BOS (recorded in provenance); BERT gets its usual [CLS] … [SEP].

    Returns:
        (batches, kept prompt indices).

    Raises:
        ValueError: empty prompt set, no prompt left after filtering, or a prompt longer than the context.
    """
    if not texts:
        raise ValueError("the prompt set is empty")
    by_length: dict[int, list[tuple[int, list[int], int, int]]] = {}
    kept = []
    for index, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=not causal)["input_ids"]
        if len(ids) > n_ctx:
            raise ValueError(f"prompt {index} has {len(ids)} tokens, more than the model's context of {n_ctx}")
        io_token = s_token = -1
        if answers is not None:
            io_id, s_id = (_single_token(tokenizer, name, causal) for name in answers[index])
            if io_id is None or s_id is None:
                continue
            io_token, s_token = io_id, s_id
        kept.append(index)
        by_length.setdefault(len(ids), []).append((index, ids, io_token, s_token))
    if not kept:
        raise ValueError("no prompt is left: every IOI name is split into several tokens by this tokenizer")
    batches = [
        PromptBatch(
            tokens=torch.tensor([r[1] for r in rows]),
            prompt=torch.tensor([r[0] for r in rows]),
            io_token=torch.tensor([r[2] for r in rows]),
            s_token=torch.tensor([r[3] for r in rows]),
        )
        for _, rows in sorted(by_length.items())
    ]
    return batches, kept


@dataclass
class SADConfig:
    """Options of the SAD stage (config key ``sad``)."""

    threshold: float | None = None  # None: A(t, j) ≥ 1/|K(t)|
    skip_first_key: bool = False
    null_draws: int = 5
    null_seed: int = 0
    chunk_prompts: int = 32
    score_tolerance: float = 1e-4


def layer_activations(bridge: Any, tokens: torch.Tensor, weights: Any) -> tuple[dict, torch.Tensor]:
    """One forward pass caching each layer's head input, attention pattern and the model's unscaled scores."""
    bert = weights.architecture == "bert"
    names = set()
    for layer in range(weights.n_layers):
        names.add(weights.head_input_hook.format(layer=layer))
        names.add(f"blocks.{layer}.attn.hook_pattern")
        names.update(
            [f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"]
            if bert
            else [f"blocks.{layer}.attn.hook_attn_scores"]
        )
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens, names_filter=names.__contains__)
    return cache, logits[:, -1]


def model_scores(cache: dict, layer: int, weights: Any) -> torch.Tensor:
    """The model's own pre-softmax scores ``[b, h, t, j]`` before the 1/√d_head scale (masked entries 0)."""
    if weights.architecture == "bert":  # BERT's hook_attn_scores holds the pattern: use q·k
        q, k = cache[f"blocks.{layer}.attn.hook_q"], cache[f"blocks.{layer}.attn.hook_k"]
        return torch.einsum("bthe,bshe->bhts", q, k)
    scores = cache[f"blocks.{layer}.attn.hook_attn_scores"] * weights.attn_scale
    n_pos = scores.shape[-1]
    allowed = torch.ones(n_pos, n_pos, dtype=torch.bool, device=scores.device).tril()
    return torch.where(allowed, scores, torch.zeros((), dtype=scores.dtype))  # select before arithmetic on -inf


def layer_svd(model_svd: Any, layer: int) -> HeadSVD:
    return HeadSVD(*(t[layer] for t in model_svd.svd))


def run_sad(
    bridge: Any, weights: Any, model_svd: Any, batches: list[PromptBatch], config: SADConfig
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """SAD statistics of every firing pair of every head, real and under the rotation null.

    Returns:
        (pair columns for :data:`SAD_PAIRS` without the key columns, plus ``share_by_rank`` arrays and
        ``logit_diff`` {prompt: logit(IO) − logit(S)} for IOI on causal models; diagnostics: worst score error,
        mean IOI logit difference and accuracy).
    """
    causal, rotary = weights.causal, weights.rotary is not None
    d_in = model_svd.svd.basis_q.shape[-2]
    generator = torch.Generator().manual_seed(config.null_seed)
    # One (Q_U, Q_V) per layer and draw, shared by the layer's heads and fixed before any data is seen. The
    # rotated bases are built once here, not per prompt chunk (they cost as much memory as the rotations).
    null_svds = []
    for layer in range(weights.n_layers):
        svd = layer_svd(model_svd, layer)
        null_svds.append(
            [
                rotate_svd(svd, haar_orthogonal(d_in, generator), haar_orthogonal(d_in, generator))
                for _ in range(config.null_draws)
            ]
        )
    columns: dict[str, list] = {
        k: []
        for k in (
            "layer",
            "head",
            "prompt",
            "t",
            "j",
            "attention",
            "ltilde",
            "n_recon",
            "sparseness",
            "top_rank",
            "null_n_recon",
            "null_sparseness",
        )
    }
    worst, logit_diffs = 0.0, {}
    rank = model_svd.svd.S.shape[-1]
    share = torch.zeros(weights.n_layers, weights.n_heads, rank)
    null_share = torch.zeros(weights.n_layers, weights.n_heads, rank)
    for batch in batches:
        for start in range(0, len(batch.tokens), config.chunk_prompts):
            tokens = batch.tokens[start : start + config.chunk_prompts]
            prompts = batch.prompt[start : start + config.chunk_prompts]
            cache, last_logits = layer_activations(bridge, tokens, weights)
            io, s = batch.io_token[start : start + len(tokens)], batch.s_token[start : start + len(tokens)]
            if causal and (io >= 0).all():
                rows = torch.arange(len(tokens))
                diff = (last_logits[rows, io] - last_logits[rows, s]).tolist()
                logit_diffs.update(zip(prompts.tolist(), diff, strict=True))
            for layer in range(weights.n_layers):
                x = augment_inputs(cache[weights.head_input_hook.format(layer=layer)].float(), model_svd.augmented)
                svd = layer_svd(model_svd, layer)
                terms = decompose(x, svd, causal, rotary)
                worst = max(
                    worst,
                    check_scores(
                        terms, model_scores(cache, layer, weights).float(), causal, config.score_tolerance, layer
                    ),
                )
                pattern = cache[f"blocks.{layer}.attn.hook_pattern"].float()
                real = pair_statistics(terms, pattern, causal, config.threshold, config.skip_first_key)
                del terms
                null_nr, null_s = [], []
                for null_svd in null_svds[layer]:
                    null_terms = decompose(x, null_svd, causal, rotary)
                    null = pair_statistics(null_terms, pattern, causal, config.threshold, config.skip_first_key)
                    null_nr.append(null.n_recon)
                    null_s.append(null.sparseness)
                    null_share[layer] += null.share_by_rank / config.null_draws
                share[layer] += real.share_by_rank
                n = len(real.head)
                columns["layer"].append(np.full(n, layer))
                columns["prompt"].append(prompts[real.prompt].numpy())
                for name in ("head", "t", "j", "attention", "ltilde", "n_recon", "sparseness", "top_rank"):
                    columns[name].append(getattr(real, name).numpy())
                columns["null_n_recon"].append(torch.stack(null_nr, -1).numpy().reshape(n, -1))
                columns["null_sparseness"].append(torch.stack(null_s, -1).numpy().reshape(n, -1))
    pairs = {k: np.concatenate(v) for k, v in columns.items()}
    order = np.lexsort((pairs["j"], pairs["t"], pairs["prompt"], pairs["head"], pairs["layer"]))
    pairs = {k: v[order] for k, v in pairs.items()}
    counts = torch.zeros(weights.n_layers, weights.n_heads)
    counts.index_put_(
        (torch.from_numpy(pairs["layer"]), torch.from_numpy(pairs["head"])),
        torch.ones(len(pairs["layer"])),
        accumulate=True,
    )
    pairs["share_by_rank"] = (share / counts.clamp_min(1).unsqueeze(-1)).numpy()
    pairs["null_share_by_rank"] = (null_share / counts.clamp_min(1).unsqueeze(-1)).numpy()
    diagnostics: dict[str, Any] = {"max_score_error": worst}
    if logit_diffs:
        values = np.array(list(logit_diffs.values()))
        diagnostics.update(ioi_logit_diff_mean=float(values.mean()), ioi_accuracy=float((values > 0).mean()))
    pairs["logit_diff"] = logit_diffs
    return pairs, diagnostics


def prompts_table(
    texts: list[str],
    answers: list[tuple[str, str]] | None,
    batches: list[PromptBatch],
    logit_diff: dict[int, float],
    keys: dict[str, str],
) -> dict[str, Any]:
    """Column data for :data:`SAD_PROMPTS`."""
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


def pairs_table(pairs: dict[str, np.ndarray], keys: dict[str, str]) -> dict[str, Any]:
    """Column data for :data:`SAD_PAIRS` from :func:`run_sad`'s pair arrays and the key columns."""
    n = len(pairs["layer"])
    data = {name: [value] * n for name, value in keys.items()}
    data.update({c.name: pairs[c.name] for c in SAD_PAIRS.columns if c.name not in keys})
    return data


def reference_pair(
    x: np.ndarray, U: np.ndarray, S: np.ndarray, V: np.ndarray, t: int, j: int, keys: list[int]
) -> tuple[int, float, int]:
    """Slow, obvious reference for one pair (t, j): loops over keys like the authors' per-pair scripts.

    Args:
        x: one prompt's head inputs ``[pos, d_in]``; U, V: ``[d_in, r]``; S: ``[r]`` (one head, one offset).
        keys: the allowed keys K(t).

    Returns:
        (N_recon, Rolls–Tovée S, top rank) — what :func:`pair_statistics` computes for every pair at once.
    """
    query = S * (x[t] @ U)  # σ_k (x̃_t · u_k)
    terms = {i: query * (x[i] @ V) for i in keys}
    others = [i for i in keys if i != j]
    c = terms[j] - sum(terms[i] for i in others) / len(others)
    ltilde = float(c.sum())
    ordered = np.sort(c)[::-1]
    n = -1
    if ltilde > 0:
        running = 0.0
        for count, value in enumerate(ordered, start=1):
            running += value
            if round(running / ltilde, RATIO_DECIMALS) >= 1:
                n = count
                break
        else:
            n = len(c)
    sparseness = float(np.mean(np.abs(c)) ** 2 / np.mean(c**2))
    return n, sparseness, int(np.argmax(np.abs(c)))
