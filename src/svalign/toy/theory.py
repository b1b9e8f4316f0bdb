"""Theory of the toy: the closed-form optimum Ω* (paper Theorem 1 and corollary) and the anisotropic features of
Theorem 2 (Fig 4), with the closed-form side of the anisotropy table.

The training of the anisotropy sweep lives in :mod:`svalign.toy.sweeps`: training evaluates
:func:`closed_form_metrics` at every logged step, so this module must not import the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from svalign.runtime import derive_seed
from svalign.svd import factored_svd
from svalign.toy.config import Template, ToyConfig
from svalign.toy.metrics import feature_cosines, head_feature_metrics, match_pairs, pair_scores, unit_features

__all__ = [
    "Moments",
    "activation_second_moment",
    "anisotropic_features",
    "anisotropy_columns",
    "closed_form_metrics",
    "closed_form_omega",
    "omega_alignment",
]

Moments = Literal["second_moment", "isotropic"]


# --------------------------------------------------------------------------------------------------
# Closed-form optimum (paper Theorem 1 and corollary)
# --------------------------------------------------------------------------------------------------


def activation_second_moment(n_features: int, sparsity: float) -> np.ndarray:
    """``E[f fᵀ]`` of the toy's activations: ``f_i = 0`` w.p. S, else U[0, 1], independent.

    Diagonal ``(1 − S)/3``, off-diagonal ``((1 − S)/2)²``: not a multiple of I, because the activations have a
    non-zero mean ``(1 − S)/2``.
    """
    diagonal, mean = (1.0 - sparsity) / 3.0, (1.0 - sparsity) / 2.0
    return np.full((n_features, n_features), mean**2) + np.eye(n_features) * (diagonal - mean**2)


def closed_form_omega(
    X: torch.Tensor, Y: torch.Tensor, T: torch.Tensor, M_f: torch.Tensor | None = None, M_g: torch.Tensor | None = None
) -> torch.Tensor:
    """The Ω minimising the logit-matching loss ``E[(fᵀXᵀΩYg − fᵀTg)²]`` over independent f (query) and g (key).

    Derivation. With ``Δ = XᵀΩY − T`` the loss is ``E[(fᵀΔg)²] = tr(Δ M_g Δᵀ M_f)`` for the second moments
    ``M_f = E[ffᵀ]``, ``M_g = E[ggᵀ]``. Setting its gradient ``2 X M_f Δ M_g Yᵀ`` to zero gives the normal equations
    ``(X M_f Xᵀ) Ω (Y M_g Yᵀ) = X M_f T M_g Yᵀ``, whose minimum-norm solution is

        Ω* = (X M_f Xᵀ)⁺ X M_f T M_g Yᵀ (Y M_g Yᵀ)⁺.

    With isotropic activations (``M = I``) this is the paper's ``Ω* = Σ_X⁺ X T Yᵀ Σ_Y⁺``, ``Σ_X = XXᵀ``
    (pseudo-inverse when N < D). Uniform-on-[0, 1] activations are not isotropic (non-zero mean), so by default we
    use their exact second-moment matrix (:func:`activation_second_moment`); ``M = I`` gives the paper's formula.
    Assumptions: the head is trained by MSE on logits (the toy's ``attention_loss: mse``; for cross-entropy Ω* is
    a reference, not the optimum), the features X, Y are fixed, f and g are independent, and ``d_head`` is at
    least ``rank(Ω*)`` (otherwise the optimum is a weighted low-rank approximation of Ω*).

    Args:
        X: query-side feature directions ``[..., D, N]``; Y: key-side ``[..., D, N]``; T: template ``[N, N]``
            (including the scale β); M_f, M_g: ``[..., N, N]`` or None for I.

    Returns:
        ``[..., D, D]``.
    """
    M_f = torch.eye(X.shape[-1], dtype=X.dtype) if M_f is None else M_f
    M_g = torch.eye(Y.shape[-1], dtype=Y.dtype) if M_g is None else M_g
    left = torch.linalg.pinv(X @ M_f @ X.mT, hermitian=True)
    right = torch.linalg.pinv(Y @ M_g @ Y.mT, hermitian=True)
    return left @ X @ M_f @ T @ M_g @ Y.mT @ right


def closed_form_metrics(
    W: torch.Tensor,
    W_Q: torch.Tensor,
    W_K: torch.Tensor,
    template: Template,
    target_scale: float,
    sparsities: Sequence[float],
    moments: Moments = "second_moment",
) -> dict[str, np.ndarray]:
    """Trained Ω against the closed-form Ω* for the instance's own features.

    Args:
        W: features ``[I, D, N]``; W_Q, W_K: ``[I, D, H]``; sparsities: S of each instance ``[I]``.

    Returns (leading ``instance`` axis): ``closed_form_rel_error`` ‖Ω − Ω*‖_F/‖Ω*‖_F; per template pair
    ``closed_form_sigma`` (σ of Ω* at the singular pair matched to the pair) and ``closed_form_cos_u``/``_v``
    (|cos| between the trained and closed-form singular vectors matched to the same pair).
    """
    W, W_Q, W_K = (t.detach().to(torch.float64).cpu() for t in (W, W_Q, W_K))
    T = torch.from_numpy(template.matrix()).to(torch.float64) * target_scale
    if moments == "isotropic":
        M = None
    else:
        M = torch.from_numpy(np.stack([activation_second_moment(template.n_features, s) for s in sparsities]))
    omega_star = closed_form_omega(W, W, T, M, M)  # [I, D, D]
    omega = W_Q @ W_K.mT
    rel_error = (omega - omega_star).norm(dim=(-1, -2)) / omega_star.norm(dim=(-1, -2)).clamp_min(1e-30)
    rank = min(W.shape[1], W_Q.shape[-1])
    U, S, Vh = torch.linalg.svd(omega_star)
    U_star, S_star, V_star = U[..., :rank], S[..., :rank], Vh.mT[..., :rank]
    trained = factored_svd(W_Q, W_K)
    _, W_unit = unit_features(W)

    def matched(U_: torch.Tensor, V_: torch.Tensor) -> np.ndarray:
        return match_pairs(pair_scores(feature_cosines(W_unit, U_), feature_cosines(W_unit, V_), template))

    ranks_star, ranks = matched(U_star, V_star), matched(trained.U, trained.V)  # [I, P]
    inst = np.arange(W.shape[0])[:, None]
    ok = (ranks_star >= 0) & (ranks >= 0)
    r_star, r_tr = np.where(ok, ranks_star, 0), np.where(ok, ranks, 0)
    cos_u = (trained.U.mT @ U_star).abs().numpy()[inst, r_tr, r_star]  # [I, P]
    cos_v = (trained.V.mT @ V_star).abs().numpy()[inst, r_tr, r_star]
    return {
        "closed_form_rel_error": rel_error.numpy(),
        "closed_form_sigma": np.where(ok, S_star.numpy()[inst, r_star], np.nan),
        "closed_form_cos_u": np.where(ok, cos_u, np.nan),
        "closed_form_cos_v": np.where(ok, cos_v, np.nan),
    }


def omega_alignment(
    W: torch.Tensor, omega: torch.Tensor, template: Template, target_scale: float
) -> dict[str, np.ndarray]:
    """:func:`~svalign.toy.metrics.head_feature_metrics` of a dense Ω ``[I, D, D]`` (e.g. the closed form), via its
    SVD factors ``U√σ, V√σ``."""
    U, S, Vh = torch.linalg.svd(omega.to(torch.float64))
    rank = omega.shape[-1]
    root = S.sqrt().unsqueeze(-2)
    return head_feature_metrics(W, U[..., :rank] * root, Vh.mT[..., :rank] * root, template, target_scale)


# --------------------------------------------------------------------------------------------------
# Anisotropy (paper Theorem 2, Fig 4)
# --------------------------------------------------------------------------------------------------


def anisotropic_features(n_features: int, d_model: int, interference_norm: float, seed: int) -> torch.Tensor:
    """Unit-norm feature directions with exactly ``‖XᵀX − I‖₂ = interference_norm``.

    Construction: Haar-random orthonormal ``q_1..q_N, c`` in ℝ^D (needs D ≥ N + 1) and random signs ``s_i``;
    ``x_i = √(1 − ρ) q_i + √ρ s_i c``. Then ``x_iᵀx_j = ρ s_i s_j`` for i ≠ j, so ``E_X = ρ (s sᵀ − I)`` and
    ``‖E_X‖₂ = ρ (N − 1)``: one shared direction carries all the interference, as the dominant low-rank
    component of real SAE decoder matrices does. ρ = interference_norm / (N − 1) must lie in [0, 1).

    Returns:
        ``[d_model, n_features]`` float32.
    """
    if d_model < n_features + 1:
        raise ValueError(f"anisotropic features need d_model >= n_features + 1 (got {d_model}, {n_features})")
    rho = interference_norm / (n_features - 1)
    if not 0.0 <= rho < 1.0:
        raise ValueError(
            f"interference norm {interference_norm} is out of reach for {n_features} features (max < {n_features - 1})"
        )
    generator = torch.Generator().manual_seed(derive_seed(seed, "anisotropy"))
    basis, _ = torch.linalg.qr(torch.randn(d_model, n_features + 1, generator=generator, dtype=torch.float64))
    signs = torch.where(torch.rand(n_features, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
    X = math.sqrt(1.0 - rho) * basis[:, :n_features] + math.sqrt(rho) * basis[:, n_features : n_features + 1] * signs
    return X.to(torch.float32)


def anisotropy_columns(
    config: ToyConfig,
    grid: Sequence[tuple[float, int]],
    features: torch.Tensor,
    final: dict[str, np.ndarray],
) -> dict[str, object]:
    """Column data of :data:`~svalign.tables.TOY_ANISOTROPY`: the trained head next to the closed form.

    Args:
        config: the run's config (one sparsity, head trained alone on frozen features).
        grid: (interference norm, feature seed) of each instance ``[I]``.
        features: the frozen features ``[I, D, N]`` (float32, from :func:`anisotropic_features`).
        final: the run's final metrics (``ToyRun.final``), leading ``instance`` axis.
    """
    template = config.template_spec
    T = torch.from_numpy(template.matrix()).double() * config.target_scale
    M = torch.from_numpy(activation_second_moment(config.n_features, config.sparsities[0]))
    omega_star = closed_form_omega(features.double(), features.double(), T, M, M)
    star = omega_alignment(features, omega_star, template, config.target_scale)
    gram = features.double().mT @ features.double()
    measured = torch.linalg.matrix_norm(gram - torch.eye(config.n_features, dtype=torch.float64), ord=2)
    return {
        "interference_norm": [n for n, _ in grid],
        "measured_norm": measured.numpy(),
        "feature_seed": [s for _, s in grid],
        "instance": np.arange(len(grid)),
        "mean_matched_cos": final["mean_matched_cos"],
        "min_matched_cos": final["min_matched_cos"],
        "closed_form_mean_matched_cos": star["mean_matched_cos"],
        "closed_form_min_matched_cos": star["min_matched_cos"],
        "closed_form_rel_error": final["closed_form_rel_error"],
        "attention_loss": final["attention_loss"],
    }
