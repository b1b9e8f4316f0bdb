"""Batched, factored SVD of every attention head's query-key form, per RoPE offset, kept factored.

An attention head's query-key matrix Ω = W_Q W_Kᵀ is ``[d_model, d_model]`` of rank at most ``d_head``; the
factored SVD (:mod:`svalign.linalg`) never forms it. This module adds what is specific to heads: the bias-augmented
factors, RoPE rotations ``Ω_δ = W_Q R_δ W_Kᵀ`` per query−key offset δ, bases shared by all offsets of a head
(:class:`HeadSVD`), the reconstruction error without forming Ω, and the stage's tables. The generic pieces
(:func:`factored_svd`, :func:`canonicalize_signs`, :class:`FactoredSVD`) are re-exported from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
import torch

from svalign.heads import theta_frequencies
from svalign.io import tensor
from svalign.linalg import (
    DEFAULT_METHOD,
    METHODS,
    FactoredSVD,
    canonicalize_signs,
    factored_core_svd,
    factored_svd,
    sign_of,
)

if TYPE_CHECKING:
    from svalign.models import HeadWeights

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "FactoredSVD",
    "HeadSVD",
    "ModelSVD",
    "canonicalize_signs",
    "check_reconstruction",
    "factored_svd",
    "head_factors",
    "model_offsets",
    "model_rotations",
    "model_svd",
    "qk_svd",
    "read_model_svd",
    "reconstruction_error",
    "rotary_matrices",
    "svd_tables",
]


# --------------------------------------------------------------------------------------------------
# Query-key matrices of attention heads: biases, rotary offsets, shared bases
# --------------------------------------------------------------------------------------------------


def _augment_with_bias(W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``[W; b]``: the factor of the bias-augmented form over ``x̃ = [x, 1]``.

    Args:
        W: ``[..., d_model, d_head]``; b: ``[..., d_head]`` or None (W returned unchanged).

    Returns:
        ``[..., d_model + 1, d_head]`` (or W).
    """
    if b is None:
        return W
    return torch.cat([W, b.unsqueeze(-2)], dim=-2)


def rotary_matrices(
    offsets: torch.Tensor,
    d_head: int,
    rotary_dim: int,
    base: float,
    style: str = "rotate_half",
    frequencies: torch.Tensor | None = None,
    factor: float = 1.0,
) -> torch.Tensor:
    """RoPE rotations ``R_δ`` in head space, row convention, so that ``q_t · k_j = q R_{t−j} kᵀ``.

    Rotate-half (GPT-NeoX / Llama / Pythia) pairs dimension i with i + rotary_dim/2 for i < rotary_dim/2,
    with frequency ``θ_i = base^(−2i/rotary_dim)``; dimensions ≥ rotary_dim (partial rotary, e.g. Pythia's
    16 of 64) are left alone. For a vector q at position p the model computes
    ``q_rot[i] = q[i] cos(pθ_i) − q[i+h] sin(pθ_i)``, ``q_rot[i+h] = q[i+h] cos(pθ_i) + q[i] sin(pθ_i)``,
    i.e. ``q_rot = q R_p`` with the matrix below; ``R_t R_jᵀ = R_{t−j}``. Interleaved (GPT-J) is the same rotation
    of the pairs (2i, 2i + 1) instead of (i, i + h).

    Args:
        offsets: query − key position offsets δ ``[n_offsets]``.
        style: ``rotate_half`` or ``interleaved``.
        frequencies: the θ_i ``[rotary_dim / 2]`` as the model computes them (rescaled RoPE), instead of ``base``'s.
        factor: the model's factor on cos and sin (YaRN, LongRoPE): q and k each carry it on the rotated
            dimensions, so ``R_δ``'s rotated block carries its square.

    Returns:
        ``[n_offsets, d_head, d_head]`` in the dtype of ``offsets`` (use float64 for accuracy).
    """
    if style not in ("rotate_half", "interleaved"):
        raise NotImplementedError(f"rotary style {style!r} is not supported (rotate_half, interleaved)")
    if rotary_dim % 2 or not 0 < rotary_dim <= d_head:
        raise ValueError(f"rotary_dim must be even and in (0, d_head={d_head}], got {rotary_dim}")
    half = rotary_dim // 2
    dtype = offsets.dtype if offsets.is_floating_point() else torch.float64
    if frequencies is None:
        frequencies = theta_frequencies(base, rotary_dim, offsets.device)
    angles = offsets.to(torch.float64)[:, None] * frequencies.to(device=offsets.device, dtype=torch.float64)
    cos, sin = angles.cos(), angles.sin()  # [n_offsets, half]
    if factor != 1.0:
        cos, sin = cos * factor**2, sin * factor**2
    cos, sin = cos.to(dtype), sin.to(dtype)
    R = torch.eye(d_head, dtype=dtype, device=offsets.device).repeat(len(offsets), 1, 1)
    index = torch.arange(half, device=offsets.device)
    first, second = (index, index + half) if style == "rotate_half" else (2 * index, 2 * index + 1)
    R[:, first, first] = cos
    R[:, second, second] = cos
    R[:, first, second] = sin
    R[:, second, first] = -sin
    return R


