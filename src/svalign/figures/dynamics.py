"""Figure of the dynamics stage: S over training checkpoints, real beside the rotation null (paper Fig 7b)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from svalign.figures.canvas import PALETTE, set_theme

__all__ = [
    "dynamics_figure",
]


def dynamics_figure(table: pd.DataFrame) -> plt.Figure:
    """SAD of the tracked head across training checkpoints, real vs rotation null (paper Fig 7b analogue).

    Panels: median Rolls–Tovée S, median N_recon, then the checkpoint's losses with the head's induction and
    previous-token scores. x: training step on a symlog axis (step 0, the init, stays visible).
    """
    set_theme()
    rows = table[table["chosen"]].sort_values("step")
    if rows.empty:
        raise ValueError("the dynamics table marks no chosen head")
    layer, head = int(rows["layer"].iloc[0]), int(rows["head"].iloc[0])
    palette = sns.color_palette(PALETTE)
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.6), layout="constrained")
    for ax, (real, null, label) in zip(
        axes[:2],
        [
            ("median_sparseness", "null_median_sparseness", "median Rolls–Tovée S (lower = sparser)"),
            ("median_n_recon", "null_median_n_recon", "median N_recon (terms)"),
        ],
        strict=True,
    ):
        ax.plot(rows["step"], rows[real], "o-", ms=3, color=palette[0], label="trained")
        ax.plot(rows["step"], rows[null], "s--", ms=3, color=palette[1], label="rotation null")
        ax.set_ylabel(label)
        ax.legend(fontsize="small")
    scored = rows.dropna(subset=["loss"])
    if not scored.empty:
        axes[2].plot(scored["step"], scored["loss"], color=palette[2], label="loss (all tokens)")
        axes[2].plot(scored["step"], scored["icl_loss"], color=palette[3], label="in-context loss (copy)")
        axes[2].set_ylabel("cross-entropy (nats)")
        twin = axes[2].twinx()
        twin.plot(scored["step"], scored["induction_score"], ":", color=palette[4], label="induction score")
        twin.plot(scored["step"], scored["previous_token_score"], "-.", color=palette[5], label="previous-token score")
        twin.set_ylim(0, 1)
        twin.set_ylabel(f"L{layer}H{head} attention score")
        twin.grid(False)
        lines = axes[2].get_legend_handles_labels()
        twin_lines = twin.get_legend_handles_labels()
        axes[2].legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], fontsize="small", loc="center right")
    else:
        axes[2].text(0.5, 0.5, "no task scores for external checkpoints", ha="center", va="center")
    for ax in axes:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("training step (optimiser updates, symlog)")
    first, last = rows.iloc[0], rows.iloc[-1]
    figure.suptitle(
        f"SAD of L{layer}H{head} over training: S {first['median_sparseness']:.2f} → {last['median_sparseness']:.2f} "
        f"(null {first['null_median_sparseness']:.2f} → {last['null_median_sparseness']:.2f}), "
        f"N_recon {first['median_n_recon']:.0f} → {last['median_n_recon']:.0f}"
    )
    return figure
