"""The results table and caption numbers: claims computed from real pipeline tables."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from svalign import io, report
from svalign.tables import schema
from svalign.toy.config import ToyConfig
from svalign.toy.train import run_columns, train_toy


@pytest.fixture(scope="module")
def single_pair_metrics(tmp_path_factory) -> str:
    """A short single-pair run (head and λ = 0 control) written as the toy stage writes it."""
    config = ToyConfig(seeds=(0, 1), steps=200, batch_size=256, log_every=200, eval_batch_size=512)
    out = tmp_path_factory.mktemp("toy")
    path = str(out / "metrics.parquet")
    columns = run_columns(train_toy(config, progress=False), "single_pair")["metrics"]
    io.write_table(path, schema("toy_metrics"), columns, io.provenance("toy", {"experiment": "single_pair"}))
    return path


def test_single_pair_claim_reads_the_head_instances(single_pair_metrics):
    claim = report.single_pair_claim(single_pair_metrics)
    metrics = io.to_frame(io.read_table(single_pair_metrics, schema("toy_metrics")))
    heads = metrics[metrics["lam"] > 0]
    assert len(heads) == 2  # the λ = 0 controls are left out
    expected_u = np.mean([a[0] for a in heads["matched_cos_u"]])
    assert f"|cos(w_0, u_1)| = {expected_u:.4f}" in claim.ours
    assert claim.setting == "toy single pair, 2 seeds"
    ok = min(min(a[0] for a in heads["matched_cos_u"]), min(a[0] for a in heads["matched_cos_v"])) > 0.95
    ok = ok and heads["sigma2_over_sigma1"].max() < 0.05
    assert claim.verdict == ("pass" if ok else "differs")


def test_anisotropy_crossing_interpolates_linearly():
    curve = pd.Series([0.95, 0.85, 0.65, 0.55], index=[0, 10, 20, 30])
    assert report.anisotropy_crossing(curve) == pytest.approx(15.0)
    assert report.anisotropy_crossing(pd.Series([0.9, 0.8], index=[0, 60])) is None
    assert report.anisotropy_crossing(pd.Series([0.7, 0.6], index=[0, 60])) == 0.0


def test_caption_text_escapes_rst_markup_and_markdown_escapes_pipes():
    claim = report.Claim("k", "a claim", "|cos| ≈ 1", "|cos| = 0.99 *", "toy", "pass", "|cos| > 0.95")
    assert claim.rst.count("\\|") == 6 and "\\*" in claim.rst and "**Verdict: pass**" in claim.rst
    markdown = report.claims_markdown([claim])
    row = markdown.splitlines()[-1]
    assert row.count(" | ") == 4  # five cells: every | inside a cell is escaped
    assert str(claim) == claim.ours


def test_measured_is_inert_for_snakemake_and_picklable():
    measured = report.Measured()
    assert repr(measured) == "Measured()"
    assert measured.single_pair is report.single_pair_claim and "null" in measured and "nope" not in measured
    assert pickle.loads(pickle.dumps(measured)).anisotropy is report.anisotropy_claim
    with pytest.raises(AttributeError, match="no claim 'nope'"):
        measured.nope  # noqa: B018


def test_figure_title_and_results_table_quote_the_same_crossing():
    """One definition of the anisotropy crossing: the claim, the caption and the figure title agree."""
    import pandas as pd

    from svalign import figures

    table = pd.DataFrame(
        {
            "interference_norm": [0.0, 40.0, 50.0, 0.0, 40.0, 50.0],
            "feature_seed": [0, 0, 0, 1, 1, 1],
            "mean_matched_cos": [0.99, 0.80, 0.70, 0.97, 0.78, 0.68],
            "closed_form_mean_matched_cos": [1.0, 0.81, 0.71, 1.0, 0.79, 0.69],
        }
    )
    trained, _ = report.anisotropy_curves(table)
    # mean curve 0.98, 0.79, 0.69: crosses 0.75 at 40 + 0.04 / 0.10 * 10 = 44
    assert report.anisotropy_crossing(trained) == pytest.approx(44.0)
    assert report.crossing_text(trained) == "≈ 44"
    title = figures.anisotropy_figure(table).axes[0].get_title()
    assert "crosses 0.75 at ‖E‖₂ ≈ 44" in title, title


def test_missing_table_fails_clearly(tmp_path):
    with pytest.raises(io.ParquetReadError, match=r"missing\.parquet"):
        report.single_pair_claim(tmp_path / "missing.parquet")
