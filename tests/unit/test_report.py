"""The results table and caption numbers: claims computed from real pipeline tables."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pandas as pd
import pytest
import sad_pairs
import yaml

from svalign import definitions, io, report
from svalign.claims.core import Comparison, combine
from svalign.stats import BootstrapOptions
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
    worst = [min(u[0], v[0]) for u, v in zip(heads["matched_cos_u"], heads["matched_cos_v"], strict=True)]
    # two seeds: the interval of a mean over seeds runs from the worst seed to the best
    assert claim.tests[0].low == pytest.approx(min(worst)) and claim.tests[0].high == pytest.approx(max(worst))
    every = min(worst) > 0.95 and heads["sigma2_over_sigma1"].max() < 0.05
    assert claim.verdict == "pass" if every else claim.verdict in ("inconclusive", "differs")
    assert claim.resampled == "over 2 seeds, 1000 resamples"


def test_anisotropy_crossing_interpolates_linearly():
    curve = pd.Series([0.95, 0.85, 0.65, 0.55], index=[0, 10, 20, 30])
    assert definitions.anisotropy_crossing(curve) == pytest.approx(15.0)
    assert definitions.anisotropy_crossing(pd.Series([0.9, 0.8], index=[0, 60])) is None
    assert definitions.anisotropy_crossing(pd.Series([0.7, 0.6], index=[0, 60])) == 0.0


def test_caption_text_escapes_rst_markup_and_markdown_escapes_pipes():
    test = Comparison("|cos|", 0.99, 0.98, 1.0, ">", 0.95)
    claim = report.Claim("k", "a claim", "|cos| ≈ 1", "|cos| = 0.99 *", "toy", "pass", "|cos| > 0.95", (test,))
    assert claim.rst.count("\\|") == 8 and "\\*" in claim.rst and "**Verdict: pass**" in claim.rst
    markdown = report.claims_markdown([claim])
    row = markdown.splitlines()[-1]
    assert row.count(" | ") == 6  # seven cells: every | inside a cell is escaped
    assert str(claim) == claim.ours


def test_verdict_is_inconclusive_when_the_interval_straddles_the_criterion():
    assert Comparison("x", 0.6, 0.55, 0.7, ">", 0.5).verdict == "pass"
    assert Comparison("x", 0.4, 0.3, 0.45, ">", 0.5).verdict == "differs"
    assert Comparison("x", 0.6, 0.45, 0.7, ">", 0.5).verdict == "inconclusive"
    assert Comparison("x", 0.5, 0.5, 0.7, ">", 0.5).verdict == "inconclusive"  # strict: 50 % is not most
    assert Comparison("x", 0.2, 0.2, 0.3, "≥", 0.2).verdict == "pass"
    assert Comparison("x", 0.6, 0.65, 0.7, ">", 0.62).verdict == "inconclusive"  # widened to the estimate
    crossing = Comparison("crossing", np.inf, 40.0, np.inf, "≥", 55.0, ".1f")
    assert crossing.interval == "never [40.0, never]" and crossing.verdict == "inconclusive"
    assert combine(["pass", "inconclusive"]) == "inconclusive" and combine(["inconclusive", "differs"]) == "differs"
    # nothing to test (no pair fired at the threshold): never "differs" or "pass"
    assert Comparison("x", np.nan, np.nan, np.nan, ">", 0.0).verdict == "inconclusive"
    assert Comparison("x", 0.3, np.nan, np.nan, "≥", 0.1).verdict == "inconclusive"


def test_measured_is_inert_for_snakemake_and_picklable():
    measured = report.Measured({"resamples": 200, "seed": 1})
    assert repr(measured) == "Measured()" == repr(report.Measured())  # options do not rerun figure rules
    assert measured.single_pair.func is report.single_pair_claim and "null" in measured and "nope" not in measured
    assert measured.nrecon.keywords == {"options": BootstrapOptions(resamples=200, seed=1)}
    restored = pickle.loads(pickle.dumps(measured))
    assert restored.anisotropy.func is report.anisotropy_claim and restored.options == measured.options
    with pytest.raises(AttributeError, match="no claim 'nope'"):
        measured.nope  # noqa: B018


def test_bootstrap_options_defaults_equal_the_schema(repo):
    schema_ = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    properties = schema_["properties"]["report"]["properties"]
    library = {f.name: f.default for f in dataclasses.fields(BootstrapOptions)}
    assert {name: p["default"] for name, p in properties.items()} == library


def test_figure_title_and_results_table_quote_the_same_crossing():
    """One definition of the anisotropy crossing: the claim, the caption and the figure title agree."""
    import pandas as pd

    from svalign.figures import toy as toy_figures

    table = pd.DataFrame(
        {
            "interference_norm": [0.0, 40.0, 50.0, 0.0, 40.0, 50.0],
            "feature_seed": [0, 0, 0, 1, 1, 1],
            "mean_matched_cos": [0.99, 0.80, 0.70, 0.97, 0.78, 0.68],
            "closed_form_mean_matched_cos": [1.0, 0.81, 0.71, 1.0, 0.79, 0.69],
        }
    )
    trained, _ = definitions.anisotropy_curves(table)
    # mean curve 0.98, 0.79, 0.69: crosses 0.75 at 40 + 0.04 / 0.10 * 10 = 44
    assert definitions.anisotropy_crossing(trained) == pytest.approx(44.0)
    assert definitions.crossing_text(trained) == "crosses 0.75 at ‖E_X‖₂ ≈ 44"
    title = toy_figures.anisotropy_figure(table).axes[0].get_title()
    assert "crosses 0.75 at ‖E‖₂ ≈ 44" in title, title


def test_missing_table_fails_clearly(tmp_path):
    with pytest.raises(io.ParquetReadError, match=r"missing\.parquet"):
        report.single_pair_claim(tmp_path / "missing.parquet")


# --------------------------------------------------------------------------------------------------
# SAD claims on hand-made runs: readings of N_recon, intervals over prompts, inconclusive verdicts
# --------------------------------------------------------------------------------------------------


def _sad_run(
    tmp_path, signed, magnitude, n_prompts=40, per_prompt=6, rank=8, order="signed", model="toy", real=(0.2, 0.3)
):
    """summary.parquet and pairs.parquet of a one-layer run whose heads have the given N_recon per prompt
    (``signed[h](p)`` / ``magnitude[h](p)``): S uniform in ``real`` vs 0.5–0.6 null, top ranks uniform."""
    from svalign.sad import run

    rng = np.random.default_rng(0)
    n_heads = len(signed)
    head, prompt = np.meshgrid(np.arange(n_heads), np.repeat(np.arange(n_prompts), per_prompt), indexing="ij")
    head, prompt = head.ravel(), prompt.ravel()
    n = len(head)
    pairs = {
        "layer": np.zeros(n, int),
        "head": head,
        "prompt": prompt,
        "t": np.tile(np.arange(per_prompt), n // per_prompt),
        "j": np.zeros(n, int),
        "attention": np.full(n, 0.5, np.float32),
        "ltilde": np.ones(n, np.float32),
        "n_recon_signed": np.array([signed[h](p) for h, p in zip(head, prompt, strict=True)]),
        "n_recon_magnitude": np.array([magnitude[h](p) for h, p in zip(head, prompt, strict=True)]),
        "sparseness": rng.uniform(*real, n).astype(np.float32),
        "top_rank": rng.integers(0, rank, n),
        "null_sparseness": rng.uniform(0.5, 0.6, (n, 2)).astype(np.float32),
        "null_n_recon_signed": np.ones((n, 2), int),
        "null_n_recon_magnitude": np.full((n, 2), 2),
        "share_by_rank": np.zeros((1, n_heads, rank)),
        "null_share_by_rank": np.zeros((1, n_heads, rank)),
        "n_recon_order": order,
    }
    pairs["n_recon"], pairs["null_n_recon"] = pairs[f"n_recon_{order}"], pairs[f"null_n_recon_{order}"]
    sad_pairs.with_nulls(pairs, rng)  # every null ran: the others' S near the Haar null's
    keys = {"model": model, "variant": "trained", "prompt_set": "ioi"}
    record = io.provenance("sad", {**keys, "prompts_kept": n_prompts, "max_score_error": 1e-6})
    paths = tmp_path / f"{model}_summary.parquet", tmp_path / f"{model}_pairs.parquet"
    io.write_table(paths[0], schema("sad_summary"), run.summarize(pairs, rank, keys), record)
    io.write_table(paths[1], schema("sad_pairs"), run.pairs_table(pairs, keys), record)
    return paths


def _constant(value):
    return lambda prompt: value


def test_nrecon_claim_shows_the_verdict_under_each_ordering(tmp_path):
    signed = [_constant(2), _constant(2), _constant(3), _constant(8)]
    magnitude = [_constant(8), _constant(6), _constant(5), _constant(2)]
    summary, pairs = _sad_run(tmp_path, signed, magnitude)
    claim = report.nrecon_claim(summary, pairs, "toy", {"resamples": 200})
    assert (claim.verdict, claim.reading) == ("pass", "N_recon signed ordering")
    assert claim.tests[0].estimate == 0.75 and claim.tests[0].low == claim.tests[0].high == 0.75
    (other,) = claim.other_readings
    assert (other.name, other.verdict, other.tests[0].estimate) == ("magnitude ordering", "differs", 0.25)
    assert "75.0% of 4 heads" in claim.ours and "pooled over firing pairs with ℓ̃ > 0: 75%" in claim.ours
    row = report.claims_table([claim])
    assert row["other_readings"] == ["magnitude ordering: 25.0% [25.0%, 25.0%] → differs"]
    assert (row["estimate"], row["ci_low"], row["confidence"]) == ([0.75], [0.75], [0.95])
    markdown = report.claims_markdown([claim])
    assert "→ **differs**" in markdown and "over 40 prompts, 200 resamples" in markdown
    io.write_table(tmp_path / "claims.parquet", report.RESULTS_CLAIMS, row, io.provenance("results_table"))


def test_configured_ordering_decides_the_main_verdict(tmp_path):
    signed = [_constant(2), _constant(2), _constant(3), _constant(8)]
    magnitude = [_constant(8), _constant(6), _constant(5), _constant(2)]
    summary, pairs = _sad_run(tmp_path, signed, magnitude, order="magnitude")
    claim = report.nrecon_claim(summary, pairs, "toy", {"resamples": 200})
    assert (claim.verdict, claim.reading, claim.other_readings[0].verdict) == (
        "differs",
        "N_recon magnitude ordering",
        "pass",
    )


def test_a_head_on_the_edge_makes_the_verdict_inconclusive(tmp_path):
    """Head 2's median is 4 or 5 depending on which prompts are drawn: the share of heads is 50 % or 75 %."""
    edge = lambda prompt: 4 if prompt % 2 else 5  # noqa: E731
    signed = [_constant(2), _constant(2), edge, _constant(8)]
    summary, pairs = _sad_run(tmp_path, signed, signed)
    claim = report.nrecon_claim(summary, pairs, "toy", {"resamples": 500, "seed": 1})
    test = claim.tests[0]
    assert test.estimate == 0.5 and (test.low, test.high) == (0.5, 0.75) and claim.verdict == "inconclusive"
    again = report.nrecon_claim(summary, pairs, "toy", {"resamples": 500, "seed": 1})
    assert again == claim  # seeded: the same interval every time


