"""Figures of the SAD stage: the per-head map (paper Fig 9a), the contributions by σ rank (Fig 8) and the N_recon
distribution, each real beside the nulls (:mod:`svalign.nulls`) and the random-init twin."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from svalign import definitions
from svalign.definitions import NULL_PREFIXES, NULLS
from svalign.figures.canvas import set_theme

__all__ = [
    "sad_heads_figure",
    "sad_nrecon_figure",
    "sad_ranks_figure",
]


def _head_grid(summary: pd.DataFrame, column: str) -> np.ndarray:
    grid = summary.pivot(index="layer", columns="head", values=column)
    return grid.to_numpy(dtype=float)


def sad_heads_figure(summaries: dict[str, pd.DataFrame], model: str) -> plt.Figure:
    """Median N_recon (top row) and median Rolls–Tovée S (bottom row) of every head, layer × head:
    trained model, its rotation null, and the random-init twin (IOI prompts)."""
    set_theme()
    trained = summaries["trained"]
    panels = [("trained", trained, ""), ("rotation null", trained, "null_")]
    if "random" in summaries:
        panels.append(("random init", summaries["random"], ""))
    figure, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 8), layout="constrained", squeeze=False)
    rank = int(trained["rank"].iloc[0])
    for col, (title, frame, prefix) in enumerate(panels):
        for row, (metric, label, vmax, cmap) in enumerate(
            (
                ("median_n_recon", "median N_recon", min(rank, 16), "rocket_r"),
                ("median_sparseness", "median S", 1.0, "mako_r"),
            )
        ):
            ax = axes[row, col]
            grid = _head_grid(frame, prefix + metric)
            image = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0 if row else 1, vmax=vmax, interpolation="nearest")
            ax.grid(False)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            value = np.nanmedian(grid)
            ax.set_title(f"{title}: {label} (median over heads {value:.2f})")
            if col == len(panels) - 1:
                figure.colorbar(image, ax=axes[row, :], label=label, shrink=0.8)
    le4, limit = definitions.share_at_most(trained["median_n_recon"]), definitions.N_RECON_LIMIT
    order = trained["n_recon_order"].iloc[0]
    figure.suptitle(
        f"{model}, IOI prompts: {le4:.1%} of heads have median N_recon ≤ {limit} ({order} ordering); "
        "lower S = sparser decomposition"
    )
    return figure


def _null_sources(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(null, column prefix, label) of each null the run ran (its shares are not all NaN)."""
    return [
        (null, NULL_PREFIXES[null], f"{null} null")
        for null in NULLS
        if not np.isnan(np.stack(frame[NULL_PREFIXES[null] + "share_by_rank"].to_numpy())).all()
    ]


def _null_bands(ax: plt.Axes, trained: pd.DataFrame) -> None:
    """Every head's median S (x) against each null's (y, draws pooled), with the range of the draws' medians as a
    vertical bar: above the diagonal, the head is sparser than the null."""
    real = trained["median_sparseness"].to_numpy()
    colours = dict(zip(NULLS, sns.color_palette("Set2", len(NULLS)), strict=True))
    for null, prefix, label in _null_sources(trained):
        draws = np.stack(trained[prefix + "draw_median_sparseness"].to_numpy())
        median = np.nanmedian(draws, 1)
        significant = int(trained[prefix + "sparser_bh"].sum())
        ax.errorbar(
            real,
            median,
            yerr=np.abs(np.stack([np.nanmin(draws, 1), np.nanmax(draws, 1)]) - median),
            fmt="o",
            ms=2.5,
            elinewidth=0.6,
            alpha=0.7,
            color=colours[null],
            label=f"{label} ({significant} of {len(real)} heads significantly sparser)",
        )
    limits = [0, 1.02 * np.nanmax([real.max(), ax.get_ylim()[1]])]
    ax.plot(limits, limits, color="0.3", lw=0.8, ls="--", label="null S = head S")
    ax.set(xlim=limits, ylim=limits, xlabel="head's median S", ylabel="null's median S (bar: range over draws)")
    ax.set_title("each head against each null: above the diagonal = sparser (BH 5 %)")
    ax.legend(fontsize="small", loc="lower right")


