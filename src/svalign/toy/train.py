"""Toy model: a superposition autoencoder trained jointly with one bilinear attention head.

Model (paper Figs 1-3, after Elhage et al. "Toy Models of Superposition"):

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

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from svalign.runtime import TrainingDivergedError, derive_seed
from svalign.toy.config import AttentionLoss, ToyConfig
from svalign.toy.metrics import head_feature_metrics, metrics_columns, trajectory_columns, weights_columns
from svalign.toy.theory import closed_form_metrics

__all__ = [
    "FeatureSampler",
    "ToyParams",
    "ToyRun",
    "init_params",
    "run_columns",
    "toy_losses",
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
        # In place, (u − S)/(1 − S) clamped at 0: the same values as where(u < S, 0, (u − S)/(1 − S)) without three
        # temporaries of the batch's size (the sampler was ~15 % of a training step).
        return u.sub_(self.sparsity).div_(1.0 - self.sparsity).clamp_(min=0.0)


NARROW_COLUMNS = 16
"""Products with at most this many output columns run transposed (:func:`_product`)."""


def _product(rows: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``rows @ matrix`` (``[I, n, k] @ [I, k, d]``, n ≫ d). With a narrow output (d ≤ :data:`NARROW_COLUMNS`) it is
    computed as ``(matrixᵀ rowsᵀ)ᵀ``, the long axis as the output's columns, and returned as a transposed view: on the
    CPU a batched product with 10 output columns runs ~4× slower than its transpose, and so do its gradients. Wider
    products (d = 50) run faster as they are."""
    if matrix.shape[-1] > NARROW_COLUMNS:
        return rows @ matrix
    return (matrix.mT @ rows.mT).mT


def toy_losses(
    params: ToyParams,
    features: torch.Tensor,
    template: torch.Tensor,
    importance: torch.Tensor | None,
    target_scale: float,
    attention_loss: AttentionLoss,
    reconstruct: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance reconstruction and attention losses.

    Args:
        features: ``[instance, batch, 1 + m, N]``; token 0 is the query, tokens 1..m the keys.
        template: T ``[N, N]``.
        importance: per-feature weights ``[N]``, or None for uniform weights.
        reconstruct: compute the reconstruction loss (zeros otherwise: with frozen features it has no
            gradient, and skipping it halves the cost of head-only training).

    Returns:
        ``(recon [instance], attention [instance])``.
    """
    n_instances, batch, n_tokens, n_features = features.shape
    flat = features.reshape(n_instances, batch * n_tokens, n_features)
    hidden = _product(flat, params.W.mT)  # [I, B·T, D]
    if reconstruct:
        recon = torch.relu(torch.baddbmm(params.b[:, None, :], hidden, params.W))  # [I, B·T, N]
        # (recon − flat)² equals (flat − recon)² bit for bit, and its gradient skips the negation pass; uniform
        # importance (None) skips a multiply by ones. Every pass over [I, B·T, N] costs ~2.5 ms per step on CPU.
        error = (recon - flat).square()
        recon_loss = (error if importance is None else error * importance).sum(-1).mean(-1)
    else:
        recon_loss = torch.zeros(n_instances, dtype=features.dtype, device=features.device)

    # Project queries and keys with one flat matmul each; a matmul per [1+m, D] sample would be a batch of
    # I·B tiny products (slow on CPU). Logits and targets are then element-wise products and sums.
    hidden = hidden.view(n_instances, batch, n_tokens, -1)
    query = _product(hidden[:, :, 0], params.W_Q)  # [I, B, H]
    keys = _product(hidden[:, :, 1:].reshape(n_instances, -1, hidden.shape[-1]), params.W_K).view(
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


@dataclass
class _Training:
    """The state of one batched run between steps (I instances)."""

    config: ToyConfig
    instances: list[dict]
    lambdas: torch.Tensor  # λ of each instance [I]
    template_matrix: torch.Tensor  # T [N, N] (toy_losses applies the scale β)
    importance: torch.Tensor | None  # [N], None when uniform
    params: ToyParams
    trainable: list[torch.Tensor]
    optimizer: torch.optim.Optimizer | None  # None when nothing is trained
    train_sampler: FeatureSampler
    eval_features: torch.Tensor  # the fixed evaluation batch [I, eval_batch_size, 1 + m, N]

    def losses(self, features: torch.Tensor, reconstruct: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`toy_losses` of the current parameters on ``features [I, B, 1 + m, N]``: two ``[I]``."""
        config = self.config
        return toy_losses(
            self.params,
            features,
            self.template_matrix,
            self.importance,
            config.target_scale,
            config.attention_loss,
            reconstruct,
        )


def _importance(config: ToyConfig, device: torch.device) -> torch.Tensor | None:
    """Per-feature weights I_i = decay^i ``[N]``; None for decay 1 (all ones: the multiply would change nothing)."""
    if config.importance_decay == 1.0:
        return None
    return config.importance_decay ** torch.arange(config.n_features, device=device, dtype=torch.float32)


def _start_training(config: ToyConfig, device: torch.device, initial: ToyParams | None) -> _Training:
    """Seeded init (or a copy of ``initial``), the optimiser of the trained tensors and both data streams."""
    instances = config.instances()
    seeds = [row["seed"] for row in instances]
    sparsities = torch.tensor([row["sparsity"] for row in instances], device=device)
    lambdas = torch.tensor([row["lam"] for row in instances], device=device)
    template_matrix = torch.from_numpy(config.template_spec.matrix()).to(device)
    importance = _importance(config, device)

    params = (
        init_params(config, seeds, device)
        if initial is None
        else ToyParams(**{k: v.detach().clone().to(device) for k, v in initial.tensors().items()})
    )
    trainable = ([params.W, params.b] if config.train_features else []) + (
        [params.W_Q, params.W_K] if config.train_head else []
    )
    for tensor in trainable:
        tensor.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay) if trainable else None

    n_tokens = 1 + config.context_len
    train_sampler = FeatureSampler(seeds, sparsities, n_tokens, config.n_features, "toy-train")
    eval_features = FeatureSampler(seeds, sparsities, n_tokens, config.n_features, "toy-eval").sample(
        config.eval_batch_size
    )
    return _Training(
        config=config,
        instances=instances,
        lambdas=lambdas,
        template_matrix=template_matrix,
        importance=importance,
        params=params,
        trainable=trainable,
        optimizer=optimizer,
        train_sampler=train_sampler,
        eval_features=eval_features,
    )