def test_resampled_medians_reproduce_the_summary_and_the_other_sad_claims(tmp_path):
    from svalign.claims import sad

    summary, pairs = _sad_run(tmp_path, [_constant(2)] * 3, [_constant(3)] * 3)
    run = sad.load_run(summary, pairs)
    once = np.ones((1, run.n_prompts))  # every prompt once: the plain medians of the summary
    medians = sad.head_medians(run, run.sparseness, once)[0]
    np.testing.assert_allclose(medians, run.summary["median_sparseness"])
    null = sad.head_medians(run, run.null_sparseness["haar"], once, draws=np.ones((1, run.n_draws)))[0]
    np.testing.assert_allclose(null, run.summary["null_median_sparseness"])
    null_claim = report.null_claim(summary, pairs, "toy", {"resamples": 100})
    assert null_claim.verdict == "pass" and "over 40 prompts and 2 null draws" in null_claim.resampled
    lower = report.small_sigma_claim(summary, pairs, "toy", {"resamples": 100})
    assert lower.verdict == "pass" and 0.2 < lower.tests[0].low < lower.tests[0].estimate < lower.tests[0].high


def test_figure_title_and_claim_quote_the_same_share_of_heads(tmp_path):
    from svalign.figures import sad as sad_figures

    summary, pairs = _sad_run(tmp_path, [_constant(2), _constant(3), _constant(8)], [_constant(8)] * 3)
    claim = report.nrecon_claim(summary, pairs, "toy", {"resamples": 50})
    frame = io.to_frame(io.read_table(summary, schema("sad_summary")))
    title = sad_figures.sad_heads_figure({"trained": frame}, "toy")._suptitle.get_text()
    assert f"{claim.tests[0].estimate:.1%} of heads have median N_recon ≤ 4 (signed ordering)" in title, title
    assert f"{claim.tests[0].estimate:.1%} of 3 heads" in claim.ours


