"""Figure of the SVD stage: every head's singular-value spectrum, trained beside random init."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from svalign import definitions
from svalign.figures.canvas import PALETTE, set_theme

__all__ = [
    "spectra_figure",
]


def spectra_figure(tables: dict[str, pd.DataFrame], model: str) -> plt.Figure:
    """Singular-value spectra of every head: σ_k/σ_1 (log colour scale), one row per (layer, head).

    One heatmap per variant (trained, random-init twin) side by side, layers separated by lines; the right
    panel gives the median over heads of σ_k/σ_1 per variant. RoPE models show offset δ = 0.
    """
    set_theme()
    variants = list(tables)
    figure, axes = plt.subplots(
        1,
        len(variants) + 1,
        figsize=(5 * len(variants) + 5, 7),
        layout="constrained",
        gridspec_kw={"width_ratios": [1] * len(variants) + [1.2]},
    )
    palette = dict(zip(variants, sns.color_palette(PALETTE), strict=False))
    sigmas = {}
    for variant in variants:
        frame = tables[variant]
        frame = frame[frame["offset"] == 0].sort_values(["layer", "head"])
        sigmas[variant] = (frame, np.stack(frame["sigma"].to_numpy()))
    # Colour range from the data (to the next half decade), so that the spectra use the whole scale.
    lowest = min(np.log10(np.clip(sigma / sigma[:, :1], 1e-4, 1.0)).min() for _, sigma in sigmas.values())
    vmin = max(-4.0, np.floor(lowest * 2) / 2)
    summary = []
    for ax, variant in zip(axes, variants, strict=False):
        frame, sigma = sigmas[variant]
        ratio = np.clip(sigma / sigma[:, :1], 1e-4, 1.0)
        n_layers, n_heads = frame["layer"].max() + 1, frame["head"].max() + 1
        image = ax.imshow(np.log10(ratio), aspect="auto", cmap="mako", vmin=vmin, vmax=0, interpolation="nearest")
        for boundary in range(1, n_layers):
            ax.axhline(boundary * n_heads - 0.5, color="white", lw=0.4)
        step = max(1, n_layers // 10)
        ax.set_yticks(
            np.arange(0, n_layers, step) * n_heads + (n_heads - 1) / 2, [str(i) for i in range(0, n_layers, step)]
        )
        ax.set_ylabel(f"layer ({n_heads} heads each)")
        ax.set_xlabel("rank k")
        ax.grid(False)
        significant = definitions.SIGNIFICANT_SIGMA_RATIO
        effective = (sigma / sigma[:, :1] > significant).sum(1)
        ax.set_title(f"{variant}: median #σ_k > {significant:g} σ_1 = {np.median(effective):.0f} of {sigma.shape[1]}")
        for k, value in enumerate(np.median(ratio, axis=0)):
            summary.append({"variant": variant, "k": k + 1, "median σ_k/σ_1": value})
    figure.colorbar(image, ax=axes[: len(variants)], label="log10 σ_k/σ_1", shrink=0.8)
    sns.lineplot(pd.DataFrame(summary), x="k", y="median σ_k/σ_1", hue="variant", palette=palette, ax=axes[-1])
    axes[-1].set_yscale("log")
    axes[-1].set_xlabel("rank k")
    axes[-1].yaxis.tick_right()  # keeps its label clear of the heatmaps' colour bar
    axes[-1].yaxis.set_label_position("right")
    axes[-1].set_title("median over heads")
    last = {variant: float(np.median(sigma[:, -1] / sigma[:, 0])) for variant, (_, sigma) in sigmas.items()}
    finding = ", ".join(f"{variant} {value:.2f}" for variant, value in last.items())
    figure.suptitle(f"{model}: QK spectra of every head; median σ_r/σ_1 (last rank): {finding}")
    return figure
