"""Batched factored SVD of low-rank bilinear forms Ω = A Bᵀ, with two ways to orthogonalise the factors.

An attention head's query-key matrix Ω = W_Q W_Kᵀ is ``[d_model, d_model]`` but has rank at most
``d_head``. Forming Ω and calling a dense SVD wastes work (and LAPACK is slow on exactly rank-deficient
input). The factored route never forms Ω:

    A = Q_A R_A,  B = Q_B R_B              (thin QR, [..., d, h] and [..., h, h])
    C = R_A R_Bᵀ                           ([..., h, h] core)
    C = U_c diag(σ) V_cᵀ                   (small SVD)
    U = Q_A U_c,  V = Q_B V_c

All operations broadcast over leading batch dimensions, so every head of every layer (and every RoPE
offset) goes through one call. As in TransformerLens' ``FactoredMatrix.svd()``, V is returned as V
(columns are right singular vectors), not Vᵀ.

The thin QR (``method``):

* ``qr`` — Householder QR (``torch.linalg.qr``), the reference. On CUDA it rebuilds Q with one ``orgqr``
  per matrix (cuSOLVER has no batched ``orgqr``).
* ``cholesky_qr2`` — Cholesky-QR, twice: ``G = XᵀX`` in float64, ``G = RᵀR`` (Cholesky), ``Q = X R⁻¹``, and
  the same again on Q, so ``X = Q (R₂R₁)``. Only Gram products, batched Cholesky and matrix products: every
  step is one batched kernel on a GPU. The float64 Gram makes the first pass good to cond(X) ≈ 1e7 in float32
  (the second pass restores orthogonality to working precision). Matrices where it cannot work — a rank-
  deficient or zero factor (semidefinite Gram), or a second-pass Gram further than 0.5 from I — are detected
  per matrix and sent through Householder QR instead, so the result is always a valid thin QR.

With ``cholesky_qr2`` the r×r cores are formed and decomposed in float64 by the best batched SVD available
(:func:`core_svd`): LAPACK on the CPU; on CUDA ``gesvdjBatched`` up to 32×32 and, above, ``gesvda`` (batched for
any size), with every core's residual and orthogonality checked and the rare failure redone by the default driver.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "FactoredSVD",
    "UnsignedSVD",
    "canonicalize_signs",
    "cholesky_qr2",
    "core_svd",
    "core_svd_driver",
    "factored_core_svd",
    "factored_svd",
    "repair_svd",
    "sign_of",
    "thin_qr",
]

METHODS = ("qr", "cholesky_qr2")
"""Ways to orthogonalise the factors (config key ``svd.method``)."""
DEFAULT_METHOD = "qr"
"""The default ``svd.method``: Householder QR (docs/performance.md has the measurements)."""
GRAM_DEVIATION_LIMIT = 0.5
"""Largest ‖Q₁ᵀQ₁ − I‖_F after the first Cholesky pass for which the second pass is trusted (cond(Q₁)² ≤ 3)."""
GESVDJ_BATCHED_MAX = 32
"""cuSOLVER's ``gesvdjBatched`` (torch's batched CUDA SVD) handles matrices up to this size; above, torch loops."""
SVD_CHECK_TOLERANCE = 1e-10
"""Relative residual and orthogonality a float64 core SVD must meet before it is accepted (see :func:`repair_svd`)."""


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

    Each ``u_k`` is flipped so that its entries sum to a positive number, and ``v_k`` is flipped with it, so
    ``u_k σ_k v_kᵀ`` is unchanged and two SVDs of the same matrix agree entry-wise (for distinct σ). The sum
    (rather than, say, the largest entry) is used because it is linear: for ``U = Q U_c`` it is
    ``(1ᵀQ) U_c``, so factored SVDs fix signs without materialising U.

    Args:
        U: ``[..., d_a, r]``; V: ``[..., d_b, r]``.
    """
    sign = sign_of(U.sum(dim=-2, keepdim=True))  # [..., 1, r]
    return U * sign, V * sign


def sign_of(values: torch.Tensor) -> torch.Tensor:
    """±1 per entry (+1 for 0), in the dtype of ``values``."""
    return torch.where(values < 0, -1.0, 1.0).to(values.dtype)


