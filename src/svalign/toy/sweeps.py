"""The toy's trained sweeps: one-at-a-time sweep rows (paper App. A and E) and the anisotropy sweep (Fig 4).

The sweep grid itself (points, groups of one shape, their :class:`~svalign.toy.config.ToyConfig`) is torch-free and
lives in :mod:`svalign.toy.config`; this module holds what needs a trained run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from svalign.toy.config import SWEEP_SHAPE, ToyConfig
from svalign.toy.theory import anisotropic_features, anisotropy_columns
from svalign.toy.train import ToyRun, init_params, train_toy

__all__ = ["run_anisotropy", "sweep_rows"]


def sweep_rows(run: ToyRun) -> dict[str, np.ndarray]:
    """Column data of :data:`~svalign.tables.TOY_SWEEP` for a run of sweep points (one row per instance: point ×
    seed)."""
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


def run_anisotropy(
    config: ToyConfig,
    interference_norms: Sequence[float],
    feature_seeds: Sequence[int],
    device: torch.device | str,
    progress_file=None,
) -> dict[str, object]:
    """Train only the head on frozen anisotropic features, one batched run for every (norm, seed).

    Every instance gets the features of :func:`~svalign.toy.theory.anisotropic_features` for its (norm, seed); its
    head init and data stream come from its own instance seed. Returns the column data of
    :data:`~svalign.tables.TOY_ANISOTROPY`.
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
    start.W = features  # [I, D, N]
    run = train_toy(config, device, initial=start, progress=progress_file is not None, progress_file=progress_file)
    return anisotropy_columns(config, grid, features, run.final)
