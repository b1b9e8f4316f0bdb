"""Null models for singular vectors: random directions that keep what a test does not ask about.

A test "the singular basis of a head is special" compares the real (U, Σ, V) with a null that keeps σ and replaces
the directions. Three nulls, from the loosest to the strictest (:data:`NULLS`):

* ``haar``: U → Q_U U, V → Q_V V with Haar-random orthogonal Q in the whole input space (the paper's
  spectrum-preserving rotation). Rotated vectors leave the subspace the head reads and land in directions the
  inputs hardly use.
* ``subspace``: U → U Q₁, V → V Q₂ with Haar-random Q ∈ O(r): a random orthonormal frame *inside* the head's own
  row / column space. It keeps the subspace the head reads and scrambles only the basis within it, so it isolates
  "the SVD basis" from "the subspace".
* ``covariance``: U, V replaced by orthonormalised directions drawn from N(0, M), M the second moment of the head
  inputs (:class:`SecondMoment`): random directions placed where the data has energy.

The second moment is uncentred, M = E[x̃ x̃ᵀ], because the decomposition reads x̃ · u, not (x̃ − mean) · u: the mean
is a direction the inputs use. With bias-augmented inputs x̃ = [x, 1] the constant coordinate enters as the 1 it
is (its row of M is [E x, 1]), so a drawn direction weighs the bias coordinate as much as the data does.

The draws act on the factored SVD of :class:`svalign.svd.HeadSVD` (bases ``[head, d, r]`` shared by every RoPE
offset; the per-offset cores are kept), so a null costs one ``[d, r]`` transform per head, not per offset. The
SAD stage (:mod:`svalign.sad.run`) and the SAE stage draw from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from svalign.definitions import NULLS
from svalign.svd import HeadSVD

__all__ = [
    "SecondMoment",
    "covariance_frames",
    "gaussian_directions",
    "haar_orthogonal",
    "haar_rotate",
    "moment_root",
    "null_generator",
    "null_svd",
    "orthonormal_columns",
    "random_frames",
    "random_orthogonal",
    "rotate_within",
    "seed_stream",
    "skip_null_draw",
]


def null_generator(seed: int, null: str) -> torch.Generator:
    """The generator of one null's draws: the Haar null draws from ``seed`` itself (its draws are those of every
    earlier run); the others from independent streams of it, so adding a null never changes another's draws."""
    index = NULLS.index(null)
    return torch.Generator().manual_seed(seed) if index == 0 else seed_stream(seed, index)


def seed_stream(seed: int, index: int) -> torch.Generator:
    """Stream ``index`` of ``seed``: a generator independent of the seed's other streams (numpy SeedSequence)."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# --------------------------------------------------------------------------------------------------
# Random orthogonal matrices and frames
# --------------------------------------------------------------------------------------------------


def haar_orthogonal(dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A Haar-distributed random orthogonal ``[dim, dim]`` matrix (QR of a Gaussian with sign correction)."""
    return random_orthogonal((), dim, generator).to(dtype)


def random_orthogonal(batch: Sequence[int], dim: int, generator: torch.Generator) -> torch.Tensor:
    """Independent Haar-random orthogonal matrices ``[*batch, dim, dim]`` in float64 (QR with sign correction)."""
    return random_frames(batch, dim, dim, generator)


def random_frames(batch: Sequence[int], dim: int, rank: int, generator: torch.Generator) -> torch.Tensor:
    """Independent Haar-random orthonormal frames ``[*batch, dim, rank]`` in float64: the sign-fixed QR of a
    Gaussian (:func:`orthonormal_columns`)."""
    return orthonormal_columns(torch.randn(*batch, dim, rank, generator=generator, dtype=torch.float64))