def _dynamics_table(tmp_path, rows):
    columns = {name: [row[i] for row in rows] for i, name in enumerate(["checkpoint", "step", "median_sparseness"])}
    n = len(rows)
    columns.update(
        series=["ours"] * n,
        layer=[0] * n,
        head=[0] * n,
        chosen=[True] * n,
        n_pairs=[240] * n,
        median_n_recon=[2.0] * n,
        null_median_n_recon=[2.0] * n,
        null_median_sparseness=[0.55] * n,
        induction_score=np.linspace(0, 0.9, n),
        previous_token_score=[0.1] * n,
        loss=[1.0] * n,
        icl_loss=[0.5] * n,
    )
    path = tmp_path / "dynamics.parquet"
    io.write_table(path, schema("dynamics_sad"), columns, io.provenance("dynamics"))
    return path


def test_dynamics_claim_resamples_the_first_and_last_checkpoint_together(tmp_path):
    constant = [_constant(2)]
    _, first = _sad_run(tmp_path, constant, constant, model="dyn_a", real=(0.5, 0.52))
    _, last = _sad_run(tmp_path, constant, constant, model="dyn_b", real=(0.2, 0.3))
    table = _dynamics_table(tmp_path, [("dyn_a", 0, 0.51), ("dyn_b", 10, 0.25)])
    claim = report.dynamics_claim(table, first, last, {"resamples": 200})
    assert claim.verdict == "pass" and [t.verdict for t in claim.tests] == ["pass", "pass"]
    assert claim.tests[1].estimate == pytest.approx(1 - 0.25 / 0.55)
    assert claim.resampled == "over 40 prompts and 2 null draws, 200 resamples"
    with pytest.raises(ValueError, match="not of 'dyn_a'"):
        report.dynamics_claim(table, last, last)