def model_rotations(
    weights: HeadWeights, offsets: torch.Tensor, device: torch.device, dtype: torch.dtype
) -> torch.Tensor | None:
    """The model's ``R_δ``: ``[n_offsets, d_head, d_head]`` shared by every layer, ``[L, 1, n_offsets, d_head, d_head]``
    when the layers' rotations differ (Gemma 3's θ bases, per-layer rescaled frequencies), or None without RoPE."""
    rotary = weights.rotary
    if rotary is None:
        return None
    offsets = offsets.to(device=device, dtype=torch.float64)

    def of(layer: int) -> torch.Tensor:
        frequencies = rotary.frequencies_of(layer) if rotary.frequencies else None
        return rotary_matrices(
            offsets,
            weights.d_head,
            rotary.dim,
            rotary.base_of(layer),
            rotary.style,
            frequencies,
            rotary.factor_of(layer),
        ).to(dtype)

    if not rotary.per_layer:
        return of(0)
    return torch.stack([of(layer) for layer in range(weights.n_layers)]).unsqueeze(1)


class HeadSVD(NamedTuple):
    """SVD of every head's (augmented, per-offset) QK form, kept factored.

    ``Ω_δ = A R_δ Bᵀ`` with ``A = Q_A R_A``, ``B = Q_B R_B`` (thin QR, shared by all offsets of a head), core
    ``C_δ = R_A R_δ R_Bᵀ = U_c Σ V_cᵀ``, so ``U_δ = Q_A U_c``, ``V_δ = Q_B V_c``. Storing the bases once per head
    and the ``[r, r]`` cores per offset is exact and ``d/r`` times smaller than ``U_δ``, ``V_δ`` per offset.

    Attributes:
        basis_q: ``Q_A [..., d, r]`` (orthonormal columns spanning the query factor).
        basis_k: ``Q_B [..., d, r]``.
        S: ``[..., n_offsets, r]`` singular values, descending.
        core_u: ``U_c [..., n_offsets, r, r]``; ``U = basis_q @ core_u``.
        core_v: ``V_c [..., n_offsets, r, r]``; ``V = basis_k @ core_v``.
    """

    basis_q: torch.Tensor
    basis_k: torch.Tensor
    S: torch.Tensor
    core_u: torch.Tensor
    core_v: torch.Tensor

    def U(self) -> torch.Tensor:
        """Left singular vectors ``[..., n_offsets, d, r]`` (materialised: mind the memory)."""
        return self.basis_q.unsqueeze(-3) @ self.core_u

    def V(self) -> torch.Tensor:
        """Right singular vectors ``[..., n_offsets, d, r]``."""
        return self.basis_k.unsqueeze(-3) @ self.core_v


