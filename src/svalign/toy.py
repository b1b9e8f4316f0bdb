"""Toy model: a superposition autoencoder trained jointly with one bilinear attention head.

Model (SPEC §1, after Elhage et al. "Toy Models of Superposition"):

* N sparse features; an activation ``f ∈ ℝ^N`` has ``f_i = 0`` with probability S, else ``f_i ~ U[0, 1]``.
* Feature directions are the columns of ``W ∈ ℝ^{D×N}``; a token is ``x = W f`` (row convention ``f Wᵀ``).
* Tied autoencoder: ``f̂ = ReLU(Wᵀ W f + b)``, reconstruction loss ``Σ_i I_i (f_i − f̂_i)²`` averaged
  over tokens (queries and keys).
* One bilinear head ``Ω = W_Q W_Kᵀ`` (``W_Q, W_K ∈ ℝ^{D×H}``): a query token ``x = W f`` and m key tokens
  ``y_j = W g_j`` give logits ``ℓ_j = x Ω y_jᵀ`` (no 1/√H scale).
* Target logits from a template ``T ∈ ℝ^{N×N}``: ``ℓ*_j = β fᵀ T g_j``. Attention loss: cross-entropy of
  ``softmax(ℓ)`` against ``softmax(ℓ*)`` over the m keys (reported as KL, i.e. minus the target entropy,
  which has the same gradients and is 0 at the optimum), or MSE on the logits.
* Total loss ``recon + λ · attention``; W, b, W_Q, W_K trained jointly (AdamW) from Xavier-normal init.

Many instances (different seeds, sparsities, λ) train as one batched tensor with a leading
``instance`` axis. Instances never interact: the batched loss is the *sum* of per-instance losses and
AdamW is element-wise, and each instance draws its init and data from its own seeded generators, so an
instance's result does not depend on which other instances share its batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from svalign.io import TableSchema, provenance, write_table
from svalign.runtime import TrainingDivergedError, derive_seed
from svalign.svd import factored_svd
from svalign.tables import TOY_ANISOTROPY, TOY_INSTANCE_COLUMNS, TOY_METRICS, TOY_SWEEP, TOY_TRAJECTORY, TOY_WEIGHTS
from svalign.toy_config import (  # re-exported: the toy stage's public API in one place
    SIGNIFICANT_SIGMA_RATIO,
    SWEEP_PARAMETERS,
    SWEEP_SHAPE,
    AttentionLoss,
    Template,
    ToyConfig,
    make_template,
    points_of_shape,
    sweep_config,
    sweep_groups,
    sweep_points,
)

__all__ = [
    "SWEEP_PARAMETERS",
    "SWEEP_SHAPE",
    "TOY_ANISOTROPY",
    "TOY_METRICS",
    "TOY_SWEEP",
    "TOY_TRAJECTORY",
    "TOY_WEIGHTS",
    "AttentionLoss",
    "Template",
    "ToyConfig",
    "ToyRun",
    "TrainingDivergedError",
    "head_feature_metrics",
    "make_template",
    "points_of_shape",
    "sweep_config",
    "sweep_groups",
    "sweep_points",
    "sweep_rows",
    "train_toy",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Parameters and data
# --------------------------------------------------------------------------------------------------


@dataclass
class ToyParams:
    """Parameters of I instances.

    Attributes:
        W: feature directions ``[instance, d_model, n_features]``.
        b: autoencoder bias ``[instance, n_features]``.
        W_Q: ``[instance, d_model, d_head]``.
        W_K: ``[instance, d_model, d_head]``.
    """

    W: torch.Tensor
    b: torch.Tensor
    W_Q: torch.Tensor
    W_K: torch.Tensor

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"W": self.W, "b": self.b, "W_Q": self.W_Q, "W_K": self.W_K}

    def numpy(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.tensors().items()}


def _xavier_normal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    std = math.sqrt(2.0 / (rows + cols))
    return torch.randn(rows, cols, generator=generator) * std


def _rank_one_head(config: ToyConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """W_Q = √β u e_1ᵀ, W_K = √β v e_1ᵀ: Ω = β u vᵀ with random unit u, v (the other head columns zero)."""
    u, v = (torch.randn(config.d_model, generator=generator) for _ in range(2))
    W_Q, W_K = torch.zeros(config.d_model, config.d_head), torch.zeros(config.d_model, config.d_head)
    W_Q[:, 0] = math.sqrt(config.target_scale) * u / u.norm()
    W_K[:, 0] = math.sqrt(config.target_scale) * v / v.norm()
    return W_Q, W_K


def init_params(config: ToyConfig, seeds: Sequence[int], device: torch.device) -> ToyParams:
    """Per-instance init drawn on the CPU from the instance's seed (device-independent).

    Features: Xavier normal. Head: Xavier normal, or with ``head_init: rank_one`` a rank-one Ω = β u vᵀ with
    random unit u, v (Theorem 3: freeze it with ``train_head: false`` and watch the features move).
    """
    W, W_Q, W_K = [], [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(derive_seed(seed, "toy-init"))
        W.append(_xavier_normal(config.d_model, config.n_features, generator))
        if config.head_init == "rank_one":
            query, key = _rank_one_head(config, generator)
        else:
            query = _xavier_normal(config.d_model, config.d_head, generator)
            key = _xavier_normal(config.d_model, config.d_head, generator)
        W_Q.append(query)
        W_K.append(key)
    return ToyParams(
        W=torch.stack(W).to(device),
        b=torch.zeros(len(seeds), config.n_features, device=device),
        W_Q=torch.stack(W_Q).to(device),
        W_K=torch.stack(W_K).to(device),
    )


class FeatureSampler:
    """Draws sparse feature activations ``[instance, batch, 1 + m, N]`` (token 0 is the query).

    One uniform draw u per entry gives both the mask and the value: ``f = 0`` if ``u < S`` else
    ``(u − S)/(1 − S)``, which is U[0, 1) given ``u ≥ S``. Each instance owns a generator seeded from its
    seed, so its stream does not depend on the other instances in the batch (the Python loop runs over
    instances, a handful, never over tokens).
    """

    def __init__(self, seeds: Sequence[int], sparsities: torch.Tensor, n_tokens: int, n_features: int, purpose: str):
        self.device = sparsities.device
        self.sparsity = sparsities.view(-1, 1, 1, 1)
        self.n_tokens, self.n_features = n_tokens, n_features
        self.generators = [
            torch.Generator(device=self.device).manual_seed(derive_seed(seed, purpose)) for seed in seeds
        ]

    def sample(self, batch_size: int) -> torch.Tensor:
        u = torch.empty(len(self.generators), batch_size, self.n_tokens, self.n_features, device=self.device)
        for i, generator in enumerate(self.generators):
            torch.rand(u.shape[1:], generator=generator, device=self.device, out=u[i])
        return torch.where(u < self.sparsity, 0.0, (u - self.sparsity) / (1.0 - self.sparsity))


def toy_losses(
    params: ToyParams,
    features: torch.Tensor,
    template: torch.Tensor,
    importance: torch.Tensor,
    target_scale: float,
    attention_loss: AttentionLoss,
    reconstruct: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance reconstruction and attention losses.

    Args:
        features: ``[instance, batch, 1 + m, N]``; token 0 is the query, tokens 1..m the keys.
        template: T ``[N, N]``.
        importance: per-feature weights ``[N]``.
        reconstruct: compute the reconstruction loss (zeros otherwise: with frozen features it has no
            gradient, and skipping it halves the cost of head-only training).

    Returns:
        ``(recon [instance], attention [instance])``.
    """
    n_instances, batch, n_tokens, n_features = features.shape
    flat = features.reshape(n_instances, batch * n_tokens, n_features)
    hidden = flat @ params.W.mT  # [I, B·T, D]
    if reconstruct:
        recon = torch.relu(hidden @ params.W + params.b[:, None, :])  # [I, B·T, N]
        recon_loss = ((flat - recon).square() * importance).sum(-1).mean(-1)
    else:
        recon_loss = torch.zeros(n_instances, dtype=features.dtype, device=features.device)

    # Project queries and keys with one flat matmul each; a matmul per [1+m, D] sample would be a batch of
    # I·B tiny products (slow on CPU). Logits and targets are then element-wise products and sums.
    hidden = hidden.view(n_instances, batch, n_tokens, -1)
    query = hidden[:, :, 0] @ params.W_Q  # [I, B, H]
    keys = (hidden[:, :, 1:].reshape(n_instances, -1, hidden.shape[-1]) @ params.W_K).view(
        n_instances, batch, n_tokens - 1, -1
    )  # [I, B, m, H]
    logits = (keys * query.unsqueeze(2)).sum(-1)  # [I, B, m]
    query_features, key_features = features[:, :, 0], features[:, :, 1:]
    target = target_scale * (key_features * (query_features @ template).unsqueeze(2)).sum(-1)  # [I, B, m]
    if attention_loss == "cross_entropy":
        target_log_p = torch.log_softmax(target, dim=-1)
        attention = (target_log_p.exp() * (target_log_p - torch.log_softmax(logits, dim=-1))).sum(-1).mean(-1)
    else:
        attention = (logits - target).square().mean((-1, -2))
    return recon_loss, attention


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def head_feature_metrics(
    W: torch.Tensor, W_Q: torch.Tensor, W_K: torch.Tensor, template: Template, target_scale: float
) -> dict[str, np.ndarray]:
    """Alignment of the head's singular vectors with the features, spectrum and feature geometry.

    Args:
        W: features ``[instance, D, N]``; W_Q, W_K: ``[instance, D, H]``.

    Returns:
        column name -> array with leading ``instance`` axis (``P`` pairs, ``r = min(D, H)``):
        ``sigma [r]``, ``cos_u``/``cos_v [N, r]`` (|cos| between feature i and u_k / v_k), per pair
        ``matched_rank``, ``matched_cos_u``, ``matched_cos_v`` (one-to-one Hungarian matching of pairs to
        singular pairs on |cos u|·|cos v|; rank −1 and NaN when there are more pairs than singular pairs),
        ``best_rank``/``best_cos_u``/``best_cos_v`` (each pair's best singular pair; several pairs may
        claim one), ``matched_sigma``, ``gain`` (ŵ_aᵀ Ω ŵ_b), ``sigma_over_target`` (σ/(βT)); scalars
        ``mean_matched_cos``, ``min_matched_cos``, ``n_distinct_best``, ``sigma2_over_sigma1``,
        ``spectral_separation`` (σ_{P+1}/σ_P), ``n_significant``, ``spearman_sigma_T``,
        ``spearman_gain_T``, ``max_interference_attended`` (and ``_query``/``_key`` for each side),
        ``mean_interference_attended``, ``mean_interference_other``, ``attended_span_energy``; and
        ``gram [N, N]``, ``feature_norms [N]``.
    """
    W, W_Q, W_K = (t.detach().to(torch.float64).cpu() for t in (W, W_Q, W_K))
    n_instances, _, n_features = W.shape
    norms = W.norm(dim=1)  # [I, N]
    W_unit = W / norms.clamp_min(1e-12)[:, None, :]
    U, S, V = factored_svd(W_Q, W_K)  # [I, D, r], [I, r], [I, D, r]
    rank = S.shape[-1]
    cos_u = (W_unit.mT @ U).abs()  # [I, N, r]
    cos_v = (W_unit.mT @ V).abs()

    a = torch.tensor(template.query_features)
    b = torch.tensor(template.key_features)
    values = np.asarray(template.values)
    n_pairs = template.n_pairs
    score = (cos_u[:, a, :] * cos_v[:, b, :]).numpy()  # [I, P, r]

    matched_rank = np.full((n_instances, n_pairs), -1, dtype=np.int64)
    for i in range(n_instances):  # Hungarian matching is sequential by nature; I is small
        rows, cols = linear_sum_assignment(score[i], maximize=True)
        matched_rank[i, rows] = cols
    has_match = matched_rank >= 0
    safe_rank = torch.from_numpy(np.where(has_match, matched_rank, 0))
    cu, cv = cos_u.numpy(), cos_v.numpy()
    inst = np.arange(n_instances)[:, None]
    matched_cos_u = np.where(has_match, cu[inst, np.asarray(a)[None], safe_rank.numpy()], np.nan)
    matched_cos_v = np.where(has_match, cv[inst, np.asarray(b)[None], safe_rank.numpy()], np.nan)
    matched_sigma = np.where(has_match, S.numpy()[inst, safe_rank.numpy()], np.nan)
    best_rank = score.argmax(-1)
    best_cos_u = cu[inst, np.asarray(a)[None], best_rank]
    best_cos_v = cv[inst, np.asarray(b)[None], best_rank]

    omega_pairs = W_unit.mT @ W_Q @ W_K.mT @ W_unit  # [I, N, N]: ŵ_iᵀ Ω ŵ_j
    gain = omega_pairs[:, a, b].numpy()  # [I, P]

    sigma = S.numpy()
    separation = sigma[:, n_pairs] / sigma[:, n_pairs - 1] if n_pairs < rank else np.full(n_instances, np.nan)

    cos_gram = (W_unit.mT @ W_unit).abs()
    cos_gram.diagonal(dim1=-2, dim2=-1).zero_()
    per_feature_interference = cos_gram.max(-1).values.numpy()  # [I, N]
    attended = list(template.attended_features)
    others = [i for i in range(n_features) if i not in set(attended)]
    # Fraction of the other features' energy inside span(attended): 0 when attended features are
    # orthogonal to everything else (the paper's Fig 1b geometry).
    Q_att, _ = torch.linalg.qr(W[:, :, attended])
    if others:
        W_other = W[:, :, others]
        span_energy = (Q_att.mT @ W_other).square().sum((-1, -2)) / W_other.square().sum((-1, -2)).clamp_min(1e-12)
        mean_other = per_feature_interference[:, others].mean(-1)
    else:
        span_energy = torch.full((n_instances,), float("nan"))
        mean_other = np.full(n_instances, np.nan)

    # Unmatched pairs (more pairs than singular pairs) are NaN and left out of the summaries.
    both_sides = np.concatenate([matched_cos_u, matched_cos_v], axis=-1)
    mean_matched = np.nanmean(both_sides, axis=-1)
    min_matched = np.nanmin(both_sides, axis=-1)
    return {
        "sigma": sigma,
        "cos_u": cu,
        "cos_v": cv,
        "matched_rank": matched_rank,
        "matched_cos_u": matched_cos_u,
        "matched_cos_v": matched_cos_v,
        "matched_sigma": matched_sigma,
        "best_rank": best_rank,
        "best_cos_u": best_cos_u,
        "best_cos_v": best_cos_v,
        "gain": gain,
        "sigma_over_target": matched_sigma / (target_scale * values[None]),
        "mean_matched_cos": mean_matched,
        "min_matched_cos": min_matched,
        "n_distinct_best": np.array([len(set(r)) for r in best_rank]),
        "sigma2_over_sigma1": sigma[:, 1] / sigma[:, 0] if rank > 1 else np.full(n_instances, np.nan),
        "spectral_separation": separation,
        "n_significant": (sigma / sigma[:, :1] > SIGNIFICANT_SIGMA_RATIO).sum(-1),
        "spearman_sigma_T": np.array([_spearman(s, values) for s in matched_sigma]),
        "spearman_gain_T": np.array([_spearman(g, values) for g in gain]),
        "max_interference_attended": per_feature_interference[:, attended].max(-1),
        "max_interference_query": per_feature_interference[:, list(template.query_features)].max(-1),
        "max_interference_key": per_feature_interference[:, list(template.key_features)].max(-1),
        "mean_interference_attended": per_feature_interference[:, attended].mean(-1),
        "mean_interference_other": mean_other,
        "attended_span_energy": span_energy.numpy(),
        "gram": (W.mT @ W).numpy(),
        "feature_norms": norms.numpy(),
    }


