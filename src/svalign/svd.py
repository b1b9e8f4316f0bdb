"""Batched, factored SVD of low-rank bilinear forms Ω = A Bᵀ.

An attention head's query-key matrix Ω = W_Q W_Kᵀ is ``[d_model, d_model]`` but has rank at most
``d_head``. Forming Ω and calling a dense SVD wastes work (and LAPACK is slow on exactly rank-deficient
input). The factored route never forms Ω:

    A = Q_A R_A,  B = Q_B R_B              (thin QR, [..., d, r] and [..., r, r])
    C = R_A R_Bᵀ                           ([..., r, r] core)
    C = U_c diag(σ) V_cᵀ                   (small SVD)
    U = Q_A U_c,  V = Q_B V_c

All operations broadcast over leading batch dimensions, so every head of every layer (and every RoPE
offset) goes through one call. As in TransformerLens' ``FactoredMatrix.svd()``, V is returned as V
(columns are right singular vectors), not Vᵀ.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["FactoredSVD", "canonicalize_signs", "factored_svd"]


class FactoredSVD(NamedTuple):
    """Singular triplets of ``A Bᵀ`` (σ descending).

    Attributes:
        U: left singular vectors ``[..., d_a, r]``.
        S: singular values ``[..., r]``.
        V: right singular vectors ``[..., d_b, r]`` (not transposed).
    """

    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor


def canonicalize_signs(U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fix the arbitrary sign of each singular pair.

    The entry of largest magnitude of each ``u_k`` is made positive and ``v_k`` is flipped with it, so
    ``u_k σ_k v_kᵀ`` is unchanged and two SVDs of the same matrix agree entry-wise (for distinct σ).

    Args:
        U: ``[..., d_a, r]``; V: ``[..., d_b, r]``.
    """
    pivot = U.abs().argmax(dim=-2, keepdim=True)  # [..., 1, r]
    sign = torch.sign(torch.gather(U, -2, pivot))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return U * sign, V * sign


def factored_svd(A: torch.Tensor, B: torch.Tensor) -> FactoredSVD:
    """SVD of ``A Bᵀ`` from its factors, batched over leading dimensions, with canonical signs.

    Args:
        A: ``[..., d_a, h]`` (e.g. W_Q ``[layer, head, d_model, d_head]``).
        B: ``[..., d_b, h]`` (e.g. W_K), broadcastable with ``A`` in the leading dimensions.

    Returns:
        :class:`FactoredSVD` with ``r = min(d_a, d_b, h)`` triplets.
    """
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(f"inner dimensions differ: A {tuple(A.shape)}, B {tuple(B.shape)}")
    Q_A, R_A = torch.linalg.qr(A, mode="reduced")  # [..., d_a, k_a], [..., k_a, h]
    Q_B, R_B = torch.linalg.qr(B, mode="reduced")
    core = R_A @ R_B.mT  # [..., k_a, k_b]
    U_c, S, Vh_c = torch.linalg.svd(core, full_matrices=False)
    U, V = canonicalize_signs(Q_A @ U_c, Q_B @ Vh_c.mT)
    rank = min(A.shape[-2], B.shape[-2], A.shape[-1])
    return FactoredSVD(U[..., :rank], S[..., :rank], V[..., :rank])