def qk_svd(
    A: torch.Tensor, B: torch.Tensor, rotations: torch.Tensor | None = None, method: str = DEFAULT_METHOD
) -> HeadSVD:
    """Batched factored SVD of ``A R_δ Bᵀ`` for every head and offset, with canonical signs.

    Args:
        A: query factors ``[..., d, h]`` (e.g. ``[layer, head, d_model(+1), d_head]``).
        B: key factors, same shape.
        rotations: ``R_δ [n_offsets, h, h]`` or None (one offset, no rotation).
        method: ``qr`` (Householder, the reference) or ``cholesky_qr2`` (:func:`svalign.linalg.thin_qr`).

    Signs follow :func:`canonicalize_signs`, so results agree with a dense SVD of ``Ω_δ`` entry-wise.
    """
    if A.shape != B.shape:
        raise ValueError(f"A and B must have the same shape, got {tuple(A.shape)} and {tuple(B.shape)}")
    if rotations is None:  # one offset axis of length 1, so every model's HeadSVD has the same layout
        rotations = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).unsqueeze(0)
    parts = factored_core_svd(A, B, rotations, method)  # core_u, core_v: [..., n_offsets, r, r]
    # Canonical signs (see canonicalize_signs): the entries of u_k = Q_A U_c[:, k] sum to (1ᵀQ_A) U_c[:, k].
    column_sums = parts.basis_a.sum(dim=-2, keepdim=True).unsqueeze(-3) @ parts.core_u  # [..., n_offsets, 1, r]
    sign = sign_of(column_sums)
    return HeadSVD(parts.basis_a, parts.basis_b, parts.S, parts.core_u * sign, parts.core_v * sign)


def reconstruction_error(
    A: torch.Tensor, B: torch.Tensor, rotations: torch.Tensor | None, svd: HeadSVD
) -> torch.Tensor:
    """Relative Frobenius error ``‖A R_δ Bᵀ − U_δ Σ_δ V_δᵀ‖ / ‖A R_δ Bᵀ‖`` without forming any ``[d, d]`` matrix.

    With ``P = [A R_δ, −Q_A M_δ]`` and ``K = [B, Q_B]`` (``M_δ = U_c Σ V_cᵀ``), the error matrix is ``P Kᵀ`` and
    ``‖P Kᵀ‖² = tr(PᵀP KᵀK)``. The Gram blocks ``AᵀA``, ``Q_AᵀA``, ``BᵀB``, ``Q_BᵀB`` are computed once per head,
    so each offset costs a few ``[h, h]`` products. Everything is in float64; the identity subtracts terms of
    size ‖Ω‖², so errors below ~1e-8 relative read as ~1e-8 (ample to resolve float32 round-off, ~1e-7).

    Returns:
        ``[..., n_offsets]`` relative errors (float64).
    """
    f64 = torch.float64
    A, B = A.to(f64), B.to(f64)
    Q_A, Q_B = svd.basis_q.to(f64), svd.basis_k.to(f64)
    if rotations is None:
        rotations = torch.eye(A.shape[-1], dtype=f64, device=A.device).unsqueeze(0)
    R = rotations.to(f64)
    M = svd.core_u.to(f64) @ torch.diag_embed(svd.S.to(f64)) @ svd.core_v.to(f64).mT  # [..., n_off, r, r]
    # Per-head Grams, broadcast over offsets with unsqueeze(-3). Q_A, Q_B are orthonormal only to the working
    # precision, so their Grams are used as computed, not replaced by I (that would swamp float32 errors).
    AtA, QtA, QtQ_A = ((X.mT @ Y).unsqueeze(-3) for X, Y in ((A, A), (Q_A, A), (Q_A, Q_A)))
    BtB, QtB, QtQ_B = ((X.mT @ Y).unsqueeze(-3) for X, Y in ((B, B), (Q_B, B), (Q_B, Q_B)))
    RtAtA_R = R.mT @ AtA @ R  # (A R)ᵀ(A R)
    MtQtA_R = M.mT @ QtA @ R  # (Q_A M)ᵀ(A R)
    MtQtQ_M = M.mT @ QtQ_A @ M  # (Q_A M)ᵀ(Q_A M)
    # tr(PᵀP KᵀK), PᵀP = [[RᵀAᵀAR, −(MᵀQ_AᵀAR)ᵀ], [−MᵀQ_AᵀAR, MᵀQ_AᵀQ_AM]], KᵀK = [[BᵀB, BᵀQ_B], [Q_BᵀB, Q_BᵀQ_B]].
    norm2 = (RtAtA_R * BtB).sum((-1, -2))
    trace = norm2 - 2 * (MtQtA_R * QtB).sum((-1, -2)) + (MtQtQ_M * QtQ_B).sum((-1, -2))
    return trace.clamp_min(0).sqrt() / norm2.sqrt()