def sad_ranks_figure(summaries: dict[str, pd.DataFrame], model: str) -> plt.Figure:
    """Paper Fig 8 / 9a analogues: share of |c_k| by singular-value rank (real vs each null vs random init), the
    pooled distribution of N_recon, and every trained head's median S inside each null's band (IOI prompts)."""
    set_theme()
    rows, hist_rows = [], []
    for variant, frame in summaries.items():
        name = {"random": "random init"}.get(variant, variant)
        nulls = [(prefix, label) for _, prefix, label in _null_sources(frame)] if variant == "trained" else []
        sources = [("", name), *nulls]
        for prefix, label in sources:
            share = np.stack(frame[prefix + "share_by_rank"].to_numpy())
            weights = frame["n_pairs"].to_numpy(dtype=float)
            mean = (share * weights[:, None]).sum(0) / max(weights.sum(), 1)
            rows += [{"rank k": k + 1, "mean |c_k| / Σ|c|": v, "source": label} for k, v in enumerate(mean)]
        hist = np.stack(frame["n_recon_hist"].to_numpy()).sum(0).astype(float)
        hist /= max(hist.sum(), 1)
        hist_rows += [{"N_recon": n + 1, "fraction of pairs": v, "model": name} for n, v in enumerate(hist)]
    figure, axes = plt.subplots(1, 3, figsize=(19, 4.8), layout="constrained")
    sns.lineplot(pd.DataFrame(rows), x="rank k", y="mean |c_k| / Σ|c|", hue="source", ax=axes[0])
    axes[0].set_title("where the relative terms sit in the spectrum (firing pairs)")
    hist = pd.DataFrame(hist_rows)
    hist = hist[hist["N_recon"] <= 16]
    sns.barplot(hist, x="N_recon", y="fraction of pairs", hue="model", ax=axes[1])
    axes[1].set_title("N_recon of firing pairs with ℓ̃ > 0 (first 16)")
    trained = summaries["trained"]
    _null_bands(axes[2], trained)
    lower = definitions.pooled_share(trained["frac_top_lower_half"], trained["n_pairs"])
    figure.suptitle(
        f"{model}, IOI prompts: the largest term comes from the lower half of the spectrum in {lower:.0%} of pairs"
    )
    return figure


def sad_nrecon_figure(summaries: dict[str, pd.DataFrame], model: str, max_n: int = 16) -> plt.Figure:
    """Paper Fig 9a analogue: the distribution of N_recon for every head (rows: layer.head), IOI prompts.

    Colour = fraction of the head's firing pairs (with ℓ̃ > 0) that need exactly n terms; the last column
    collects n ≥ max_n. Trained model beside its random-init twin.
    """
    set_theme()
    figure, axes = plt.subplots(
        1, len(summaries), figsize=(5.5 * len(summaries), 8), layout="constrained", squeeze=False
    )
    for ax, (variant, frame) in zip(axes[0], summaries.items(), strict=True):
        frame = frame.sort_values(["layer", "head"])
        hist = np.stack(frame["n_recon_hist"].to_numpy()).astype(float)
        hist = np.concatenate([hist[:, : max_n - 1], hist[:, max_n - 1 :].sum(1, keepdims=True)], 1)
        fraction = hist / np.clip(hist.sum(1, keepdims=True), 1, None)
        image = ax.imshow(fraction, aspect="auto", cmap="rocket_r", vmin=0, vmax=1, interpolation="nearest")
        n_heads = int(frame["head"].max()) + 1
        n_layers = int(frame["layer"].max()) + 1
        step = max(1, n_layers // 10)
        ax.set_yticks(
            np.arange(0, n_layers, step) * n_heads + (n_heads - 1) / 2, [str(i) for i in range(0, n_layers, step)]
        )
        ax.set_xticks(np.arange(max_n), [str(n) for n in range(1, max_n)] + [f"≥{max_n}"])
        ax.set_xlabel("N_recon (terms to reconstruct ℓ̃)")
        ax.set_ylabel(f"layer ({n_heads} heads each)")
        ax.grid(False)
        within = fraction[:, : definitions.N_RECON_LIMIT].sum(1)
        ax.set_title(
            f"{variant}: median head has {np.median(within):.0%} of pairs with N_recon ≤ {definitions.N_RECON_LIMIT}"
        )
    figure.colorbar(image, ax=axes[0], label="fraction of the head's firing pairs", shrink=0.8)
    figure.suptitle(f"{model}, IOI prompts: N_recon per head")
    return figure