# --------------------------------------------------------------------------------------------------
# Closed-form optimum (paper Theorem 1 and corollary)
# --------------------------------------------------------------------------------------------------

Moments = Literal["second_moment", "isotropic"]


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
    omega_star = closed_form_omega(W, W, T, M, M)
    omega = W_Q @ W_K.mT
    rel_error = (omega - omega_star).norm(dim=(-1, -2)) / omega_star.norm(dim=(-1, -2)).clamp_min(1e-30)
    rank = min(W.shape[1], W_Q.shape[-1])
    U, S, Vh = torch.linalg.svd(omega_star)
    U_star, S_star, V_star = U[..., :rank], S[..., :rank], Vh.mT[..., :rank]
    trained = factored_svd(W_Q, W_K)
    a, b = list(template.query_features), list(template.key_features)
    W_unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def matched(U_: torch.Tensor, V_: torch.Tensor) -> np.ndarray:
        score = ((W_unit.mT @ U_).abs()[:, a, :] * (W_unit.mT @ V_).abs()[:, b, :]).numpy()
        ranks = np.full(score.shape[:2], -1)
        for i in range(len(score)):
            rows, cols = linear_sum_assignment(score[i], maximize=True)
            ranks[i, rows] = cols
        return ranks

    ranks_star, ranks = matched(U_star, V_star), matched(trained.U, trained.V)
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


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@dataclass
class ToyRun:
    """Result of :func:`train_toy`.

    Attributes:
        config: the experiment.
        instances: one dict per instance (``instance``, ``seed``, ``sparsity``, ``lam``).
        params: final parameters.
        final: metrics of the final parameters plus ``step``, ``recon_loss``, ``attention_loss``
            (on a fixed evaluation batch), arrays with a leading ``instance`` axis.
        trajectory: the same, every ``log_every`` steps (step 0 included).
    """

    config: ToyConfig
    instances: list[dict]
    params: ToyParams
    final: dict[str, np.ndarray]
    trajectory: list[dict[str, np.ndarray]] = field(default_factory=list)


