"""Attention logits split over SAE latent pairs, exactly, at SAD's firing pairs.

With the site's SAE, a head input is a sum of components: ``x̃_t = Σ_a f_a(t) d̃_a + b̃ + ẽ_t`` over the active
latents a (``d̃_a = [d_a, 0]`` on bias-augmented inputs), the decoder bias ``b̃ = [b_dec, 1]`` and the SAE's error
``ẽ_t = [x_t − x̂_t, 0]``. For a firing pair (t, j) at offset δ the logit splits over component pairs,

    ℓ(t, j) = Σ_{a,b} M_ab,    M_ab = c_a(t)ᵀ Ω_δ c_b(j) = Σ_k σ_k (c_a(t)·u_k)(v_k·c_b(j)),

computed through the factored SVD (never forming Ω_δ) and checked against the model's own score. The dominant
latent pair (a*, b*) (largest |M_ab| over latent×latent) is compared with the dominant singular term
k* = argmax_k |a_k(t, j)|: the pair *matches* when a* is the active latent at t best aligned with u_k* and b* the
active latent at j best aligned with v_k*. Chance is 1 / (n_active(t) · n_active(j)); the null repeats the match
with the rotation null's singular vectors (SAD's draws), which leaves M unchanged.

The **random-dictionary control** repeats the whole attribution through a dictionary without features
(:class:`PursuitCoder`): as many unit directions as the SAE has latents, drawn from N(0, M) (M the site's head-input
second moment, as the fake dictionaries of :mod:`svalign.sae.align`), each token coded by non-negative matching
pursuit with the SAE's k atoms around the SAE's own b_dec. Its match rate and latent×latent share are what the
SAE's must beat: any k directions where the data has energy split a logit into "latent pairs" too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from svalign.sad.decompose import firing_mask
from svalign.sad.forward import LayerInputs
from svalign.sae.dictionary import encode
from svalign.svd import HeadSVD

__all__ = [
    "MAX_ATTRIBUTION_ERROR",
    "AttributionCollector",
    "PursuitCoder",
    "SiteComponents",
    "attribute_pairs",
    "site_components",
]

MAX_ATTRIBUTION_ERROR = 1e-4
"""Largest relative error allowed between Σ_ab M_ab and the model's score (relative to the head's largest |score|)."""

_PAIR_CHUNK = 4096


@dataclass
class PursuitCoder:
    """A dictionary without an encoder: each token coded by greedy non-negative matching pursuit (k atoms).

    It answers what :func:`site_components` asks of a ``sparsify.SparseCoder`` (``encode``, ``W_dec``, ``b_dec``,
    ``d_in``), so the attribution runs through it unchanged.

    Attributes:
        W_dec: ``[n_latents, d_model]`` unit atoms.
        b_dec: ``[d_model]`` the bias the atoms code around (the SAE's own, so only the directions differ).
        k: atoms per token.
    """

    W_dec: torch.Tensor
    b_dec: torch.Tensor
    k: int

    @property
    def d_in(self) -> int:
        return self.W_dec.shape[1]

    @property
    def num_latents(self) -> int:
        return self.W_dec.shape[0]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Activations and atom indices ``[n, k]`` of ``x`` ``[n, d_model]``: at each of k steps the unused atom
        with the largest positive correlation with the residual takes it (0 once none correlates positively)."""
        residual = x - self.b_dec
        used = torch.zeros(len(x), self.num_latents, dtype=torch.bool)
        acts, indices = torch.zeros(len(x), self.k), torch.zeros(len(x), self.k, dtype=torch.long)
        rows = torch.arange(len(x))
        for step in range(self.k):  # k greedy steps, each vectorised over tokens and atoms
            scores = (residual @ self.W_dec.T).masked_fill(used, -torch.inf)
            best, atom = scores.max(-1)
            coefficient = best.clamp_min(0.0)
            residual = residual - coefficient[:, None] * self.W_dec[atom]
            used[rows, atom] = True
            acts[:, step], indices[:, step] = coefficient, atom
        return acts, indices, None


@dataclass
class SiteComponents:
    """Each token's components (active latents, then b_dec, then the SAE error) for one forward chunk.

    Attributes:
        vectors: ``[b, pos, c, d_in]`` with ``c = k + 2``; they sum to the head input x̃ over ``c``.
        acts: ``[b, pos, k]`` latent activations (0: selected by TopK but inactive).
        latents: ``[b, pos, k]`` latent indices.
    """

    vectors: torch.Tensor
    acts: torch.Tensor
    latents: torch.Tensor


def site_components(sae: Any, x: torch.Tensor) -> SiteComponents:
    """Split head inputs ``x`` ``[b, pos, d_in]`` (bias coordinate last when d_in = d_model + 1) into components."""
    d_model = sae.d_in
    raw = x[..., :d_model]
    acts, latents = encode(sae, raw)
    with torch.no_grad():
        latent_vectors = acts.unsqueeze(-1) * sae.W_dec[latents]  # [b, pos, k, d_model]
        bias = sae.b_dec.expand(*raw.shape[:-1], 1, d_model)
        error = (raw - latent_vectors.sum(-2) - sae.b_dec).unsqueeze(-2)
        vectors = torch.cat([latent_vectors, bias, error], -2)
    if x.shape[-1] > d_model:  # the constant coordinate belongs to the bias component
        constant = torch.zeros(*vectors.shape[:-1], 1, dtype=vectors.dtype)
        constant[..., -2, 0] = 1.0
        vectors = torch.cat([vectors, constant], -1)
    return SiteComponents(vectors, acts, latents)


def _basis_projections(components: SiteComponents, svd: HeadSVD) -> tuple[torch.Tensor, torch.Tensor]:
    """Every token's components in each head's query and key bases: ``[b, head, pos, c, r]`` twice."""
    query = torch.einsum("bpcd,hdr->bhpcr", components.vectors, svd.basis_q)
    key = torch.einsum("bpcd,hdr->bhpcr", components.vectors, svd.basis_k)
    return query, key


def _singular_projections(
    bases: tuple[torch.Tensor, torch.Tensor], svd: HeadSVD, index: tuple[torch.Tensor, ...], delta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Components projected on u_k (query side), v_k (key side) at each pair's offset, and σ: ``[n, c, r]`` ×2,
    ``[n, r]``."""
    b, h, t, j = index
    query = bases[0][b, h, t] @ svd.core_u[h, delta]
    key = bases[1][b, h, j] @ svd.core_v[h, delta]
    return query, key, svd.S[h, delta]


def _aligned_latent(projection: torch.Tensor, acts: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """Position (in the token's k latents) of the active latent best aligned with singular vector ``rank``.

    ``projection[:, a, k] / f_a = d̃_a · u_k`` (unit d̃_a), so no unit vectors need to be formed.
    """
    k = acts.shape[-1]
    along = projection[torch.arange(len(rank)), :k, rank].abs() / acts.clamp_min(1e-30)
    return torch.where(acts > 0, along, -1.0).argmax(-1)


def _dominant_term(query: torch.Tensor, key: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """k* = argmax_k |σ_k (x̃_t·u_k)(v_k·x̃_j)| of each pair ``[n]``."""
    return (sigma * query.sum(1) * key.sum(1)).abs().argmax(-1)


@dataclass
class AttributionCollector:
    """Per-pair columns gathered over chunks and layers (lists of arrays) and each layer's active latents."""

    columns: dict[str, list[np.ndarray]] = field(default_factory=dict)
    active: dict[int, set[int]] = field(default_factory=dict)

    def add(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            self.columns.setdefault(name, []).append(np.asarray(value))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) for name, parts in self.columns.items()}


def attribute_pairs(
    inputs: LayerInputs,
    sae: Any,
    svd: HeadSVD,
    nulls: list[HeadSVD],
    *,
    causal: bool,
    offsets_used: bool,
    threshold: float | None,
    skip_first_key: bool,
) -> dict[str, np.ndarray]:
    """Attribute every firing pair of one layer and prompt chunk to latent pairs (see the module docstring).

    Args:
        inputs: the layer's :class:`svalign.sad.forward.LayerInputs` (head inputs, model scores, pattern).
        svd: the layer's SVD ``[head, n_offsets, …]``; nulls: its rotation-null draws (same layout).

    Returns:
        Columns ``[pairs]``: ``b``, ``head``, ``t``, ``j`` and those of :data:`svalign.tables.SAE_ATTRIBUTION`
        computed here (none when no pair fires), plus ``active_latents`` (the latents active anywhere in the chunk,
        unique).

    Raises:
        ArithmeticError: Σ_ab M_ab differs from the model's score beyond :data:`MAX_ATTRIBUTION_ERROR`.
    """
    components = site_components(sae, inputs.x)
    fires = firing_mask(inputs.pattern, causal, threshold, skip_first_key, inputs.window)
    head_scale = inputs.scores.abs().amax(dim=(0, 2, 3)).clamp_min(1e-12)  # masked entries are 0
    pairs = fires.nonzero(as_tuple=True)
    bases = [(each, _basis_projections(components, each)) for each in [svd, *nulls]]
    parts = [
        _attribute_chunk(components, inputs, bases, tuple(p[s : s + _PAIR_CHUNK] for p in pairs), offsets_used)
        for s in range(0, len(pairs[0]), _PAIR_CHUNK)
    ]
    active = torch.unique(components.latents[components.acts > 0]).numpy()
    if not parts:
        return {"active_latents": active}
    result = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    result["relative_error"] = result["relative_error"] / head_scale[result["head"]].numpy()
    worst = float(result["relative_error"].max())
    if not worst <= MAX_ATTRIBUTION_ERROR:
        raise ArithmeticError(
            f"latent-pair attribution sums to the model's scores only to {worst:.2e} (relative), "
            f"tolerance {MAX_ATTRIBUTION_ERROR:g}: SAE components, SVD and head inputs disagree"
        )
    return {**result, "active_latents": active}


def _attribute_chunk(
    components: SiteComponents,
    inputs: LayerInputs,
    bases: list[tuple[HeadSVD, tuple[torch.Tensor, torch.Tensor]]],
    index: tuple[torch.Tensor, ...],
    offsets_used: bool,
) -> dict[str, np.ndarray]:
    """:func:`attribute_pairs` on one chunk of pairs ``index = (b, h, t, j)``, each ``[n]``.

    ``bases``: the layer's SVD then each null draw, with :func:`_basis_projections` of the chunk's components.
    """
    b, h, t, j = index
    n, k = len(b), components.acts.shape[-1]
    delta = (t - j).clamp(min=0) if offsets_used else torch.zeros_like(t)
    (svd, projected), *nulls = bases
    query, key, sigma = _singular_projections(projected, svd, index, delta)
    scale = torch.ones(n)
    if inputs.query_scale is not None:  # q/k-norm models: the logit carries 1/(ρ_q(t) ρ_k(j))
        scale = inputs.query_scale[b, h, t] * inputs.key_scale[b, h, j]
    matrix = torch.einsum("nar,nr,nbr->nab", query, sigma, key) * scale[:, None, None]  # M_ab
    logit = inputs.scores[b, h, t, j]
    latent_block = matrix[:, :k, :k].abs().flatten(1)
    dominant = latent_block.argmax(-1)
    query_pos, key_pos = dominant // k, dominant % k
    acts_t, acts_j = components.acts[b, t], components.acts[b, j]
    rows = torch.arange(n)

    def matches(q: torch.Tensor, kk: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        top = _dominant_term(q, kk, s)
        u_pos, v_pos = _aligned_latent(q, acts_t, top), _aligned_latent(kk, acts_j, top)
        return top, u_pos, v_pos

    top, u_pos, v_pos = matches(query, key, sigma)
    null_hits = torch.zeros(n)
    for draw, draw_projected in nulls:
        _, u_null, v_null = matches(*_singular_projections(draw_projected, draw, index, delta))
        null_hits += ((u_null == query_pos) & (v_null == key_pos)).float()
    n_active = (acts_t > 0).sum(-1).clamp_min(1) * (acts_j > 0).sum(-1).clamp_min(1)
    return {
        "b": b.numpy(),
        "head": h.numpy(),
        "t": t.numpy(),
        "j": j.numpy(),
        "logit": logit.numpy(),
        "relative_error": (matrix.sum((1, 2)) - logit).abs().numpy(),  # divided by the head's scale by the caller
        "query_latent": components.latents[b, t][rows, query_pos].numpy(),
        "key_latent": components.latents[b, j][rows, key_pos].numpy(),
        "pair_share": (matrix[rows, query_pos, key_pos].abs() / matrix.abs().sum((1, 2)).clamp_min(1e-30)).numpy(),
        "latent_share": (matrix[:, :k, :k].sum((1, 2)) / logit).numpy(),
        "top_rank": top.numpy(),
        "u_latent": components.latents[b, t][rows, u_pos].numpy(),
        "v_latent": components.latents[b, j][rows, v_pos].numpy(),
        "match": ((u_pos == query_pos) & (v_pos == key_pos)).numpy(),
        "null_match": (null_hits / max(len(nulls), 1)).double().numpy(),
        "chance": (1.0 / n_active.double()).numpy(),
    }