# --------------------------------------------------------------------------------------------------
# Stage: every head of a model, every RoPE offset
# --------------------------------------------------------------------------------------------------

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def head_factors(weights: HeadWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """The (bias-augmented) factors ``A = [W_Q; b_Q]``, ``B = [W_K; b_K]``, ``[L, H, d_model(+1), d_head]``."""
    if weights.b_Q is None and weights.b_K is None:
        return weights.W_Q, weights.W_K
    zeros = torch.zeros_like(weights.W_Q[..., 0, :])
    b_Q = weights.b_Q if weights.b_Q is not None else zeros
    b_K = weights.b_K if weights.b_K is not None else zeros
    return _augment_with_bias(weights.W_Q, b_Q), _augment_with_bias(weights.W_K, b_K)


def model_offsets(weights: HeadWeights, max_offset: int) -> torch.Tensor:
    """Query − key offsets δ needing their own Ω_δ: ``0..max_offset`` under RoPE, else just ``[0]``.

    The one place that decides whether a model's QK form depends on the offset; everything downstream reads the
    result from :attr:`ModelSVD.offsets` (or :attr:`ModelSVD.uses_offsets`), not from the model's weights again.

    Returns:
        ``[n_offsets]`` int64.
    """
    return torch.arange(max_offset + 1) if weights.rotary is not None else torch.zeros(1, dtype=torch.long)


@dataclass
class ModelSVD:
    """SVD of every head of one model variant (``[L, H, n_offsets, …]``, see :class:`HeadSVD`) plus checks.

    Attributes:
        svd: the heads' factored SVDs, offsets on axis 2 (``S [L, H, n_offsets, r]``).
        offsets: ``[n_offsets]`` int64, the offset δ = t − j of each entry of that axis, ascending, as decided by
            :func:`model_offsets`: ``0..max_offset`` for a RoPE model (a pair (t, j) reads the SVD of Ω_{t−j}),
            ``[0]`` for a model without RoPE (one Ω for every pair). :attr:`uses_offsets` says which.
        recon_error: ``[L, H, n_offsets]`` relative Frobenius reconstruction errors (float64).
        augmented: the factors carry the bias row (``d = d_model + 1``; inputs need a trailing 1).
    """

    svd: HeadSVD
    offsets: torch.Tensor
    recon_error: torch.Tensor
    augmented: bool

    @property
    def uses_offsets(self) -> bool:
        """Whether pairs (t, j) read the SVD of their own offset δ = t − j (RoPE), i.e. more than one offset.

        The config schema requires ``svd.max_offset >= 1``, so a RoPE model always has more than one offset.
        """
        return self.offsets.numel() > 1

    @property
    def max_offset(self) -> int:
        """The largest offset δ covered (0 without RoPE)."""
        return int(self.offsets.max())


def model_svd(
    weights: HeadWeights,
    max_offset: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "float32",
    method: str = DEFAULT_METHOD,
) -> ModelSVD:
    """One batched factored SVD for all heads × offsets of a model, with the reconstruction error of each.

    Args:
        weights: the model's heads.
        max_offset: largest RoPE offset (ignored without RoPE).
        device: where to compute (CUDA when given; results come back on the CPU).
        precision: ``float32`` (default) or ``float64`` (reference mode).
        method: how the factors are orthogonalised, ``qr`` or ``cholesky_qr2`` (config key ``svd.method``).
    """
    if method not in METHODS:
        raise ValueError(f"svd.method must be one of {', '.join(METHODS)}, got {method!r}")
    dtype = PRECISIONS[precision]
    device = torch.device(device)
    A, B = (t.to(device=device, dtype=dtype) for t in head_factors(weights))
    offsets = model_offsets(weights, max_offset)
    rotations = model_rotations(weights, offsets, device, dtype)
    result = qk_svd(A, B, rotations, method)
    error = reconstruction_error(A, B, rotations, result)
    cpu = HeadSVD(*(t.cpu() for t in result))
    return ModelSVD(cpu, offsets, error.cpu(), augmented=A.shape[-2] == weights.d_model + 1)


def svd_tables(result: ModelSVD, model: str, variant: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Column data for ``tables.HEAD_SVD`` (rows by layer, head, offset) and ``tables.HEAD_SVD_BASES``."""
    L, H, n_off, r = result.svd.S.shape
    per_head = {"model": [model] * (L * H), "variant": [variant] * (L * H)}
    layer, head = np.repeat(np.arange(L), H), np.tile(np.arange(H), L)
    rows = L * H * n_off
    svd = {
        "model": [model] * rows,
        "variant": [variant] * rows,
        "layer": np.repeat(layer, n_off),
        "head": np.repeat(head, n_off),
        "offset": np.tile(result.offsets.numpy(), L * H),
        "sigma": result.svd.S.reshape(rows, r).float().numpy(),
        "core_u": result.svd.core_u.reshape(rows, r, r).float().numpy(),
        "core_v": result.svd.core_v.reshape(rows, r, r).float().numpy(),
        "recon_error": result.recon_error.reshape(rows).numpy(),
    }
    bases = {
        **per_head,
        "layer": layer,
        "head": head,
        "augmented": [result.augmented] * (L * H),
        "basis_q": result.svd.basis_q.reshape(L * H, *result.svd.basis_q.shape[2:]).float().numpy(),
        "basis_k": result.svd.basis_k.reshape(L * H, *result.svd.basis_k.shape[2:]).float().numpy(),
    }
    return svd, bases


def read_model_svd(svd_table: pa.Table, bases_table: pa.Table) -> ModelSVD:
    """Rebuild :class:`ModelSVD` (``[L, H, n_offsets, …]`` tensors) from the two tables."""
    layer = svd_table.column("layer").to_numpy()
    head = svd_table.column("head").to_numpy()
    offsets = np.unique(svd_table.column("offset").to_numpy())
    L, H, n_off = int(layer.max()) + 1, int(head.max()) + 1, len(offsets)
    if svd_table.num_rows != L * H * n_off or bases_table.num_rows != L * H:
        raise ValueError("head_svd / head_svd_bases do not cover every (layer, head, offset)")

    def grid(table: pa.Table, name: str, *lead: int) -> torch.Tensor:
        array = tensor(table, name)
        return torch.from_numpy(array.reshape(*lead, *array.shape[1:]).copy())  # Arrow buffers are read-only

    svd = HeadSVD(
        basis_q=grid(bases_table, "basis_q", L, H),
        basis_k=grid(bases_table, "basis_k", L, H),
        S=grid(svd_table, "sigma", L, H, n_off),
        core_u=grid(svd_table, "core_u", L, H, n_off),
        core_v=grid(svd_table, "core_v", L, H, n_off),
    )
    error = torch.from_numpy(svd_table.column("recon_error").to_numpy().reshape(L, H, n_off).copy())
    return ModelSVD(svd, torch.from_numpy(offsets), error, bool(bases_table.column("augmented")[0].as_py()))


def check_reconstruction(result: ModelSVD, tolerance: float) -> None:
    """Raise if any head/offset reconstructs Ω_δ worse than ``tolerance`` (relative Frobenius)."""
    worst = float(result.recon_error.max())
    if not worst <= tolerance:  # also catches NaN
        index = tuple(int(i) for i in np.unravel_index(int(result.recon_error.argmax()), result.recon_error.shape))
        raise ArithmeticError(
            f"SVD reconstruction error {worst:.3g} at (layer, head, offset index) {index} exceeds "
            f"svd.max_recon_error = {tolerance:g}; try svd.precision: float64"
        )