def _train_step(training: _Training) -> None:
    """One AdamW step on a fresh batch ``[I, batch_size, 1 + m, N]``; the loss is summed over instances."""
    config = training.config
    recon, attention = training.losses(
        training.train_sampler.sample(config.batch_size), reconstruct=config.train_features
    )
    training.optimizer.zero_grad(set_to_none=True)
    (recon + training.lambdas * attention).sum().backward()
    training.optimizer.step()


def _raise_if_diverged(step: int, loss: torch.Tensor, instances: list[dict], max_loss: float) -> None:
    """Stop on the first instance whose total loss ``loss [I]`` is non-finite or above ``max_loss``."""
    bad = (~torch.isfinite(loss)) | (loss.abs() > max_loss)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        row = instances[i]
        raise TrainingDivergedError(
            f"toy training diverged at step {step}: instance {i} (seed={row['seed']}, sparsity={row['sparsity']}, "
            f"lam={row['lam']}) has loss {float(loss[i]):.4g} (limit max_loss={max_loss:g}). "
            "Lower lr or target_scale, or raise max_loss if the scale is intended."
        )


def _evaluate(training: _Training, step: int) -> dict[str, np.ndarray]:
    """Losses on the fixed evaluation batch (after the divergence check), alignment and closed-form metrics.

    Returns:
        one trajectory record: column name -> array with a leading ``instance`` axis.
    """
    config, params, instances = training.config, training.params, training.instances
    with torch.no_grad():
        recon, attention = training.losses(training.eval_features)
    _raise_if_diverged(step, recon + training.lambdas * attention, instances, config.max_loss)
    template = config.template_spec
    record = head_feature_metrics(params.W, params.W_Q, params.W_K, template, config.target_scale)
    sparsities = [r["sparsity"] for r in instances]
    record.update(closed_form_metrics(params.W, params.W_Q, params.W_K, template, config.target_scale, sparsities))
    record.update(
        step=np.full(len(instances), step),
        recon_loss=recon.cpu().numpy().astype(np.float64),
        attention_loss=attention.cpu().numpy().astype(np.float64),
    )
    return record


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
    training = _start_training(config, device, initial)
    trajectory = [_evaluate(training, 0)]
    desc = f"toy {config.template} x{len(training.instances)}"
    bar = tqdm(range(1, config.steps + 1), disable=not progress, file=progress_file, mininterval=5.0, desc=desc)
    for step in bar:
        if training.optimizer is not None:
            _train_step(training)
        if step % config.log_every == 0 or step == config.steps:
            trajectory.append(_evaluate(training, step))
            bar.set_postfix(
                recon=f"{trajectory[-1]['recon_loss'].mean():.4f}",
                attn=f"{trajectory[-1]['attention_loss'].mean():.4f}",
                cos=f"{np.nanmean(trajectory[-1]['mean_matched_cos']):.3f}",
            )
    bar.close()
    for tensor in training.trainable:
        tensor.requires_grad_(False)
    n_instances = len(training.instances)
    log.info("trained %d instances of %s for %d steps on %s", n_instances, config.template, config.steps, device)
    return ToyRun(config, training.instances, training.params, trajectory[-1], trajectory)


def run_columns(run: ToyRun, experiment: str) -> dict[str, dict[str, object]]:
    """Column data of the three per-run tables, keyed like the ``toy_train`` rule's outputs.

    Returns:
        ``{"weights": ..., "metrics": ..., "trajectory": ...}`` for :data:`~svalign.tables.TOY_WEIGHTS`,
        :data:`~svalign.tables.TOY_METRICS` and :data:`~svalign.tables.TOY_TRAJECTORY`.
    """
    template = run.config.template_spec
    return {
        "weights": weights_columns(run.instances, run.params.numpy(), experiment),
        "metrics": metrics_columns(template, run.instances, run.final, experiment),
        "trajectory": trajectory_columns(template, run.instances, run.trajectory, experiment),
    }