def haar_rotate(bases: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``Q @ bases`` for the Haar-random Q that :func:`haar_orthogonal` draws from the same generator state, without
    forming Q: the Householder reflectors of the Gaussian's QR are applied to the sign-corrected bases (LAPACK
    ormqr), which skips building the ``[dim, dim]`` Q and its product (a third of a draw's cost at d = 576).

    Args:
        bases: ``[..., dim, r]`` (e.g. ``[head, dim, r]``: one Q for every head); computed in float64, returned in
            ``bases.dtype``.
    """
    dim, rank = bases.shape[-2:]
    gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    reflectors, tau = torch.geqrf(gaussian)
    signs = torch.sign(torch.diagonal(reflectors)).unsqueeze(-1)  # Q_haar = Q · diag(sign(diag R))
    flat = bases.to(torch.float64).movedim(-2, 0).reshape(dim, -1)  # [dim, (...)·r]: one ormqr for all
    rotated = torch.ormqr(reflectors, tau, signs * flat)
    return rotated.reshape(dim, *bases.shape[:-2], rank).movedim(0, -2).to(bases.dtype)


def rotate_within(bases: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``bases @ Q`` with an independent Haar-random ``Q ∈ O(r)`` per leading index: a random orthonormal frame of
    the same column space (``bases [..., d, r]`` orthonormal columns; returned in ``bases.dtype``)."""
    rotation = random_orthogonal(bases.shape[:-2], bases.shape[-1], generator)
    return (bases.to(torch.float64) @ rotation).to(bases.dtype)


def orthonormal_columns(directions: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis ``[..., d, r]`` of the span of ``directions [..., d, r]`` (QR, signs fixed so the
    basis is a deterministic function of the directions)."""
    Q, R = torch.linalg.qr(directions)
    return Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)


# --------------------------------------------------------------------------------------------------
# The head inputs' second moment and directions drawn from it
# --------------------------------------------------------------------------------------------------


class SecondMoment:
    """Running uncentred second moment M = E[x xᵀ] of rows ``[..., d]`` per group (e.g. per layer), in float64.

    Args:
        groups: number of independent moments (layers); dim: d.
    """

    def __init__(self, groups: int, dim: int) -> None:
        self.sums = torch.zeros(groups, dim, dim, dtype=torch.float64)
        self.counts = torch.zeros(groups, dtype=torch.float64)

    def update(self, group: int, rows: torch.Tensor) -> None:
        """Add the rows ``[..., d]`` (every token of a chunk) to group ``group``."""
        flat = rows.reshape(-1, rows.shape[-1]).to(torch.float64)
        self.sums[group] += flat.T @ flat
        self.counts[group] += len(flat)

    @property
    def matrix(self) -> torch.Tensor:
        """``[groups, d, d]`` E[x xᵀ] (a group without rows raises: a null drawn from nothing is no null)."""
        if bool((self.counts == 0).any()):
            empty = torch.nonzero(self.counts == 0).flatten().tolist()
            raise ValueError(f"no rows were added to the second moment of group(s) {empty}")
        return self.sums / self.counts.view(-1, 1, 1)


def moment_root(moment: torch.Tensor) -> torch.Tensor:
    """A square root R ``[d, d]`` (float64) of a second moment, M = R Rᵀ, from ``eigh`` (negative rounding
    eigenvalues clamped to 0, so the rank-deficient moments of few tokens are accepted). Compute it once per
    moment: it costs more than the draws it serves."""
    values, vectors = torch.linalg.eigh(moment.to(torch.float64))
    return vectors * values.clamp_min(0).sqrt().unsqueeze(0)


def gaussian_directions(root: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` independent draws g ~ N(0, M) as columns ``[d, count]`` (float64), so E[g gᵀ] = M, from M's
    :func:`moment_root` ``root``."""
    return root @ torch.randn(root.shape[-1], count, generator=generator, dtype=torch.float64)


def covariance_frames(root: torch.Tensor, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Orthonormal frames ``[*shape[:-1], d, r]`` (float64) of ``r = shape[-1]`` directions each drawn from
    N(0, M) (:func:`gaussian_directions`; ``root``: M's :func:`moment_root`), one frame per leading index."""
    *batch, rank = shape
    count = int(np.prod(batch, dtype=np.int64)) * rank
    directions = gaussian_directions(root, count, generator)  # [d, frames · r]
    frames = directions.T.reshape(*batch, rank, root.shape[-1]).transpose(-1, -2)
    return orthonormal_columns(frames)


# --------------------------------------------------------------------------------------------------
# Null SVDs
# --------------------------------------------------------------------------------------------------


def skip_null_draw(svd: HeadSVD, null: str, generator: torch.Generator) -> None:
    """Advance ``generator`` exactly as :func:`null_svd` of ``svd`` would, without building the draw: the Gaussians
    it takes, in the same shapes and order (a consumer that needs a few layers' draws skips the other layers' QRs and
    still gets the same draws)."""
    heads, dim, rank = svd.basis_q.shape
    shape = {"haar": (dim, dim), "subspace": (heads, rank, rank), "covariance": (dim, heads * rank)}.get(null)
    if shape is None:
        raise ValueError(f"unknown null {null!r}; known: {', '.join(NULLS)}")
    for _ in ("query", "key"):
        torch.randn(*shape, generator=generator, dtype=torch.float64)


def null_svd(svd: HeadSVD, null: str, generator: torch.Generator, root: torch.Tensor | None = None) -> HeadSVD:
    """One draw of ``null`` for a layer's factored SVD (bases ``[head, d, r]``; σ and the per-offset cores kept).

    * ``haar``: one Q_U, then one Q_V in O(d), shared by the layer's heads (:func:`haar_rotate`).
    * ``subspace``: per head Q₁, then Q₂ in O(r): ``basis_q Q₁``, ``basis_k Q₂`` (:func:`rotate_within`); with the
      cores kept, U_δ → basis_q Q₁ core_u(δ), a random frame of the head's row space at every offset.
    * ``covariance``: per head new bases from directions drawn from N(0, M), query side then key side
      (:func:`covariance_frames`); ``root [d, d]``, M's :func:`moment_root`, is required.
    """
    if null == "haar":
        return svd._replace(basis_q=haar_rotate(svd.basis_q, generator), basis_k=haar_rotate(svd.basis_k, generator))
    if null == "subspace":
        return svd._replace(
            basis_q=rotate_within(svd.basis_q, generator), basis_k=rotate_within(svd.basis_k, generator)
        )
    if null == "covariance":
        if root is None:
            raise ValueError("the covariance null needs the root of the head inputs' second moment")
        shape = (svd.basis_q.shape[0], svd.basis_q.shape[-1])
        query, key = (covariance_frames(root, shape, generator) for _ in range(2))
        return svd._replace(basis_q=query.to(svd.basis_q.dtype), basis_k=key.to(svd.basis_k.dtype))
    raise ValueError(f"unknown null {null!r}; known: {', '.join(NULLS)}")
