"""Figures of the SAE stage, drawn only from its Parquet tables (torch-free; theme and writer of
:mod:`svalign.figures`).

* :func:`alignment_by_rank_figure`: mean best |cos| of the singular vectors with the SAE's decoder directions by σ
  rank, trained vs random-init twin vs the Haar-frame null, one panel per site;
* :func:`head_alignment_figure`: every site head's statistic against the null's quantile, and its attribution
  match rate against the rotation null's and chance.

The SAE markers on the paper's Fig 4 axis are :func:`svalign.figures.anisotropy_figure`'s (their table:
:func:`svalign.captions.site_interference`); caption numbers come from :mod:`svalign.captions`.
"""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from svalign.captions import VARIANT_NAMES, variants_present
from svalign.definitions import pooled_share
from svalign.figures.canvas import PALETTE, set_theme

__all__ = ["alignment_by_rank_figure", "head_alignment_figure"]

SIDE_STYLES = {"u": ("-", "o"), "v": ("--", "s")}
NULL_COLOUR = "0.35"


def _variant_colours(variants: Iterable[str]) -> dict[str, tuple]:
    palette = sns.color_palette(PALETTE)
    return {variant: palette[i] for i, variant in enumerate(variants)}


def _site_title(sites: pd.DataFrame, layer: int) -> str:
    """Panel title: aligned share per variant and the SAE's quality (from :data:`SAE_SITES`)."""
    rows = sites[sites["layer"] == layer].set_index("variant")
    if rows.empty:
        return f"layer {layer}"
    shares = ", ".join(
        f"{VARIANT_NAMES.get(v, v)} {rows.loc[v, 'aligned_fraction']:.0%}" for v in variants_present(rows.reset_index())
    )
    first = rows.iloc[0]
    usable = "usable" if bool(first["sae_usable"]) else "NOT usable"
    return f"layer {layer}: heads aligned {shares}\nSAE explained variance {first['explained_variance']:.2f} ({usable})"


def _rank_panel(ax: plt.Axes, rows: pd.DataFrame, colours: dict, top_singular: int, quantile: float) -> None:
    """One site: mean over heads of best |cos| by rank for each variant and side, the null's mean and band."""
    for variant in variants_present(rows):
        for side, (style, marker) in SIDE_STYLES.items():
            mine = rows[(rows["variant"] == variant) & (rows["side"] == side)]
            if mine.empty:
                continue
            mean = mine.groupby("rank")["best_cos"].mean().sort_index()
            ax.plot(
                mean.index + 1,
                mean.to_numpy(),
                ls=style,
                marker=marker,
                ms=3,
                color=colours[variant],
                label=f"{VARIANT_NAMES.get(variant, variant)}, {side}_k",
            )
    reference = rows[rows["variant"] == variants_present(rows)[0]].groupby("rank")[["null_mean", "null_upper"]].mean()
    ranks = reference.index + 1
    ax.fill_between(
        ranks, 0, reference["null_upper"], color="0.9", zorder=0, label=f"Haar null up to its {quantile:g} quantile"
    )
    ax.plot(ranks, reference["null_mean"], ls=":", color=NULL_COLOUR, label="Haar null mean")
    ax.axvline(top_singular + 0.5, color="0.5", lw=0.8)
    ax.text(top_singular + 0.7, 0.02, f"criterion: top {top_singular}", transform=ax.get_xaxis_transform(), size=8)
    ax.set_xlabel("σ rank k")
    ax.set_ylabel("mean over heads of best |cos| with a decoder direction")


def alignment_by_rank_figure(
    alignment: pd.DataFrame, sites: pd.DataFrame, top_singular: int, null_quantile: float = 0.99
) -> plt.Figure:
    """Mean best |cos| of u_k and v_k with the SAE's decoder directions by σ rank, one panel per site (layer).

    Lines: the mean over the site's heads of :data:`~svalign.tables.SAE_ALIGNMENT` ``best_cos`` for each
    variant (trained, random-init twin) and side (u solid, v dashed). Grey: the Haar-frame null, its mean (dotted)
    and the band up to its ``null_upper`` quantile of one vector's best |cos|. The vertical line closes the top
    ``top_singular`` ranks the criterion averages. Titles: the share of heads aligned beyond the null and the
    SAE's explained variance (:data:`~svalign.tables.SAE_SITES`).
    """
    set_theme()
    layers = sorted(int(layer) for layer in alignment["layer"].unique())
    if not layers:
        raise ValueError("the alignment table has no rows")
    colours = _variant_colours(variants_present(alignment))
    figure, axes = plt.subplots(
        1, len(layers), figsize=(6.2 * len(layers), 4.6), layout="constrained", squeeze=False, sharey=True
    )
    for ax, layer in zip(axes[0], layers, strict=True):
        _rank_panel(ax, alignment[alignment["layer"] == layer], colours, top_singular, null_quantile)
        ax.set_title(_site_title(sites, layer), size=10)
        ax.set_ylim(bottom=0)
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="x-small")
    model = alignment["model"].iloc[0]
    figure.suptitle(f"{model}: singular vectors against SAE decoder directions (mean over heads)")
    return figure


def _head_positions(heads: pd.DataFrame) -> pd.DataFrame:
    """One x position per (layer, head), layers in order."""
    keys = heads[["layer", "head"]].drop_duplicates().sort_values(["layer", "head"]).reset_index(drop=True)
    return keys.assign(x=np.arange(len(keys)))


