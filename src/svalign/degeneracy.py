"""Degeneracy-aware spectra: which singular directions of a head are individually defined (torch-free).

A singular vector is defined (up to sign) only when its σ is separated from its neighbours'. Inside a block of
(near-)equal singular values, any rotation of the block's u_k (with the same rotation of its v_k) is an equally
valid SVD: only the block's subspaces and its part of the matrix, Σ_{k∈B} σ_k u_k v_kᵀ, are defined. A small
perturbation of the weights (training noise, float32 round-off) rotates the vectors inside the block freely, so a
per-direction statistic there — a vocabulary read-out, a SAD share at rank k, an alignment with a feature — reports
one arbitrary basis, not a property of the head. Directions below the numerical rank (σ_k ≤ ``rank_rtol`` · σ_1)
are not resolved by the SVD at all.

:func:`spectrum_blocks` groups the singular values of every (head, offset) at once: adjacent σ_k ≥ σ_{k+1} share a
block when their relative gap (σ_k − σ_{k+1}) / σ_k is below ``gap``; every direction below the numerical rank goes
into one last block (the numerical null space). :func:`spectra_columns` gives the rows of
:data:`svalign.tables.HEAD_DEGENERACY_BLOCKS`; :func:`block_sums` regroups any per-direction quantity by block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from svalign.io import tensor

__all__ = [
    "SVD_COLUMNS",
    "SpectrumBlocks",
    "block_sums",
    "degenerate_within",
    "spectra_columns",
    "spectrum_blocks",
    "svd_columns",
]

SVD_COLUMNS = ("model", "variant", "layer", "head", "offset", "sigma")
"""The ``head_svd`` columns the spectra read."""


@dataclass(frozen=True)
class SpectrumBlocks:
    """Blocks of a batch of spectra ``[..., r]`` (σ descending).

    Attributes:
        block: ``[..., r]`` int64 block index of each direction, 0 for the first, non-decreasing along k; the
            directions below the numerical rank share the last block.
        numerical_rank: ``[...]`` number of directions with σ_k > rank_rtol · σ_1 (a prefix, as σ descends).
        relative_gap: ``[..., r − 1]`` (σ_k − σ_{k+1}) / σ_k (1 where σ_k = 0).
    """

    block: np.ndarray
    numerical_rank: np.ndarray
    relative_gap: np.ndarray

    @property
    def block_size(self) -> np.ndarray:
        """``[..., r]``: the number of directions in each direction's block."""
        flat = self.block.reshape(-1, self.block.shape[-1])
        offset = (np.arange(len(flat)) * flat.shape[-1])[:, None]
        counts = np.bincount((flat + offset).ravel(), minlength=flat.size)
        return counts[flat + offset].reshape(self.block.shape)

    @property
    def resolved(self) -> np.ndarray:
        """``[..., r]`` bool: the direction is above the numerical rank."""
        return np.arange(self.block.shape[-1]) < self.numerical_rank[..., None]


def spectrum_blocks(sigma: np.ndarray, gap: float, rank_rtol: float) -> SpectrumBlocks:
    """Group every spectrum of a batch into degenerate blocks (see the module doc).

    Args:
        sigma: ``[..., r]`` singular values, descending along the last axis.
        gap: adjacent σ with (σ_k − σ_{k+1}) / σ_k < gap share a block (config ``explorer.degeneracy_gap``).
        rank_rtol: σ_k ≤ rank_rtol · σ_1 is below the numerical rank (config ``explorer.rank_rtol``).
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.shape[-1] == 0:
        raise ValueError("empty spectrum")
    if np.any(np.diff(sigma, axis=-1) > 1e-6 * np.abs(sigma[..., :1])):
        raise ValueError("singular values must be sorted in descending order")
    resolved = sigma > rank_rtol * sigma[..., :1]
    upper, lower = sigma[..., :-1], sigma[..., 1:]
    relative_gap = np.divide(upper - lower, upper, out=np.ones_like(upper), where=upper > 0)
    # k and k + 1 share a block: both resolved and close, or both below the numerical rank (one null block).
    join = np.where(resolved[..., 1:], relative_gap < gap, ~resolved[..., :-1])
    starts = np.concatenate([np.zeros_like(join[..., :1]), ~join], axis=-1)
    block = np.cumsum(starts, axis=-1, dtype=np.int64)
    return SpectrumBlocks(block, resolved.sum(-1).astype(np.int64), relative_gap)


def degenerate_within(blocks: SpectrumBlocks, top: int) -> np.ndarray:
    """``[...]`` bool: some direction k < ``top`` lies in a block of two or more *resolved* directions.

    A block that starts inside the top ``top`` and ends beyond it counts (its first directions are ill-defined).
    """
    size = blocks.block_size[..., :top]
    return ((size > 1) & blocks.resolved[..., :top]).any(-1)


def _first_degenerate(blocks: SpectrumBlocks) -> np.ndarray:
    """``[...]`` int64: the first direction in a block of two or more resolved directions (−1 if none)."""
    degenerate = (blocks.block_size > 1) & blocks.resolved
    return np.where(degenerate.any(-1), degenerate.argmax(-1), -1).astype(np.int64)


def block_sums(values: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Sum a per-direction quantity within blocks, vectorised over rows.

    Args:
        values: ``[n, r]`` (e.g. relative terms c_k of SAD pairs, or shares by σ rank).
        block: ``[n, r]`` block index of each direction (:attr:`SpectrumBlocks.block`).

    Returns:
        ``[n, r]``: column b holds the sum over the directions of block b (0 beyond the row's last block).
    """
    n, r = values.shape
    out = np.zeros((n, r), dtype=np.float64)
    np.add.at(out, (np.repeat(np.arange(n), r), block.ravel()), values.ravel())
    return out


def svd_columns(table: Any) -> dict[str, np.ndarray]:
    """:data:`SVD_COLUMNS` of a ``head_svd`` table (pyarrow), ``sigma`` as ``[rows, r]``."""
    columns = {name: table.column(name).to_numpy() for name in SVD_COLUMNS[:-1]}
    return {**columns, "sigma": tensor(table, "sigma")}


def spectra_columns(svd_columns: Mapping[str, Any], gap: float, rank_rtol: float, top: int) -> dict[str, Any]:
    """Columns of :data:`svalign.tables.HEAD_DEGENERACY_BLOCKS` from a ``head_svd`` table's key and σ columns.

    Args:
        svd_columns: ``model``, ``variant``, ``layer``, ``head``, ``offset`` (``[rows]``) and ``sigma [rows, r]``.
        gap, rank_rtol: see :func:`spectrum_blocks`; top: the leading directions ``degenerate_top`` looks at.
    """
    sigma = np.asarray(svd_columns["sigma"], dtype=np.float64)
    blocks = spectrum_blocks(sigma, gap, rank_rtol)
    gaps = blocks.relative_gap[:, : min(top, sigma.shape[-1] - 1)]
    return {
        **{name: svd_columns[name] for name in ("model", "variant", "layer", "head", "offset")},
        "sigma": sigma.astype(np.float32),
        "block": blocks.block,
        "numerical_rank": blocks.numerical_rank,
        "n_blocks": blocks.block.max(-1) + 1,
        "degenerate_top": degenerate_within(blocks, top),
        "first_degenerate": _first_degenerate(blocks),
        "min_gap_top": gaps.min(-1) if gaps.shape[-1] else np.ones(len(sigma)),
    }
