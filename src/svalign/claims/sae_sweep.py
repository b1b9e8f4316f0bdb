"""The SAE sweep's summary: the stage rerun at expansion × k × seed points, and how stable its verdicts are across
seeds (the points themselves: :func:`svalign.sae.config.sweep_points`).

One SAE is one draw: its latents depend on the seed of its init and of the token order, and on its size and
sparsity. A verdict about "the features" should not hang on that draw. The sweep (config ``sae.sweep``, rules
``sae_train_sweep``, ``sae_align_sweep`` and ``sae_sweep_summary``, off by default: a GPU or cluster run) trains
and analyses every point exactly as the default stage does, then :func:`sweep_rows` reads each point's tables into
one row per site: quality, the alignment counts under every null, the controls, the attribution rates and both
claims' verdicts; and per (model, expansion, k) across the seeds: the share of heads whose aligned flag every seed
agrees on and whether every seed gives the same verdicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from svalign import io
from svalign.claims.sae import sae_alignment_claim, sae_attribution_claim
from svalign.definitions import NULLS
from svalign.io import PathLike
from svalign.sae.config import SWEEP_KEYS
from svalign.stats import BootstrapOptions
from svalign.tables import SAE_HEADS, SAE_SITES

__all__ = ["sweep_rows"]


def _point_rows(
    point: Mapping[str, int], paths: Mapping[str, PathLike], model: str, options: BootstrapOptions
) -> list[dict[str, Any]]:
    """One row per site of one sweep point (trained variant) from its ``heads``, ``sites`` and ``attribution``."""
    heads = io.read_frame(paths["heads"], SAE_HEADS)
    heads = heads[heads["variant"] == "trained"]
    sites = io.read_frame(paths["sites"], SAE_SITES)
    sites = sites[sites["variant"] == "trained"]
    verdicts = {
        "alignment_verdict": sae_alignment_claim(paths["heads"], paths["sites"], model, options).verdict,
        "attribution_verdict": sae_attribution_claim(paths["attribution"], paths["sites"], model, options).verdict,
    }
    rows = []
    for site in sites.itertuples():
        mine = heads[heads["layer"] == site.layer].sort_values("head")
        rows.append(
            {
                "model": model,
                "layer": int(site.layer),
                **{key: int(point[key]) for key in SWEEP_KEYS},
                "n_heads": len(mine),
                "heldout_explained_variance": float(site.heldout_explained_variance),
                "prompt_explained_variance": float(site.prompt_explained_variance),
                "heldout_loss_recovered": float(site.heldout_loss_recovered),
                "sae_usable": bool(site.sae_usable),
                "aligned_fraction": float(site.aligned_fraction),
                **{f"{null}_aligned_bh": int(mine[f"{null}_aligned_bh"].sum()) for null in NULLS},
                "fake_aligned_mean": float(site.fake_aligned_mean),
                "match_rate": float(site.match_rate),
                "random_match_rate": float(site.random_match_rate),
                "latent_share": float(site.latent_share),
                **verdicts,
                "aligned_heads": mine["aligned"].to_numpy(dtype=bool),
            }
        )
    return rows


def sweep_rows(
    points: Sequence[tuple[Mapping[str, int], Mapping[str, PathLike]]],
    model: str,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Column data for :data:`svalign.tables.SAE_SWEEP`: one row per sweep point and site of ``model``.

    Args:
        points: (the point's ``expansion_factor``, ``k``, ``seed``; its ``heads``, ``sites`` and ``attribution``
            tables) for every point.
        options: the claims' bootstrap options (``report`` config section).

    Stability, per (expansion, k) and site across its seeds: ``head_agreement``, the share of the site's heads
    whose ``aligned`` flag is the same under every seed (1 with one seed), and ``verdicts_stable``, whether every
    seed gives the same alignment and attribution verdicts.
    """
    bootstrap = BootstrapOptions.from_mapping(options)
    frame = pd.DataFrame([row for point, paths in points for row in _point_rows(point, paths, model, bootstrap)])
    if frame.empty:
        raise ValueError(f"no sweep point of {model} has a trained SAE site")
    agreement, stable = np.zeros(len(frame)), np.zeros(len(frame), dtype=bool)
    for _, group in frame.groupby(["layer", "expansion_factor", "k"]):
        flags = np.stack(group["aligned_heads"].to_list())  # [seeds, heads]
        agreement[group.index] = float((flags == flags[:1]).all(0).mean())
        verdicts = group[["alignment_verdict", "attribution_verdict"]].drop_duplicates()
        stable[group.index] = len(verdicts) == 1
    frame = frame.drop(columns="aligned_heads").assign(
        n_seeds=frame.groupby(["layer", "expansion_factor", "k"])["seed"].transform("nunique").to_numpy(),
        head_agreement=agreement,
        verdicts_stable=stable,
    )
    frame = frame.sort_values(["layer", "expansion_factor", "k", "seed"]).reset_index(drop=True)
    return {name: frame[name].to_list() for name in frame.columns}