def test_generated_details_quote_the_same_numbers_as_the_claims(tmp_path, single_pair_metrics):
    from svalign.claims.details import details_markdown

    summary, pairs = _sad_run(tmp_path, [_constant(2), _constant(8)], [_constant(8)] * 2)
    inputs = {"single_pair": single_pair_metrics, "summary_toy_trained_ioi": summary}
    markdown = details_markdown(inputs)
    assert "## Toy experiments" in markdown and "## SAD per model and prompt set" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| toy, ioi"))
    claim = report.nrecon_claim(summary, pairs, "toy", {"resamples": 20})
    assert row.startswith(f"| toy, ioi | trained | {claim.tests[0].estimate:.0%} / 0% |"), row
    assert (
        "| single_pair | head λ = 1, 2 seeds |" in markdown and "| single_pair | control λ = 0, 2 seeds |" in markdown
    )


def test_details_of_a_run_where_no_pair_fired_show_dashes_not_nan():
    """An SAD run with no firing pair (all head statistics NaN) reads — in the generated table, not nan%."""
    from svalign.claims.details import _sad_cells

    nan = float("nan")
    summary = pd.DataFrame(
        {
            "rank": [32, 32],
            "n_pairs": [0, 0],
            "n_nonpositive": [0, 0],
            **{
                name: [nan, nan]
                for name in (
                    "median_n_recon_signed",
                    "median_n_recon_magnitude",
                    "frac_n_recon_le4_signed",
                    "frac_n_recon_le4_magnitude",
                    "median_sparseness",
                    "null_median_sparseness",
                    "frac_top_lower_half",
                )
            },
        }
    )
    cells = _sad_cells(summary, {"config": {"max_score_error": 2e-6}})
    assert "nan" not in " ".join(cells).lower(), cells
    assert cells[1] == "— / —" and cells[2] == "—" and cells[4] == "— (r = 32)" and cells[5] == "0"