def _layer_guides(ax: plt.Axes, positions: pd.DataFrame, unusable: set[int]) -> None:
    """Lines between layers, the layer under each block, and a hatch over sites whose SAE is not usable."""
    label = "SAE not usable"
    for layer, block in positions.groupby("layer"):
        start, stop = block["x"].min() - 0.5, block["x"].max() + 0.5
        if start > 0:
            ax.axvline(start, color="0.6", lw=0.8)
        if int(layer) in unusable:
            ax.axvspan(start, stop, facecolor="none", edgecolor="0.85", hatch="//", lw=0, zorder=0, label=label)
            label = None
    ax.set_xlim(-0.5, len(positions) - 0.5)
    step = max(1, len(positions) // 24)
    ticks = positions.iloc[::step]
    ax.set_xticks(ticks["x"], [f"L{int(r.layer)}H{int(r.head)}" for r in ticks.itertuples()], rotation=90, size=7)


def _statistic_panel(ax: plt.Axes, heads: pd.DataFrame, positions: pd.DataFrame, colours: dict) -> None:
    """Each head's statistic per variant, the null quantile (solid) and median (dotted) of the trained site."""
    for variant in variants_present(heads):
        rows = heads[heads["variant"] == variant].merge(positions, on=["layer", "head"]).sort_values("x")
        ax.scatter(
            rows["x"],
            rows["statistic"],
            color=colours[variant],
            marker="o" if variant == "trained" else "x",
            s=22,
            zorder=3,
            label=f"{VARIANT_NAMES.get(variant, variant)}: {int(rows['aligned'].sum())} of {len(rows)} aligned",
        )
    reference = heads[heads["variant"] == variants_present(heads)[0]].merge(positions, on=["layer", "head"])
    for layer, block in reference.groupby("layer"):
        start, stop = block["x"].min() - 0.45, block["x"].max() + 0.45
        quantile, median = block["null_statistic"].iloc[0], block["null_median"].iloc[0]
        first = layer == reference["layer"].min()
        ax.hlines(quantile, start, stop, color=NULL_COLOUR, label="Haar null quantile" if first else None)
        ax.hlines(median, start, stop, color=NULL_COLOUR, ls=":", label="Haar null median" if first else None)
    ax.set_ylabel("mean best |cos| of u_1..u_n, v_1..v_n")
    ax.set_title("alignment statistic per head against the null")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="x-small")


RATE_COLUMNS = {
    "match_rate": "match",
    "random_match_rate": "random dictionary",
    "null_match_rate": "rotation null",
    "chance_rate": "chance",
}


def _attribution_panel(ax: plt.Axes, heads: pd.DataFrame, positions: pd.DataFrame) -> None:
    """Per head (trained): the match rate of its firing pairs beside the random dictionary's, the rotation null's
    and chance."""
    rows = heads[heads["variant"] == "trained"].merge(positions, on=["layer", "head"]).sort_values("x")
    palette = sns.color_palette(PALETTE)
    width = 0.8 / len(RATE_COLUMNS)
    for i, (column, label) in enumerate(RATE_COLUMNS.items()):
        offset = (i - (len(RATE_COLUMNS) - 1) / 2) * width
        ax.bar(rows["x"] + offset, rows[column], width, color=palette[[0, 2, 7, 3][i]], label=label)
    counts = rows["n_pairs"]
    if counts.sum() == 0:
        ax.text(0.5, 0.5, "no firing pairs at these sites", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("attribution: no firing pairs")
    else:
        pooled = {c: pooled_share(rows[c].fillna(0), counts) for c in RATE_COLUMNS}
        ax.set_title(
            f"dominant latent pair = dominant singular pair's, pooled over {int(counts.sum())} firing pairs: "
            f"{pooled['match_rate']:.1%} (random dictionary {pooled['random_match_rate']:.1%}, null "
            f"{pooled['null_match_rate']:.1%}, chance {pooled['chance_rate']:.1%})"
        )
    ax.set_ylabel("share of the head's firing pairs")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="x-small")


def head_alignment_figure(heads: pd.DataFrame) -> plt.Figure:
    """Every site head (x: layer and head) from :data:`~svalign.tables.SAE_HEADS`.

    Top: the head's statistic (mean best |cos| of its top-n singular vectors, both sides) for the trained model
    (dots) and its random-init twin (crosses), against the Haar-frame null's quantile (the criterion, solid) and
    median (dotted) of its site. Bottom: the trained head's attribution match rate beside the random dictionary's,
    the rotation null's and chance (pooled over all heads in the title). Hatched: sites whose SAE is not usable.
    """
    set_theme()
    if heads.empty:
        raise ValueError("the heads table has no rows")
    positions = _head_positions(heads)
    colours = _variant_colours(variants_present(heads))
    width = max(8.0, 0.32 * len(positions) + 3)
    figure, axes = plt.subplots(2, 1, figsize=(width, 8), layout="constrained", sharex=True)
    unusable = {int(layer) for layer in heads.loc[~heads["sae_usable"].astype(bool), "layer"]}
    for ax in axes:
        _layer_guides(ax, positions, unusable)
    _statistic_panel(axes[0], heads, positions, colours)
    _attribution_panel(axes[1], heads, positions)
    axes[1].set_xlabel("head (L = layer, H = head)")
    model = heads["model"].iloc[0]
    trained = heads[heads["variant"] == "trained"]
    figure.suptitle(
        f"{model}: {int(trained['aligned'].sum())} of {len(trained)} site heads aligned beyond the Haar-frame null"
    )
    return figure
