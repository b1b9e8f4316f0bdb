"""Singular vectors against SAE decoder directions: best |cos| per singular vector, against a Haar-frame null.

For every head at a site, the singular vectors u_k, v_k of its QK form (offset δ = 0 under RoPE) are compared with
every decoder direction d_a of the site's SAE: ``best_cos(u_k) = max_a |cos(u_k, d̃_a)|`` with ``d̃_a = [d_a, 0]``
when the SVD is over bias-augmented inputs (the decoder never writes the constant coordinate). A head's statistic
is the mean best |cos| over u_1..u_n and v_1..v_n (n = ``sae.top_singular``).

The null is the spectrum-preserving rotation of the SAD stage: U → Q_U U with Haar Q_U. Its columns form a
Haar-random orthonormal frame whatever U was, so the null does not depend on the head and is drawn once per site:
``null_draws`` frames of r columns per side; their r / n disjoint groups of n columns each give one null statistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from svalign.svd import ModelSVD

__all__ = [
    "SiteAlignment",
    "alignment_columns",
    "best_cos",
    "grouped_statistic",
    "haar_frames",
    "null_best_cos",
    "site_alignment",
    "unit_directions",
]

_CHUNK_DRAWS = 8


def unit_directions(decoder: torch.Tensor, d_input: int) -> torch.Tensor:
    """Unit decoder rows ``[n_latents, d_input]``, zero-padded on the bias coordinate of augmented inputs."""
    rows = decoder / decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.nn.functional.pad(rows, (0, d_input - rows.shape[1]))


def best_cos(directions: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """max_a |cos| of each column of ``vectors`` ``[..., d, r]`` (unit columns) with ``directions`` ``[n, d]``.

    Returns:
        (best |cos| ``[..., r]``, the latent attaining it ``[..., r]``).
    """
    cos = (directions @ vectors).abs()  # [..., n, r]
    best, latent = cos.max(dim=-2)
    return best, latent


def haar_frames(draws: int, d: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """``[draws, d, r]`` Haar-random orthonormal frames (QR of a Gaussian with the sign of R's diagonal fixed)."""
    gaussian = torch.randn(draws, d, r, generator=generator, dtype=torch.float64)
    q, upper = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(upper, dim1=-2, dim2=-1)).unsqueeze(-2)).float()


def null_best_cos(directions: torch.Tensor, draws: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """best |cos| of the columns of ``draws`` Haar frames with ``directions`` ``[n, d]``: ``[draws, r]``."""
    parts = []
    for start in range(0, draws, _CHUNK_DRAWS):
        frames = haar_frames(min(_CHUNK_DRAWS, draws - start), directions.shape[1], r, generator)
        parts.append(best_cos(directions, frames.to(directions.device))[0].cpu())
    return torch.cat(parts)


def grouped_statistic(best_u: torch.Tensor, best_v: torch.Tensor, n: int) -> torch.Tensor:
    """Mean best |cos| over disjoint groups of n columns of both sides: ``[..., r]`` each → ``[..., r // n]``."""
    groups = best_u.shape[-1] // n
    both = torch.stack([best_u[..., : groups * n], best_v[..., : groups * n]], -1)  # [..., groups·n, 2]
    return both.unflatten(-2, (groups, n)).mean(dim=(-2, -1))


@dataclass
class SiteAlignment:
    """One site's alignment, real heads and null.

    Attributes:
        best: side → ``[head, r]`` best |cos| of u_k (``"u"``) or v_k (``"v"``); latent: side → ``[head, r]``.
        sigma: ``[head, r]`` σ_k at offset 0.
        statistic: ``[head]`` mean best |cos| of the top-n singular vectors of both sides.
        null_best: ``[2 · draws, r]`` best |cos| of the null frames' columns (both sides pooled).
        null_statistic: ``[samples]`` the statistic of the null's column groups.
    """

    best: dict[str, torch.Tensor]
    latent: dict[str, torch.Tensor]
    sigma: torch.Tensor
    statistic: torch.Tensor
    null_best: torch.Tensor
    null_statistic: torch.Tensor


def site_alignment(
    model_svd: ModelSVD, layer: int, decoder: torch.Tensor, top_singular: int, null_draws: int, null_seed: int
) -> SiteAlignment:
    """Alignment of every head of ``layer`` with the unit rows of ``decoder`` ``[n_latents, d_model]``.

    Raises:
        ValueError: ``top_singular`` above the heads' rank.
    """
    svd = model_svd.svd
    rank = svd.S.shape[-1]
    if top_singular > rank:
        raise ValueError(f"sae.top_singular = {top_singular} exceeds the heads' rank {rank}")
    directions = unit_directions(decoder.float(), svd.basis_q.shape[-2])
    sides = ((svd.basis_q, svd.core_u), (svd.basis_k, svd.core_v))
    at_zero = [basis[layer] @ core[layer, :, 0] for basis, core in sides]  # [head, d_in, r] at offset 0
    best, latent = {}, {}
    for side, vectors in zip("uv", at_zero, strict=True):
        best[side], latent[side] = best_cos(directions, vectors)  # vectors: [head, d_in, r]
    generator = torch.Generator().manual_seed(null_seed)
    null_u = null_best_cos(directions, null_draws, rank, generator)
    null_v = null_best_cos(directions, null_draws, rank, generator)
    return SiteAlignment(
        best=best,
        latent=latent,
        sigma=svd.S[layer, :, 0],
        statistic=grouped_statistic(best["u"], best["v"], top_singular)[:, 0],
        null_best=torch.cat([null_u, null_v]),
        null_statistic=grouped_statistic(null_u, null_v, top_singular).flatten(),
    )


def alignment_columns(
    result: SiteAlignment, keys: dict[str, Any], frequency: np.ndarray, null_quantile: float
) -> dict[str, Any]:
    """Column data for :data:`svalign.tables.SAE_ALIGNMENT`: rows by (head, side, rank) of one site/variant.

    ``keys``: ``{"model", "variant", "layer"}``.
    """
    n_heads, rank = result.sigma.shape
    null_pooled = result.null_best.flatten().double()
    null_mean, null_top = float(null_pooled.mean()), float(torch.quantile(null_pooled, null_quantile))
    rows = n_heads * 2 * rank
    best = torch.stack([result.best["u"], result.best["v"]], 1).flatten().double().numpy()
    latent = torch.stack([result.latent["u"], result.latent["v"]], 1).flatten().numpy()
    return {
        "model": [keys["model"]] * rows,
        "variant": [keys["variant"]] * rows,
        "layer": np.full(rows, keys["layer"]),
        "head": np.repeat(np.arange(n_heads), 2 * rank),
        "side": np.tile(np.repeat(["u", "v"], rank), n_heads).tolist(),
        "rank": np.tile(np.arange(rank), 2 * n_heads),
        "sigma": result.sigma.double().unsqueeze(1).expand(-1, 2, -1).flatten().numpy(),
        "best_cos": best,
        "latent": latent,
        "frequency": frequency[latent],
        "null_mean": np.full(rows, null_mean),
        "null_upper": np.full(rows, null_top),
    }
