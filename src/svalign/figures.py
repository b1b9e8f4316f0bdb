"""Seaborn figures, drawn only from the pipeline's Parquet tables.

Each ``*_figure`` function takes a DataFrame from :func:`svalign.io.to_frame` (tensor cells are arrays of
their declared shape) and returns a matplotlib Figure; :func:`save_figure` writes PNG (for the report)
and PDF (for papers). One theme and a colour-blind palette throughout.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # rules run headless

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from svalign import definitions, report
from svalign.io import atomic_file

__all__ = [
    "anisotropy_figure",
    "dynamics_figure",
    "sad_heads_figure",
    "sad_nrecon_figure",
    "sad_ranks_figure",
    "save_figure",
    "set_theme",
    "spectra_figure",
    "sweeps_figure",
    "thumbnail",
    "toy_alignment_figure",
    "toy_dynamics_figure",
    "toy_geometry_figure",
]

PALETTE = "colorblind"
HEATMAP = "rocket_r"


def set_theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font_scale=1.1)


def save_figure(
    figure: plt.Figure, png_path: str | os.PathLike[str], pdf_path: str | os.PathLike[str] | None = None
) -> None:
    """Write the figure as PNG (150 dpi) and optionally PDF, each atomically (:func:`svalign.io.atomic_file`)."""
    for path, kwargs in ((png_path, {"dpi": 150}), (pdf_path, {})):
        if path is None:
            continue
        with atomic_file(path) as handle:
            figure.savefig(handle, format=Path(path).suffix.lstrip("."), bbox_inches="tight", **kwargs)
    plt.close(figure)


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
        effective = (sigma / sigma[:, :1] > 0.05).sum(1)
        ax.set_title(f"{variant}: median #σ_k > 0.05 σ_1 = {np.median(effective):.0f} of {sigma.shape[1]}")
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


def sad_ranks_figure(summaries: dict[str, pd.DataFrame], model: str) -> plt.Figure:
    """Paper Fig 8 / 9a analogues: share of |c_k| by singular-value rank (real vs rotation null vs random init),
    and the pooled distribution of N_recon (IOI prompts)."""
    set_theme()
    rows, hist_rows = [], []
    for variant, frame in summaries.items():
        name = {"random": "random init"}.get(variant, variant)
        sources = [("", name)] + ([("null_", "rotation null")] if variant == "trained" else [])
        for prefix, label in sources:
            share = np.stack(frame[prefix + "share_by_rank"].to_numpy())
            weights = frame["n_pairs"].to_numpy(dtype=float)
            mean = (share * weights[:, None]).sum(0) / max(weights.sum(), 1)
            rows += [{"rank k": k + 1, "mean |c_k| / Σ|c|": v, "source": label} for k, v in enumerate(mean)]
        hist = np.stack(frame["n_recon_hist"].to_numpy()).sum(0).astype(float)
        hist /= max(hist.sum(), 1)
        hist_rows += [{"N_recon": n + 1, "fraction of pairs": v, "model": name} for n, v in enumerate(hist)]
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.6), layout="constrained")
    sns.lineplot(pd.DataFrame(rows), x="rank k", y="mean |c_k| / Σ|c|", hue="source", ax=axes[0])
    axes[0].set_title("where the relative terms sit in the spectrum (firing pairs)")
    hist = pd.DataFrame(hist_rows)
    hist = hist[hist["N_recon"] <= 16]
    sns.barplot(hist, x="N_recon", y="fraction of pairs", hue="model", ax=axes[1])
    axes[1].set_title("N_recon of firing pairs with ℓ̃ > 0 (first 16)")
    trained = summaries["trained"]
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


SAE_NORMS = (("interference_norm", "all", "-", "v"), ("interference_norm_active", "active", ":", "^"))


def _sae_markers(ax: plt.Axes, sae: pd.DataFrame) -> None:
    """Each SAE site's ‖DᵀD − I‖₂ (:func:`svalign.sae.figures.site_interference`) at the foot of the axis: all
    latents (solid line, ▼) and the latents active on the prompts (dotted, ▲), one colour per site."""
    for colour, row in zip(sns.color_palette(PALETTE)[2:], sae.itertuples(), strict=False):
        for column, what, ls, marker in SAE_NORMS:
            value = getattr(row, column)
            label = f"{row.model} L{row.layer} SAE, {what} latents ({value:.1f})"
            ax.axvline(value, color=colour, ls=ls, lw=1.2)
            ax.plot([value], [0.04], marker, color=colour, ms=7, transform=ax.get_xaxis_transform(), label=label)


def anisotropy_figure(
    table: pd.DataFrame,
    threshold: float = report.PAPER_ALIGNMENT_LEVEL,
    band: tuple[float, float] = report.PAPER_SAE_INTERFERENCE,
    sae: pd.DataFrame | None = None,
) -> plt.Figure:
    """Paper Fig 4: mean matched |cos| vs the features' interference ‖XᵀX − I‖₂, trained head and closed form.

    Lines are means over feature seeds, bands their range; the dashed line is the paper's 0.75 and the shaded
    span its GPT-2 estimate of ‖E_X‖₂ (10–55); ``sae`` (model, layer, interference_norm, interference_norm_active)
    adds our SAE dictionaries' norms (:func:`_sae_markers`). The title's crossing is
    :func:`svalign.report.crossing_text`, the words the results table uses.
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
    trained, _ = report.anisotropy_curves(table)
    ax.set_title(f"Alignment under interference: trained mean |cos| {report.crossing_text(trained, threshold, '‖E‖₂')}")
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


def thumbnail(png_path: str | os.PathLike[str], out_path: str | os.PathLike[str], width: int = 720) -> Path:
    """A downscaled copy of a figure (README thumbnails), written atomically as an optimised PNG."""
    from PIL import Image

    with Image.open(png_path) as image:
        height = round(image.height * width / image.width)
        small = image.convert("RGB").resize((width, height), Image.LANCZOS)
        with atomic_file(out_path) as handle:
            small.save(handle, format="PNG", optimize=True)
    return Path(out_path)