def _importance(config: ToyConfig, device: torch.device) -> torch.Tensor:
    return config.importance_decay ** torch.arange(config.n_features, device=device, dtype=torch.float32)


def train_toy(
    config: ToyConfig,
    device: torch.device | str = "cpu",
    initial: ToyParams | None = None,
    progress: bool = True,
    progress_file=None,
) -> ToyRun:
    """Train every instance of ``config`` as one batched model.

    Args:
        config: the experiment.
        device: torch device.
        initial: parameters to start from instead of the seeded Xavier init (e.g. fixed orthonormal
            features with ``train_features=False``), ``[instance, ...]`` as in :class:`ToyParams`.
        progress: show a tqdm bar (written to ``progress_file``, default stderr).

    Raises:
        TrainingDivergedError: a loss became non-finite or exceeded ``config.max_loss``; the message names
            the instance, its seed/sparsity/λ and the step.
    """
    device = torch.device(device)
    instances = config.instances()
    seeds = [row["seed"] for row in instances]
    sparsities = torch.tensor([row["sparsity"] for row in instances], device=device)
    lambdas = torch.tensor([row["lam"] for row in instances], device=device)
    template = config.template_spec
    template_matrix = torch.from_numpy(template.matrix()).to(device)
    importance = _importance(config, device)

    params = (
        init_params(config, seeds, device)
        if initial is None
        else ToyParams(**{k: v.detach().clone().to(device) for k, v in initial.tensors().items()})
    )
    trainable = []
    if config.train_features:
        trainable += [params.W, params.b]
    if config.train_head:
        trainable += [params.W_Q, params.W_K]
    for tensor in trainable:
        tensor.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay) if trainable else None

    n_tokens = 1 + config.context_len
    train_sampler = FeatureSampler(seeds, sparsities, n_tokens, config.n_features, "toy-train")
    eval_features = FeatureSampler(seeds, sparsities, n_tokens, config.n_features, "toy-eval").sample(
        config.eval_batch_size
    )

    def losses(features: torch.Tensor, reconstruct: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        return toy_losses(
            params, features, template_matrix, importance, config.target_scale, config.attention_loss, reconstruct
        )

    def evaluate(step: int) -> dict[str, np.ndarray]:
        with torch.no_grad():
            recon, attention = losses(eval_features)
        _check_finite(step, recon + lambdas * attention, instances, config.max_loss)
        record = head_feature_metrics(params.W, params.W_Q, params.W_K, template, config.target_scale)
        record.update(
            closed_form_metrics(
                params.W, params.W_Q, params.W_K, template, config.target_scale, [r["sparsity"] for r in instances]
            )
        )
        record.update(
            step=np.full(len(instances), step),
            recon_loss=recon.cpu().numpy().astype(np.float64),
            attention_loss=attention.cpu().numpy().astype(np.float64),
        )
        return record

    trajectory = [evaluate(0)]
    bar = tqdm(
        range(1, config.steps + 1),
        disable=not progress,
        file=progress_file,
        mininterval=5.0,
        desc=f"toy {config.template} x{len(instances)}",
    )
    for step in bar:
        if optimizer is not None:
            recon, attention = losses(train_sampler.sample(config.batch_size), reconstruct=config.train_features)
            optimizer.zero_grad(set_to_none=True)
            (recon + lambdas * attention).sum().backward()
            optimizer.step()
        if step % config.log_every == 0 or step == config.steps:
            trajectory.append(evaluate(step))
            bar.set_postfix(
                recon=f"{trajectory[-1]['recon_loss'].mean():.4f}",
                attn=f"{trajectory[-1]['attention_loss'].mean():.4f}",
                cos=f"{np.nanmean(trajectory[-1]['mean_matched_cos']):.3f}",
            )
    bar.close()
    for tensor in trainable:
        tensor.requires_grad_(False)
    log.info("trained %d instances of %s for %d steps on %s", len(instances), config.template, config.steps, device)
    return ToyRun(config, instances, params, trajectory[-1], trajectory)


def _check_finite(step: int, loss: torch.Tensor, instances: list[dict], max_loss: float) -> None:
    bad = (~torch.isfinite(loss)) | (loss.abs() > max_loss)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        row = instances[i]
        raise TrainingDivergedError(
            f"toy training diverged at step {step}: instance {i} (seed={row['seed']}, sparsity={row['sparsity']}, "
            f"lam={row['lam']}) has loss {float(loss[i]):.4g} (limit max_loss={max_loss:g}). "
            "Lower lr or target_scale, or raise max_loss if the scale is intended."
        )


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------

_F32, _F64, _I64 = pa.float32(), pa.float64(), pa.int64()


def _instance_columns(run: ToyRun, experiment: str, repeat: int = 1) -> dict[str, list]:
    rows = run.instances * repeat
    return {
        "experiment": [experiment] * len(rows),
        **{key: [row[key] for row in rows] for key in ("instance", "seed", "sparsity", "lam")},
    }


def _metric_columns(run: ToyRun, records: list[dict[str, np.ndarray]], schema: TableSchema) -> dict[str, np.ndarray]:
    template = run.config.template_spec
    n_rows = len(records) * len(run.instances)
    pair_columns = {
        "pair_query": np.tile(template.query_features, (n_rows, 1)),
        "pair_key": np.tile(template.key_features, (n_rows, 1)),
        "pair_value": np.tile(template.values, (n_rows, 1)),
    }
    names = [
        c.name
        for c in schema.columns
        if c.name not in pair_columns and c.name not in {c.name for c in TOY_INSTANCE_COLUMNS}
    ]
    return {**pair_columns, **{name: np.concatenate([r[name] for r in records]) for name in names}}


def weights_table(run: ToyRun, experiment: str) -> dict[str, object]:
    """Column data for :data:`TOY_WEIGHTS`."""
    return {**_instance_columns(run, experiment), **run.params.numpy()}


def metrics_table(run: ToyRun, experiment: str) -> dict[str, object]:
    """Column data for :data:`TOY_METRICS`."""
    return {**_instance_columns(run, experiment), **_metric_columns(run, [run.final], TOY_METRICS)}


def trajectory_table(run: ToyRun, experiment: str) -> dict[str, object]:
    """Column data for :data:`TOY_TRAJECTORY` (rows ordered by step, then instance)."""
    return {
        **_instance_columns(run, experiment, repeat=len(run.trajectory)),
        **_metric_columns(run, run.trajectory, TOY_TRAJECTORY),
    }


def write_run(run: ToyRun, experiment: str, weights: str, metrics: str, trajectory: str) -> None:
    """Write the three toy tables of one experiment, each with provenance (stage, config, seeds)."""
    record = provenance("toy", {"experiment": experiment, **run.config.to_dict()}, seed=list(run.config.seeds))
    write_table(weights, TOY_WEIGHTS, weights_table(run, experiment), record)
    write_table(metrics, TOY_METRICS, metrics_table(run, experiment), record)
    write_table(trajectory, TOY_TRAJECTORY, trajectory_table(run, experiment), record)


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


def omega_alignment(
    W: torch.Tensor, omega: torch.Tensor, template: Template, target_scale: float
) -> dict[str, np.ndarray]:
    """:func:`head_feature_metrics` of a dense Ω (e.g. the closed form), via its SVD factors ``U√σ, V√σ``."""
    U, S, Vh = torch.linalg.svd(omega.to(torch.float64))
    rank = omega.shape[-1]
    root = S.sqrt().unsqueeze(-2)
    return head_feature_metrics(W, U[..., :rank] * root, Vh.mT[..., :rank] * root, template, target_scale)


def run_anisotropy(
    config: ToyConfig,
    interference_norms: Sequence[float],
    feature_seeds: Sequence[int],
    device: torch.device | str,
    progress_file=None,
) -> dict[str, np.ndarray]:
    """Train only the head on frozen anisotropic features, one batched run for every (norm, seed).

    Every instance gets the features of :func:`anisotropic_features` for its (norm, seed); its head init and
    data stream come from its own instance seed. Returns the column data of :data:`TOY_ANISOTROPY`.
    """
    grid = [(norm, seed) for norm in interference_norms for seed in feature_seeds]
    config = dataclasses.replace(
        config,
        seeds=tuple(range(len(grid))),
        lambdas=(1.0,),
        train_features=False,
        train_head=True,
        sparsities=config.sparsities[:1],
    )
    features = torch.stack([anisotropic_features(config.n_features, config.d_model, n, s) for n, s in grid])
    start = init_params(config, config.seeds, torch.device("cpu"))
    start.W = features
    run = train_toy(config, device, initial=start, progress=progress_file is not None, progress_file=progress_file)
    template = config.template_spec
    T = torch.from_numpy(template.matrix()).double() * config.target_scale
    M = torch.from_numpy(activation_second_moment(config.n_features, config.sparsities[0]))
    omega_star = closed_form_omega(features.double(), features.double(), T, M, M)
    star = omega_alignment(features, omega_star, template, config.target_scale)
    gram = features.double().mT @ features.double()
    measured = torch.linalg.matrix_norm(gram - torch.eye(config.n_features, dtype=torch.float64), ord=2)
    final = run.final
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


# --------------------------------------------------------------------------------------------------
# One-at-a-time sweeps (paper App. A and E)
# --------------------------------------------------------------------------------------------------


def sweep_rows(run: ToyRun) -> dict[str, np.ndarray]:
    """Rows of :data:`TOY_SWEEP` for a run of sweep points (one row per instance: point × seed)."""
    final, n, config = run.final, len(run.instances), run.config
    best = np.concatenate([final["best_cos_u"], final["best_cos_v"]], -1).mean(-1)
    return {
        "lam": np.array([r["lam"] for r in run.instances], dtype=np.float64),
        "sparsity": np.array([r["sparsity"] for r in run.instances], dtype=np.float64),
        **{name: np.full(n, getattr(config, name)) for name in SWEEP_SHAPE},
        "n_pairs": np.full(n, run.config.template_spec.n_pairs),
        "seed": np.array([r["seed"] for r in run.instances]),
        "mean_matched_cos": final["mean_matched_cos"],
        "min_matched_cos": final["min_matched_cos"],
        "n_matched": (final["matched_rank"] >= 0).sum(-1),
        "best_mean_cos": best,
        "n_distinct_best": final["n_distinct_best"],
        "sigma2_over_sigma1": final["sigma2_over_sigma1"],
        "max_interference_query": final["max_interference_query"],
        "attention_loss": final["attention_loss"],
    }
