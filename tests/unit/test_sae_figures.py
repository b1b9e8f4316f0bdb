"""SAE figures and captions from small hand-made tables with the declared columns: the plotted values are the
tables' means, the markers sit at the dictionaries' interference norms, the captions quote the tables' numbers."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from svalign import captions as summary
from svalign import definitions, io
from svalign.figures import sae as sae_figures
from svalign.figures import toy as toy_figures
from svalign.tables import SAE_ALIGNMENT, SAE_HEADS, SAE_QUALITY, SAE_SITES, TOY_ANISOTROPY

LAYERS, HEADS, RANKS = (1, 4), 3, 5


def alignment_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {"model": "m", "variant": variant, "layer": layer, "head": head, "side": side, "rank": rank}
        for variant in ("trained", "random")
        for layer in LAYERS
        for head in range(HEADS)
        for side in "uv"
        for rank in range(RANKS)
    ]
    frame = pd.DataFrame(rows)
    frame["sigma"] = 1.0 / (1 + frame["rank"])
    frame["best_cos"] = rng.uniform(0.1, 0.9, len(frame))
    frame["latent"] = rng.integers(0, 16, len(frame))
    frame["frequency"] = 0.1
    frame["null_mean"] = np.where(frame["layer"] == 1, 0.2, 0.25)
    frame["null_upper"] = np.where(frame["layer"] == 1, 0.3, 0.35)
    return frame[SAE_ALIGNMENT.column_names]


def sites_table() -> pd.DataFrame:
    rows = []
    for layer, usable in zip(LAYERS, (True, False), strict=True):
        for variant, aligned in (("trained", 2 / 3), ("random", 0.0)):
            trained = variant == "trained"
            rows.append(
                {
                    "model": "m",
                    "layer": layer,
                    "variant": variant,
                    "n_heads": HEADS,
                    "aligned_fraction": aligned,
                    "median_best_cos": 0.5,
                    "null_median_best_cos": 0.2,
                    "match_rate": 0.3 if trained else np.nan,
                    "null_match_rate": 0.1 if trained else np.nan,
                    "chance_rate": 0.05 if trained else np.nan,
                    "random_match_rate": 0.08 if trained else np.nan,
                    **{name: 0.5 if trained else np.nan for name in ("latent_share", "pair_share")},
                    **{name: 0.3 if trained else np.nan for name in ("random_latent_share", "random_pair_share")},
                    "n_active_latents": 10 + layer,
                    "interference_norm_active": 3.0 + layer,
                    "explained_variance": 0.8 if usable else 0.4,
                    "heldout_explained_variance": 0.75 if usable else 0.35,
                    "prompt_explained_variance": 0.7 if usable else 0.3,
                    "prompt_l0": 4.0,
                    "heldout_loss_recovered": 0.9 if usable else 0.5,
                    "sae_usable": usable,
                    "n_fake_dictionaries": 10,
                    "fake_aligned_mean": 0.2,
                    "fake_aligned_max": 0.3,
                }
            )
    return pd.DataFrame(rows)[SAE_SITES.column_names]


def heads_table() -> pd.DataFrame:
    rows = []
    for layer in LAYERS:
        for variant in ("trained", "random"):
            for head in range(HEADS):
                statistic = 0.3 + 0.1 * head + (0.05 if variant == "trained" else 0.0)
                n_pairs = (10 * (head + 1)) if variant == "trained" else 0
                rate = (lambda value: value) if n_pairs else (lambda value: np.nan)
                rows.append(
                    {
                        "model": "m",
                        "variant": variant,
                        "layer": layer,
                        "head": head,
                        "statistic": statistic,
                        "null_statistic": 0.4 + 0.01 * layer,
                        "null_median": 0.3,
                        "aligned": statistic > 0.4 + 0.01 * layer,
                        "sae_usable": layer == 1,
                        "n_pairs": n_pairs,
                        "match_rate": rate(0.1 * (head + 1)),
                        "null_match_rate": rate(0.05),
                        "chance_rate": rate(0.02),
                        "latent_share": rate(0.5),
                        "random_match_rate": rate(0.04),
                        "pair_share": rate(0.3),
                        "random_latent_share": rate(0.3),
                        "random_pair_share": rate(0.2),
                        "fake_p_aligned": 0.5,
                        "positional_share": 0.1,
                        "positional": False,
                        "statistic_without_position": statistic,
                        "aligned_without_position": False,
                        **{
                            f"{null}_{name}": value
                            for null in ("haar", "subspace", "covariance")
                            for name, value in (
                                ("p_aligned", 0.5),
                                ("p_below", 0.5),
                                ("aligned_bh", False),
                                ("below_bh", False),
                            )
                        },
                    }
                )
    return pd.DataFrame(rows)[SAE_HEADS.column_names]


def quality_table() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "model": "m",
            "layer": list(LAYERS),
            "hook": "blocks.L.hook_in",
            "n_tokens": 2048,
            "n_latents": 64,
            "k": 4,
            "explained_variance": [0.8, 0.4],
            "l0": 4.0,
            "dead_fraction": [0.0, 0.25],
            "interference_norm": [12.5, 70.0],
            "final_loss": 0.1,
            "n_heldout_tokens": 256,
            "heldout_explained_variance": [0.75, 0.35],
            "heldout_l0": 4.0,
            "heldout_dead_fraction": [0.0, 0.3],
            "heldout_loss_clean": 3.0,
            "heldout_loss_sae": [3.2, 5.0],
            "heldout_loss_ablated": 7.0,
            "heldout_loss_recovered": [0.95, 0.5],
        }
    )
    frame["b_dec"] = [np.zeros(8, dtype=np.float32)] * len(frame)
    frame["second_moment"] = [np.eye(8, dtype=np.float32)] * len(frame)
    frame["position_basis"] = [np.eye(8, 4, dtype=np.float32)] * len(frame)
    return frame[SAE_QUALITY.column_names]


def _write(path, schema, frame, config=None):
    data = {c.name: np.stack(frame[c.name].tolist()) if c.is_tensor else frame[c.name].tolist() for c in schema.columns}
    return io.write_table(path, schema, data, io.provenance("test", config))


def test_alignment_by_rank_plots_the_tables_means_and_the_null():
    alignment, sites = alignment_table(), sites_table()
    figure = sae_figures.alignment_by_rank_figure(alignment, sites, top_singular=2)
    axes = figure.axes
    assert len(axes) == len(LAYERS)
    for ax, layer in zip(axes, LAYERS, strict=True):
        lines = {line.get_label(): line for line in ax.get_lines()}
        for variant, label in (("trained", "trained"), ("random", "random init")):
            for side in "uv":
                rows = alignment[(alignment["layer"] == layer) & (alignment["variant"] == variant)]
                expected = rows[rows["side"] == side].groupby("rank")["best_cos"].mean()
                line = lines[f"{label}, {side}_k"]
                np.testing.assert_allclose(line.get_xdata(), expected.index + 1)
                np.testing.assert_allclose(line.get_ydata(), expected.to_numpy())
        null = alignment.loc[alignment["layer"] == layer, "null_mean"].iloc[0]
        np.testing.assert_allclose(lines["Haar null mean"].get_ydata(), null)
        band = ax.collections[0].get_paths()[0].vertices[:, 1]
        assert band.max() == pytest.approx(alignment.loc[alignment["layer"] == layer, "null_upper"].iloc[0])
        assert any(np.allclose(line.get_xdata(), 2.5) for line in ax.get_lines())  # the criterion's top 2 ranks
    assert "trained 67%, random init 0%" in axes[0].get_title() and "(usable)" in axes[0].get_title()
    assert "0.40 (NOT usable)" in axes[1].get_title()


def test_head_alignment_plots_every_heads_statistic_null_and_rates():
    heads = heads_table()
    figure = sae_figures.head_alignment_figure(heads)
    top, bottom = figure.axes
    assert len(figure.axes) == 2
    by_label = {c.get_label(): c for c in top.collections}
    ordered = heads.sort_values(["layer", "head"])
    for variant, label in (("trained", "trained"), ("random", "random init")):
        rows = ordered[ordered["variant"] == variant]
        name = f"{label}: {int(rows['aligned'].sum())} of {len(rows)} aligned"
        np.testing.assert_allclose(by_label[name].get_offsets()[:, 1], rows["statistic"])
    levels = [c.get_segments()[0][0][1] for c in top.collections if hasattr(c, "get_segments")]
    assert levels == pytest.approx([0.41, 0.3, 0.44, 0.3])  # per layer: the null's quantile, then its median
    trained = ordered[ordered["variant"] == "trained"]
    match, random_dictionary, null, chance = bottom.containers  # one bar group per rate, heads in x order
    np.testing.assert_allclose([bar.get_height() for bar in match], trained["match_rate"])
    np.testing.assert_allclose([bar.get_height() for bar in random_dictionary], trained["random_match_rate"])
    np.testing.assert_allclose([bar.get_height() for bar in null], trained["null_match_rate"])
    np.testing.assert_allclose([bar.get_height() for bar in chance], trained["chance_rate"])
    pooled = (trained["match_rate"] * trained["n_pairs"]).sum() / trained["n_pairs"].sum()
    assert (
        f"{pooled:.1%}" in bottom.get_title() and f"{int(trained['n_pairs'].sum())} firing pairs" in bottom.get_title()
    )
    n_aligned = int(trained["aligned"].sum())
    assert f"{n_aligned} of {len(trained)} site heads aligned" in figure.get_suptitle()


def test_anisotropy_figure_marks_each_sae_site_at_its_interference_norms():
    toy = pd.DataFrame(
        {
            "interference_norm": [0.0, 30.0, 60.0],
            "feature_seed": 0,
            "mean_matched_cos": [0.9, 0.8, 0.7],
            "closed_form_mean_matched_cos": [1.0, 0.9, 0.8],
        }
    )
    sae = summary.site_interference([quality_table()], [sites_table()])
    assert sae["interference_norm"].tolist() == [12.5, 70.0]
    assert sae["interference_norm_active"].tolist() == [4.0, 7.0]  # trained rows only
    ax = toy_figures.anisotropy_figure(toy, sae=sae).axes[0]
    markers = {
        marker: [float(x) for line in ax.get_lines() if line.get_marker() == marker for x in line.get_xdata()]
        for marker in "v^"
    }
    assert markers["v"] == [12.5, 70.0] and markers["^"] == [4.0, 7.0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "m L1 SAE, all latents (12.5)" in labels and "m L4 SAE, active latents (7.0)" in labels
    plain = toy_figures.anisotropy_figure(toy).axes[0]
    assert not [line for line in plain.get_lines() if "SAE" in line.get_label()]


def test_crossing_words_agree_when_the_curve_starts_below_the_level():

    toy = pd.DataFrame(
        {
            "interference_norm": [0.0, 30.0],
            "feature_seed": 0,
            "mean_matched_cos": [0.4, 0.2],
            "closed_form_mean_matched_cos": [1.0, 0.5],
        }
    )
    trained, closed = definitions.anisotropy_curves(toy)
    assert definitions.anisotropy_crossing(trained) == 0.0  # the number the verdict tests is unchanged
    assert definitions.crossing_text(trained) == "is below 0.75 from the first norm (0)"
    assert definitions.crossing_text(closed) == "crosses 0.75 at ‖E_X‖₂ ≈ 15"
    assert definitions.crossing_text(pd.Series([0.9, 0.8], index=[0, 60])) == "stays above 0.75 (up to ‖E_X‖₂ = 60)"
    title = toy_figures.anisotropy_figure(toy).axes[0].get_title()
    assert title.endswith("trained mean |cos| is below 0.75 from the first norm (0)") and "≈ 0" not in title


def test_captions_quote_the_tables(tmp_path):
    config = {"min_explained_variance": 0.6, "top_singular": 2, "null_quantile": 0.95, "prompt_set": "ioi"}
    quality = _write(tmp_path / "quality.parquet", SAE_QUALITY, quality_table())
    sites = _write(tmp_path / "sites.parquet", SAE_SITES, sites_table(), config)
    heads = _write(tmp_path / "heads.parquet", SAE_HEADS, heads_table(), config)
    alignment_frame = alignment_table()
    alignment = _write(tmp_path / "alignment.parquet", SAE_ALIGNMENT, alignment_frame, config)
    text = summary.quality_text(quality, sites)
    assert (
        "explained variance 0.800 (held out 0.750, ioi prompts 0.700), next-token loss recovered 95.0% on held-out "
        "windows (3.00 clean, 3.20 SAE spliced in, 7.00 mean-ablated), usable (≥ 0.60)"
    ) in text
    assert (
        "explained variance 0.400 (held out 0.350, ioi prompts 0.300), next-token loss recovered 50.0% on held-out "
        "windows (3.00 clean, 5.00 SAE spliced in, 7.00 mean-ablated), NOT usable"
    ) in text
    assert "‖DᵀD − I‖₂ = 12.5 over all latents, 4.0 over the 11 active on the ioi prompts" in text
    text = summary.alignment_text(alignment, sites)
    top = alignment_frame[(alignment_frame["layer"] == 1) & (alignment_frame["rank"] < 2)]
    mean = top.loc[top["variant"] == "trained", "best_cos"].mean()
    assert f"u_1..u_2, v_1..v_2 over heads: trained {mean:.3f}" in text and "0.95 quantile 0.300" in text
    assert "\\|cos\\|" in text  # RST markup escaped
    text = summary.heads_text(heads)
    assert "trained 2 of 3, random init 1 of 3" in text and "over 60 firing pairs (ioi prompts)" in text
    assert f"in {(10 * 0.1 + 20 * 0.2 + 30 * 0.3) / 60:.1%}" in text and "SAE is NOT usable" in text
    toy = pd.DataFrame({c.name: [0.0, 0.0] for c in TOY_ANISOTROPY.columns}).astype(
        {"feature_seed": int, "instance": int}
    )
    toy = toy.assign(interference_norm=[0.0, 50.0], mean_matched_cos=[1.0, 0.5])
    inputs = {
        "anisotropy": _write(tmp_path / "toy.parquet", TOY_ANISOTROPY, toy),
        "quality_m": quality,
        "sites_m": sites,
    }
    text = summary.interference_text(inputs)
    assert "m layer 1: 12.5 over all 64 latents (inside the paper's 10–55, where the toy head's mean" in text
    assert "\\|cos\\| is 0.88" in text and "70.0 over all 64 latents (above the paper's 10–55, beyond the sweep" in text
    assert summary.interference_text({"anisotropy": inputs["anisotropy"]}) == ""


def test_caption_helper_is_inert_for_snakemake_and_the_modules_are_torch_free():
    captions = pickle.loads(pickle.dumps(summary.SAECaptions()))
    assert repr(captions) == "SAECaptions()" and captions.heads is summary.heads_text
    code = "import sys, svalign.figures.sae, svalign.captions; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_figures_are_byte_identical_between_runs(tmp_path):
    """No timestamp in either format: the PDF's /CreationDate is left out."""
    import matplotlib.pyplot as plt

    from svalign.figures import canvas

    written = []
    for run in ("a", "b"):
        figure, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        canvas.save_figure(figure, tmp_path / f"{run}.png", tmp_path / f"{run}.pdf")
        written.append(((tmp_path / f"{run}.png").read_bytes(), (tmp_path / f"{run}.pdf").read_bytes()))
    assert written[0] == written[1]
    assert b"CreationDate" not in written[0][1]