# --------------------------------------------------------------------------------------------------
# Thin QR of the factors
# --------------------------------------------------------------------------------------------------


def _cholesky_pass(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Cholesky-QR pass: ``G = XᵀX`` (float64), ``G = RᵀR``, ``Q = X R⁻¹`` (working precision).

    ``R⁻¹`` is formed by a batched triangular solve against I and applied as one matrix product (on the CPU this
    beats a right-hand triangular solve with X; on CUDA both are batched).

    Args:
        X: ``[..., d, h]`` with ``d >= h``.

    Returns:
        ``Q [..., d, h]`` (dtype of X), ``R [..., h, h]`` (float64, upper triangular), ``G [..., h, h]`` (float64)
        and ``ok [...]``: the Cholesky factorisation succeeded (G numerically positive definite).
    """
    X64 = X.to(torch.float64)
    G = X64.mT @ X64
    R, info = torch.linalg.cholesky_ex(G, upper=True)
    eye = torch.eye(X.shape[-1], dtype=torch.float64, device=X.device)
    R_inv = torch.linalg.solve_triangular(R, eye.expand_as(R), upper=True)
    return X @ R_inv.to(X.dtype), R, G, info == 0


def cholesky_qr2(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cholesky-QR2 of tall factors, batched: ``X = Q R`` with ``QᵀQ = I`` to working precision where ``ok``.

    Pass 1 gives ``X = Q₁ R₁``; pass 2 re-orthogonalises ``Q₁ = Q R₂``; ``R = R₂ R₁``. A matrix is ``ok`` when
    both Cholesky factorisations succeed, everything is finite and ``‖Q₁ᵀQ₁ − I‖_F ≤ 0.5`` (then cond(Q₁)² ≤ 3 and
    the second pass is accurate). Matrices that are not ``ok`` (rank-deficient or zero factors, cond ≳ 1e7 in
    float32) hold garbage here: :func:`thin_qr` replaces them.

    Args:
        X: ``[..., d, h]`` with ``d >= h``.

    Returns:
        ``Q [..., d, h]`` (dtype of X), ``R [..., h, h]`` (float64, upper triangular, positive diagonal), ``ok [...]``.
    """
    Q1, R1, _, ok1 = _cholesky_pass(X)
    Q, R2, G2, ok2 = _cholesky_pass(Q1)
    eye = torch.eye(X.shape[-1], dtype=torch.float64, device=X.device)
    deviation = (G2 - eye).square().sum((-1, -2)).sqrt()
    R = R2 @ R1
    finite = torch.isfinite(R).all(-1).all(-1) & torch.isfinite(Q).all(-1).all(-1)
    return Q, R, ok1 & ok2 & (deviation <= GRAM_DEVIATION_LIMIT) & finite


def thin_qr(X: torch.Tensor, method: str = DEFAULT_METHOD) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR of every matrix of a batch by ``method`` (see the module doc).

    ``qr`` is ``torch.linalg.qr(X, mode="reduced")``. ``cholesky_qr2`` needs tall factors (``d >= h``; wide ones
    go to Householder whole) and sends the matrices :func:`cholesky_qr2` flags to Householder QR, one batched
    call for all of them.

    Args:
        X: ``[..., d, h]``.

    Returns:
        ``Q [..., d, k]`` (dtype of X), ``R [..., k, h]`` (``k = min(d, h)``; float64 for ``cholesky_qr2``, else the
        dtype of X).
    """
    if method not in METHODS:
        raise ValueError(f"unknown SVD method {method!r}; choose one of {', '.join(METHODS)}")
    d, h = X.shape[-2:]
    if method == "qr" or d < h or X.numel() == 0:
        return torch.linalg.qr(X, mode="reduced")
    Q, R, ok = cholesky_qr2(X)
    if not bool(ok.all()):  # one device sync; usually nothing to redo
        bad = (~ok).reshape(-1).nonzero().squeeze(1)
        Q_bad, R_bad = torch.linalg.qr(X.reshape(-1, d, h)[bad], mode="reduced")
        Q = Q.reshape(-1, d, h).index_copy(0, bad, Q_bad).reshape(Q.shape)
        R = R.reshape(-1, h, h).index_copy(0, bad, R_bad.to(R.dtype)).reshape(R.shape)
    return Q, R


# --------------------------------------------------------------------------------------------------
# The r×r cores
# --------------------------------------------------------------------------------------------------


def core_svd_driver(device: torch.device, size: int) -> str | None:
    """The ``torch.linalg.svd`` driver for a batch of ``size × size`` cores on ``device``.

    CPU: None (LAPACK). CUDA: None up to 32 (torch uses the batched ``gesvdjBatched``), ``gesvda`` above (the
    default would loop ``gesvdj`` over the batch, one matrix at a time).
    """
    if device.type == "cuda" and size > GESVDJ_BATCHED_MAX:
        return "gesvda"
    return None


def repair_svd(
    C: torch.Tensor, U: torch.Tensor, S: torch.Tensor, V: torch.Tensor, tolerance: float = SVD_CHECK_TOLERANCE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check a batch of SVDs ``C = U diag(S) Vᵀ`` and redo the failing ones with the default driver.

    A matrix passes when ``‖C − U S Vᵀ‖_F ≤ tol ‖C‖_F``, ``‖UᵀU − I‖_max ≤ tol``,
    ``‖VᵀV − I‖_max ≤ tol`` and S is finite. (``gesvda`` works on the Gram matrix CᵀC: its vectors of tiny σ can
    lose orthogonality, which this catches.)

    Args:
        C: ``[..., m, n]`` float64; U: ``[..., m, k]``; S: ``[..., k]``; V: ``[..., n, k]``.
    """
    eye = torch.eye(S.shape[-1], dtype=C.dtype, device=C.device)
    residual = (C - (U * S.unsqueeze(-2)) @ V.mT).square().sum((-1, -2)).sqrt()
    scale = C.square().sum((-1, -2)).sqrt()
    ortho_u = (U.mT @ U - eye).abs().amax((-1, -2))
    ortho_v = (V.mT @ V - eye).abs().amax((-1, -2))
    good = (residual <= tolerance * scale) & (ortho_u <= tolerance) & (ortho_v <= tolerance) & S.isfinite().all(-1)
    if bool(good.all()):
        return U, S, V
    m, n, k = C.shape[-2], C.shape[-1], S.shape[-1]
    bad = (~good).reshape(-1).nonzero().squeeze(1)
    U_bad, S_bad, Vh_bad = torch.linalg.svd(C.reshape(-1, m, n)[bad], full_matrices=False)
    U = U.reshape(-1, m, k).index_copy(0, bad, U_bad).reshape(U.shape)
    S = S.reshape(-1, k).index_copy(0, bad, S_bad).reshape(S.shape)
    V = V.reshape(-1, n, k).index_copy(0, bad, Vh_bad.mT).reshape(V.shape)
    return U, S, V


def core_svd(core: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of a batch of small cores in float64 by the best batched routine (:func:`core_svd_driver`).

    Float64 because the cores of ``cholesky_qr2`` are float64-accurate (their R factors come from float64 Grams):
    a float32 SVD of them would be the largest error of the whole route (σ to ~1e-6 σ_1 instead of ~1e-7).

    Args:
        core: ``[..., m, n]`` (any float dtype).
        dtype: the dtype of the results.

    Returns:
        ``U_c [..., m, k]``, ``S [..., k]``, ``V_c [..., n, k]`` (``k = min(m, n)``; V_c, not V_cᵀ), in ``dtype``.
    """
    work = core.to(torch.float64)
    driver = core_svd_driver(core.device, min(core.shape[-2:]))
    if driver is None:
        U, S, Vh = torch.linalg.svd(work, full_matrices=False)
        return U.to(dtype), S.to(dtype), Vh.mT.to(dtype)
    try:  # gesvda goes through CᵀC: in float64 its σ stay accurate to ~1e-8 σ_1; vectors are checked below
        U, S, Vh = torch.linalg.svd(work, full_matrices=False, driver=driver)
    except RuntimeError:  # torch.linalg.LinAlgError: the driver did not converge on some core
        U, S, Vh = torch.linalg.svd(work, full_matrices=False)
    U, S, V = repair_svd(work, U, S, Vh.mT)
    return U.to(dtype), S.to(dtype), V.to(dtype)


# --------------------------------------------------------------------------------------------------
# Factored SVD
# --------------------------------------------------------------------------------------------------


class UnsignedSVD(NamedTuple):
    """Thin-QR bases and the SVD of the core, before the signs are fixed (see :func:`factored_core_svd`)."""

    basis_a: torch.Tensor
    basis_b: torch.Tensor
    core_u: torch.Tensor
    S: torch.Tensor
    core_v: torch.Tensor


def factored_core_svd(
    A: torch.Tensor, B: torch.Tensor, rotations: torch.Tensor | None, method: str = DEFAULT_METHOD
) -> UnsignedSVD:
    """The factored route shared by :func:`factored_svd` and ``svalign.svd.qk_svd``: thin QR of each factor, SVD
    of the core.

    ``A = Q_A R_A``, ``B = Q_B R_B`` (:func:`thin_qr`); the core is ``R_A R_Bᵀ`` without ``rotations`` and
    ``R_A R_δ R_Bᵀ`` per offset with them. Signs are left as the SVD returns them: the callers fix them.
    ``qr`` is the reference path, unchanged: Householder QR and ``torch.linalg.svd`` of the core in the working
    dtype. ``cholesky_qr2`` forms and decomposes the core in float64 (its R factors are float64; :func:`core_svd`).

    Args:
        A: ``[..., d_a, h]``; B: ``[..., d_b, h]``, broadcastable with ``A`` in the leading dimensions.
        rotations: ``R_δ [n_offsets, h, h]`` (adds an offset axis before the two matrix axes), or None.
        method: ``qr`` or ``cholesky_qr2``.

    Returns:
        ``basis_a`` Q_A ``[..., d_a, k_a]``, ``basis_b`` Q_B ``[..., d_b, k_b]`` (``k = min(d, h)``) and the core's
        ``core_u [..., (n_offsets,) k_a, k]``, ``S [..., (n_offsets,) k]``, ``core_v [..., (n_offsets,) k_b, k]``
        (``k = min(k_a, k_b)``; ``core_v`` is V_c, not V_cᵀ), all in the dtype of A.
    """
    Q_A, R_A = thin_qr(A, method)  # [..., d_a, k_a], [..., k_a, h]
    Q_B, R_B = thin_qr(B, method)
    if rotations is not None:  # an offset axis: R_A R_δ, [..., n_offsets, k_a, h], against R_B [..., 1, k_b, h]
        R_A, R_B = R_A.unsqueeze(-3) @ rotations.to(R_A.dtype), R_B.unsqueeze(-3)
    core = R_A @ R_B.mT  # [..., (n_offsets,) k_a, k_b]
    if method == "qr":
        core_u, S, core_vh = torch.linalg.svd(core, full_matrices=False)
        return UnsignedSVD(Q_A, Q_B, core_u, S, core_vh.mT)
    core_u, S, core_v = core_svd(core, A.dtype)
    return UnsignedSVD(Q_A, Q_B, core_u, S, core_v)


def factored_svd(A: torch.Tensor, B: torch.Tensor, method: str = DEFAULT_METHOD) -> FactoredSVD:
    """SVD of ``A Bᵀ`` from its factors, batched over leading dimensions, with canonical signs.

    The singular vectors are materialised (``U = Q_A U_c``) and their signs fixed by :func:`canonicalize_signs`;
    ``svalign.svd.qk_svd`` keeps them factored instead.

    Args:
        A: ``[..., d_a, h]`` (e.g. W_Q ``[layer, head, d_model, d_head]``).
        B: ``[..., d_b, h]`` (e.g. W_K), broadcastable with ``A`` in the leading dimensions.
        method: ``qr`` or ``cholesky_qr2`` (:func:`thin_qr`).

    Returns:
        :class:`FactoredSVD` with ``r = min(d_a, d_b, h)`` triplets.
    """
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(f"inner dimensions differ: A {tuple(A.shape)}, B {tuple(B.shape)}")
    parts = factored_core_svd(A, B, rotations=None, method=method)
    U, V = canonicalize_signs(parts.basis_a @ parts.core_u, parts.basis_b @ parts.core_v)
    rank = min(A.shape[-2], B.shape[-2], A.shape[-1])
    return FactoredSVD(U[..., :rank], parts.S[..., :rank], V[..., :rank])
