"""Figures of the toy stage: geometry (paper Fig 1), alignment and spectrum (Fig 2), training dynamics (Fig 3), the
anisotropy sweep (Fig 4) with the real dictionaries' interference marked, and the robustness sweeps (App. A, E)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from svalign import definitions
from svalign.figures.canvas import HEATMAP, PALETTE, set_theme

__all__ = [
    "anisotropy_figure",
    "sweeps_figure",
    "toy_alignment_figure",
    "toy_dynamics_figure",
    "toy_geometry_figure",
]


def _select(metrics: pd.DataFrame, seed: int, head: bool) -> pd.Series | None:
    """The row of ``seed`` with the largest λ (head) or λ = 0 (control); None if absent."""
    rows = metrics[(metrics["seed"] == seed) & ((metrics["lam"] > 0) if head else (metrics["lam"] == 0))]
    if rows.empty:
        return None
    return rows.sort_values(["lam", "sparsity"], ascending=[False, True]).iloc[0]


def _require(row: pd.Series | None, what: str, seed: int) -> pd.Series:
    if row is None:
        raise ValueError(f"no {what} instance with seed {seed} in the metrics table (toy.figures.seed)")
    return row


def _feature_order(row: pd.Series) -> np.ndarray:
    """Attended features first (query then key of each pair, by strength), then the rest."""
    attended = list(dict.fromkeys(np.ravel(np.stack([row["pair_query"], row["pair_key"]], axis=1)).tolist()))
    rest = [i for i in range(len(row["feature_norms"])) if i not in set(attended)]
    return np.array(attended + rest)


def toy_geometry_figure(metrics: pd.DataFrame, seed: int = 0) -> plt.Figure:
    """Paper Fig 1a/1b: |cos| between feature directions without a head (λ = 0) and with one.

    Attended features are ordered first; with the head their rows and columns should be ~0 off the
    diagonal (orthogonal to everything else), without it they share directions like any other feature.
    """
    set_theme()
    panels = [
        (r, t)
        for r, t in ((_select(metrics, seed, False), "no head (λ = 0)"), (_select(metrics, seed, True), None))
        if r is not None
    ]
    if not panels:
        raise ValueError(f"no instance with seed {seed} in the metrics table (toy.figures.seed)")
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.2), squeeze=False, layout="constrained")
    order = _feature_order(panels[-1][0])
    n_attended = len(set(np.concatenate([panels[-1][0]["pair_query"], panels[-1][0]["pair_key"]])))
    for ax, (row, title) in zip(axes[0], panels, strict=True):
        gram = row["gram"]
        norms = np.sqrt(np.clip(np.diag(gram), 1e-12, None))
        cosine = np.abs(gram / norms[:, None] / norms[None, :])[np.ix_(order, order)]
        sns.heatmap(
            cosine,
            ax=ax,
            vmin=0,
            vmax=1,
            cmap=HEATMAP,
            square=True,
            cbar_kws={"label": "|cos(w_i, w_j)|"},
            xticklabels=False,
            yticklabels=False,
        )
        ax.axhline(n_attended, color="tab:cyan", lw=1)
        ax.axvline(n_attended, color="tab:cyan", lw=1)
        label = title or f"with head (λ = {row['lam']:g})"
        ax.set_title(
            f"{label}\nmax |cos| with any other feature: query side {row['max_interference_query']:.2f}, "
            f"key side {row['max_interference_key']:.2f}"
        )
        ax.set_xlabel(f"feature (first {n_attended} attended)")
        ax.set_ylabel("feature")
    figure.suptitle(f"Feature geometry, {row['experiment']} (seed {seed}, S = {row['sparsity']:g})")
    return figure


def toy_alignment_figure(metrics: pd.DataFrame, seed: int = 0, extra_ranks: int = 4) -> plt.Figure:
    """Paper Fig 2a/2b: |cos| of features with the left (u_k) and right (v_k) singular vectors, and σ.

    Shows the first ``P + extra_ranks`` singular pairs (P template pairs) and the attended features,
    ordered by pair strength, plus the full σ spectrum with the matched σ marked.
    """
    set_theme()
    row = _require(_select(metrics, seed, True), "head (λ > 0)", seed)
    n_pairs = len(row["pair_value"])
    n_ranks = min(len(row["sigma"]), n_pairs + extra_ranks)
    queries, keys = np.asarray(row["pair_query"]), np.asarray(row["pair_key"])
    figure, axes = plt.subplots(
        1, 3, figsize=(15, 3.4 + 0.18 * n_pairs), gridspec_kw={"width_ratios": [1, 1, 1.1]}, layout="constrained"
    )
    for ax, features, cos, side in (
        (axes[0], queries, row["cos_u"], "u_k (query side)"),
        (axes[1], keys, row["cos_v"], "v_k (key side)"),
    ):
        sns.heatmap(
            cos[np.ix_(features, np.arange(n_ranks))],
            ax=ax,
            vmin=0,
            vmax=1,
            cmap=HEATMAP,
            cbar_kws={"label": "|cos|"},
            xticklabels=np.arange(1, n_ranks + 1),
            yticklabels=[f"w{i}" for i in features],
        )
        ax.set_xlabel(f"singular vector {side.split()[0]} (rank k)")
        ax.set_ylabel("attended feature (pair order)")
        ax.set_title(f"|cos(feature, {side})|")
    sigma = np.asarray(row["sigma"])
    ranks = np.arange(1, len(sigma) + 1)
    matched = set(int(k) for k in row["matched_rank"] if k >= 0)
    colours = [sns.color_palette(PALETTE)[1] if k - 1 in matched else sns.color_palette(PALETTE)[7] for k in ranks]
    axes[2].bar(ranks, sigma, color=colours)
    axes[2].set_xlabel("rank k")
    axes[2].set_ylabel("σ_k (logit units)")
    axes[2].set_title("singular values (matched to a pair: orange)")
    spearman = row["spearman_sigma_T"]
    finding = (
        f"mean matched |cos| = {row['mean_matched_cos']:.3f} (min {row['min_matched_cos']:.3f}), "
        f"σ2/σ1 = {row['sigma2_over_sigma1']:.3f}, significant σ: {row['n_significant']}"
        + ("" if np.isnan(spearman) else f", Spearman(σ, T) = {spearman:.2f}")
    )
    figure.suptitle(f"{row['experiment']} (seed {seed}, λ = {row['lam']:g}): {finding}")
    return figure


DYNAMICS_METRICS = {
    "mean_matched_cos": "alignment: mean matched |cos|",
    "max_interference_query": "interference, query feature(s)",
    "max_interference_key": "interference, key feature(s)",
}


def toy_dynamics_figure(trajectory: pd.DataFrame) -> plt.Figure:
    """Paper Fig 3: alignment vs orthogonality over training, mean and range over seeds.

    Left: losses (log scale). Right: mean matched |cos| (alignment) and, for the query-side and key-side
    attended features, the largest |cos| with any other feature (interference; orthogonalisation drives
    it to 0); the no-head control is dashed.
    """
    set_theme()
    frame = trajectory[["step", "seed", "lam", "recon_loss", "attention_loss", *DYNAMICS_METRICS]].copy()
    frame["model"] = np.where(frame["lam"] > 0, "with head (λ = " + frame["lam"].map("{:g}".format) + ")", "no head")
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.4), layout="constrained")
    losses = frame[frame["lam"] > 0].melt(
        id_vars=["step", "seed"], value_vars=["recon_loss", "attention_loss"], var_name="loss", value_name="value"
    )
    sns.lineplot(losses, x="step", y="value", hue="loss", errorbar=("pi", 100), ax=axes[0])
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss on the evaluation batch")
    axes[0].set_title("losses (with head)")
    metrics = frame.melt(
        id_vars=["step", "seed", "model"], value_vars=list(DYNAMICS_METRICS), var_name="metric", value_name="value"
    )
    # The control's head is never trained: its "alignment" is that of a random matrix, so leave it out.
    metrics = metrics[(metrics["model"] != "no head") | (metrics["metric"] != "mean_matched_cos")]
    metrics["metric"] = metrics["metric"].map(DYNAMICS_METRICS)
    sns.lineplot(metrics, x="step", y="value", hue="metric", style="model", errorbar=("pi", 100), ax=axes[1])
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_ylabel("|cos|")
    head = frame[frame["lam"] > 0]
    final = head[head["step"] == head["step"].max()]
    axes[1].set_title(
        f"final: alignment {final['mean_matched_cos'].mean():.3f}; interference query "
        f"{final['max_interference_query'].mean():.2f}, key {final['max_interference_key'].mean():.2f}"
    )
    for ax in axes:
        ax.set_xlabel("training step")
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1), fontsize="small", title=None, frameon=False)
    figure.suptitle(f"Training dynamics, {trajectory['experiment'].iloc[0]} (mean and range over seeds)")
    return figure


SAE_NORMS = (("interference_norm", "all", "-", "v"), ("interference_norm_active", "active", ":", "^"))


def _sae_markers(ax: plt.Axes, sae: pd.DataFrame) -> None:
    """Each SAE site's ‖DᵀD − I‖₂ (:func:`svalign.figures.sae.site_interference`) at the foot of the axis: all
    latents (solid line, ▼) and the latents active on the prompts (dotted, ▲), one colour per site."""
    for colour, row in zip(sns.color_palette(PALETTE)[2:], sae.itertuples(), strict=False):
        for column, what, ls, marker in SAE_NORMS:
            value = getattr(row, column)
            label = f"{row.model} L{row.layer} SAE, {what} latents ({value:.1f})"
            ax.axvline(value, color=colour, ls=ls, lw=1.2)
            ax.plot([value], [0.04], marker, color=colour, ms=7, transform=ax.get_xaxis_transform(), label=label)


def anisotropy_figure(
    table: pd.DataFrame,
    threshold: float = definitions.PAPER_ALIGNMENT_LEVEL,
    band: tuple[float, float] = definitions.PAPER_SAE_INTERFERENCE,
    sae: pd.DataFrame | None = None,
) -> plt.Figure:
    """Paper Fig 4: mean matched |cos| vs the features' interference ‖XᵀX − I‖₂, trained head and closed form.

    Lines are means over feature seeds, bands their range; the dashed line is the paper's 0.75 and the shaded
    span its GPT-2 estimate of ‖E_X‖₂ (10–55); ``sae`` (model, layer, interference_norm, interference_norm_active)
    adds our SAE dictionaries' norms (:func:`_sae_markers`). The title's crossing is
    :func:`svalign.definitions.crossing_text`, the words the results table uses.
    """
    set_theme()
    long = table.melt(
        id_vars=["interference_norm", "feature_seed"],
        value_vars=["mean_matched_cos", "closed_form_mean_matched_cos"],
        var_name="head",
        value_name="mean matched |cos|",
    )
    long["head"] = long["head"].map({"mean_matched_cos": "trained", "closed_form_mean_matched_cos": "closed form Ω*"})
    figure, ax = plt.subplots(figsize=(7.5, 4.6), layout="constrained")
    ax.axvspan(*band, color="0.9", zorder=0, label=f"GPT-2 SAE estimate ({band[0]:g}–{band[1]:g})")
    sns.lineplot(
        long,
        x="interference_norm",
        y="mean matched |cos|",
        hue="head",
        style="head",
        markers=True,
        errorbar=("pi", 100),
        ax=ax,
    )
    ax.axhline(threshold, color="0.3", ls="--", lw=1, label=f"paper: > {threshold}")
    if sae is not None:
        _sae_markers(ax, sae)
    ax.set_xlabel("interference ‖XᵀX − I‖₂")
    ax.set_ylim(0, 1.02)
    ax.legend(**({"loc": "lower left"} if sae is None else {"loc": "upper left", "bbox_to_anchor": (1.01, 1)}))
    trained, _ = definitions.anisotropy_curves(table)
    ax.set_title(
        f"Alignment under interference: trained mean |cos| {definitions.crossing_text(trained, threshold, '‖E‖₂')}"
    )
    return figure


def sweeps_figure(table: pd.DataFrame, base: dict[str, float]) -> plt.Figure:
    """Paper App. A/E: matched |cos| against each swept parameter, the others at their base values.

    Dots are seeds, the line their mean. For d_head the panel also shows how many pairs got a singular pair of
    their own (Hungarian) and how many distinct singular pairs best matching uses: below the number of pairs
    the weakest pairs share.
    """
    set_theme()
    names = [n for n in ("lam", "sparsity", "n_features", "context_len", "d_head") if table[n].nunique() > 1]
    figure, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.8), layout="constrained", squeeze=False)
    labels = {
        "lam": "λ",
        "sparsity": "sparsity S",
        "n_features": "features N",
        "context_len": "context m",
        "d_head": "head dim H",
    }
    for ax, name in zip(axes[0], names, strict=True):
        others = [n for n in labels if n != name]
        rows = table[np.logical_and.reduce([np.isclose(table[o], base[o]) for o in others])].sort_values(name)
        rows = rows.assign(value=rows[name].map("{:g}".format))
        sns.stripplot(rows, x="value", y="mean_matched_cos", color="0.4", size=4, ax=ax)
        sns.pointplot(
            rows,
            x="value",
            y="mean_matched_cos",
            errorbar=None,
            color=sns.color_palette(PALETTE)[0],
            ax=ax,
        )
        if name == "d_head":
            counts = rows.groupby("value", sort=False)[["n_matched", "n_distinct_best"]].mean()
            twin = ax.twinx()
            twin.plot(
                range(len(counts)),
                counts["n_distinct_best"],
                "s--",
                color=sns.color_palette(PALETTE)[3],
                label="distinct singular pairs (best match)",
            )
            twin.set_ylabel("singular pairs used")
            twin.set_ylim(0, rows["n_pairs"].max() + 0.5)
            twin.grid(False)
            twin.legend(loc="lower center", fontsize="x-small")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(labels[name])
        ax.set_ylabel("mean matched |cos|")
        ax.set_title(f"{labels[name]} (others at base)")
    figure.suptitle("Robustness of alignment (one parameter at a time; dots: seeds)")
    return figure
