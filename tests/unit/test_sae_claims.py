"""The SAE claims of the results table, from small hand-made SAE-stage tables: verdicts, intervals, resampled units."""

from __future__ import annotations

import numpy as np
import pytest

from svalign import io, report
from svalign.claims.details import details_markdown
from svalign.claims.sae import PAPER_SAE_TEXT
from svalign.definitions import NULLS
from svalign.sae.config import SAEConfig
from svalign.sae.run import PAIR_RATES, PAIR_SHARES
from svalign.stats import BootstrapOptions
from svalign.tables import SAE_ATTRIBUTION, SAE_HEADS, SAE_SITES

OPTIONS = BootstrapOptions(resamples=400, confidence=0.95, seed=0)
MODEL, LAYER = "tiny", 1


def _provenance() -> dict:
    return io.provenance("sae_align", {"model": MODEL, **SAEConfig().to_dict()})


def _heads(aligned: dict[str, list[bool]], usable: bool, strict: list[bool] | None = None) -> dict:
    """:data:`SAE_HEADS` columns: one site, variant → each head's ``aligned``; the per-head tests follow it (the
    stricter nulls' flags follow ``strict``, the trained heads' flags under them; default: ``aligned``)."""
    rows = [(variant, head, flag) for variant, flags in aligned.items() for head, flag in enumerate(flags)]
    n = len(rows)
    significant = {
        null: [
            flag if null == "haar" or strict is None or variant != "trained" else strict[head]
            for variant, head, flag in rows
        ]
        for null in NULLS
    }
    tests = {}
    for null, flags in significant.items():
        tests.update(
            {
                f"{null}_p_aligned": [0.001 if flag else 0.5 for flag in flags],
                f"{null}_p_below": [1.0 if flag else 0.5 for flag in flags],
                f"{null}_aligned_bh": flags,
                f"{null}_below_bh": [False] * n,
            }
        )
    return {
        **tests,
        "fake_p_aligned": [1 / 11 if flag else 0.5 for _, _, flag in rows],
        "positional_share": [0.7 if head < 2 else 0.1 for _, head, _ in rows],  # the first two heads: positional
        "positional": [head < 2 for _, head, _ in rows],
        "statistic_without_position": [0.1 if head < 2 else 0.5 for _, head, _ in rows],
        "aligned_without_position": [flag and head >= 2 for _, head, flag in rows],
        "model": [MODEL] * n,
        "variant": [variant for variant, _, _ in rows],
        "layer": [LAYER] * n,
        "head": [head for _, head, _ in rows],
        "statistic": [0.5 if flag else 0.1 for _, _, flag in rows],
        "null_statistic": [0.3] * n,
        "null_median": [0.2] * n,
        "aligned": [flag for _, _, flag in rows],
        "sae_usable": [usable] * n,
        "n_pairs": [0] * n,
        **{name: [np.nan] * n for name in (*PAIR_RATES, *PAIR_SHARES)},
    }


def _sites(aligned: dict[str, list[bool]], explained_variance: float, fake: float) -> dict:
    """:data:`SAE_SITES` columns: one row per variant of the one site (``fake``: the fake dictionaries' share)."""
    variants = list(aligned)
    n = len(variants)
    return {
        "n_fake_dictionaries": [10] * n,
        "fake_aligned_mean": [fake] * n,
        "fake_aligned_max": [min(1.0, fake + 0.1)] * n,
        "model": [MODEL] * n,
        "layer": [LAYER] * n,
        "variant": variants,
        "n_heads": [len(aligned[v]) for v in variants],
        "aligned_fraction": [float(np.mean(aligned[v])) for v in variants],
        "median_best_cos": [0.41 if v == "trained" else 0.13 for v in variants],
        "null_median_best_cos": [0.12] * n,
        **{name: [np.nan] * n for name in (*PAIR_RATES, *PAIR_SHARES)},
        "n_active_latents": [10] * n,
        "interference_norm_active": [3.0] * n,
        "explained_variance": [explained_variance] * n,
        "heldout_explained_variance": [0.9] * n,
        "prompt_explained_variance": [0.8] * n,
        "prompt_l0": [4.0] * n,
        "heldout_loss_recovered": [np.nan] * n,
        "sae_usable": [explained_variance >= SAEConfig.min_explained_variance] * n,
    }


def _attribution(
    prompt: np.ndarray, match: np.ndarray, random_match: np.ndarray, rates: dict[str, float], latent_share: float
) -> dict:
    """:data:`SAE_ATTRIBUTION` columns for firing pairs ``[pairs]`` of one head (positions and latents dummies;
    ``rates``: the null's and chance's rate, the same for every pair)."""
    n = len(prompt)
    dummy = np.zeros(n, dtype=np.int64)
    return {
        "model": [MODEL] * n,
        "variant": ["trained"] * n,
        "layer": np.full(n, LAYER),
        "head": dummy,
        "prompt": prompt,
        "t": dummy + 1,
        "j": dummy,
        "logit": np.ones(n, dtype=np.float32),
        "relative_error": np.zeros(n, dtype=np.float32),
        **{name: dummy for name in ("query_latent", "key_latent", "top_rank", "u_latent", "v_latent")},
        "pair_share": np.full(n, 0.5, dtype=np.float32),
        "latent_share": np.full(n, latent_share, dtype=np.float32),
        "match": match.astype(bool),
        "null_match": np.full(n, rates["null_match"]),
        "chance": np.full(n, rates["chance"]),
        "random_match": random_match,
        "random_latent_share": np.full(n, 0.4, dtype=np.float32),
        "random_pair_share": np.full(n, 0.2, dtype=np.float32),
    }


def write_stage(
    tmp_path,
    aligned: dict[str, list[bool]],
    match_by_prompt: list[float],
    pairs_per_prompt: int = 10,
    null_rate: float = 0.05,
    chance: float = 0.01,
    explained_variance: float = 0.9,
    fake: float = 0.2,
    strict: list[bool] | None = None,
    random_rate: float = 0.1,
    latent_share: float = 0.9,
) -> dict[str, str]:
    """The SAE stage's heads, sites and attribution tables, named as ``results_table_inputs`` names them.

    ``match_by_prompt``: each prompt's share of matching pairs (its first pairs match).
    """
    match = np.concatenate(
        [np.arange(pairs_per_prompt) < round(rate * pairs_per_prompt) for rate in match_by_prompt]
    ).astype(bool)
    random_match = np.tile(np.arange(pairs_per_prompt) < round(random_rate * pairs_per_prompt), len(match_by_prompt))
    prompt = np.repeat(np.arange(len(match_by_prompt)), pairs_per_prompt)
    columns = {
        "heads": (SAE_HEADS, _heads(aligned, explained_variance >= SAEConfig.min_explained_variance, strict)),
        "sites": (SAE_SITES, _sites(aligned, explained_variance, fake)),
        "attribution": (
            SAE_ATTRIBUTION,
            _attribution(prompt, match, random_match, {"null_match": null_rate, "chance": chance}, latent_share),
        ),
    }
    paths = {}
    for name, (schema, data) in columns.items():
        paths[f"sae_{name}_{MODEL}"] = str(tmp_path / f"{name}.parquet")
        io.write_table(paths[f"sae_{name}_{MODEL}"], schema, data, _provenance())
    return paths


def claims(paths: dict[str, str]) -> dict[str, report.Claim]:
    return {claim.key.removesuffix(f"_{MODEL}"): claim for claim in report.claims_from_inputs(paths, OPTIONS)}


def _assert_intervals_hold_estimates(claim: report.Claim) -> None:
    for test in claim.tests:
        assert test.low <= test.estimate <= test.high, test.text


def test_aligned_heads_and_matching_pairs_pass(tmp_path):
    aligned = {"trained": [True] * 18 + [False] * 2, "random": [False] * 19 + [True]}
    found = claims(write_stage(tmp_path, aligned, [0.7] * 20))
    alignment, attribution = found["sae_alignment"], found["sae_attribution"]
    assert alignment.verdict == attribution.verdict == "pass"
    assert alignment.tests[0].estimate == pytest.approx(0.9)
    assert attribution.tests[0].estimate == pytest.approx(0.7 - 0.1)  # the random dictionary is the strongest
    assert attribution.tests[1].estimate == pytest.approx(1.0)
    assert "0.410 real vs 0.120 null vs 0.130 random-init" in alignment.ours
    assert "random-init twin: 5% aligned" in alignment.ours
    assert "of 200 firing pairs" in attribution.ours and "5.0%" in attribution.ours
    assert alignment.paper == attribution.paper == PAPER_SAE_TEXT and "not in the paper" in PAPER_SAE_TEXT
    assert alignment.resampled == "over 20 heads, 400 resamples; the null's quantile fixed"
    assert attribution.resampled == "over 20 prompts with firing pairs, 400 resamples"
    for claim in found.values():
        _assert_intervals_hold_estimates(claim)
        assert claim.row()["verdict"] == claim.verdict


def test_unaligned_heads_and_rare_matches_differ(tmp_path):
    aligned = {"trained": [False] * 18 + [True] * 2, "random": [False] * 20}
    found = claims(write_stage(tmp_path, aligned, [0.0] * 19 + [0.2], null_rate=0.3))
    assert found["sae_alignment"].verdict == found["sae_attribution"].verdict == "differs"
    assert found["sae_attribution"].tests[0].estimate == pytest.approx(0.01 - 0.3)
    for claim in found.values():
        _assert_intervals_hold_estimates(claim)


def test_a_random_dictionary_matching_as_often_or_latents_carrying_little_differ(tmp_path):
    """The planted negatives of the attribution: a random dictionary of the SAE's size that matches as often (the
    null and chance far below), or latent×latent terms that carry too little of the logit."""
    aligned = {"trained": [True] * 20, "random": [False] * 20}
    as_random = claims(write_stage(tmp_path, aligned, [0.3] * 20, random_rate=0.3))["sae_attribution"]
    assert as_random.tests[0].verdict == "differs" and as_random.tests[1].verdict == "pass"
    assert as_random.verdict == "differs" and "through a random dictionary" in as_random.ours
    little = claims(write_stage(tmp_path, aligned, [0.7] * 20, latent_share=0.3))["sae_attribution"]
    assert little.tests[0].verdict == "pass" and little.tests[1].verdict == "differs"
    assert little.verdict == "differs" and little.tests[1].estimate == 0.0


def test_an_sae_that_does_not_reconstruct_makes_both_inconclusive(tmp_path):
    aligned = {"trained": [True] * 20, "random": [False] * 20}
    found = claims(write_stage(tmp_path, aligned, [0.7] * 20, explained_variance=0.3))
    for claim in found.values():
        assert claim.tests[0].verdict == "pass"  # the numbers alone would pass ...
        assert claim.verdict == "inconclusive"  # ... but the SAE is no proxy
        assert claim.ours.startswith(
            "the SAE does not reconstruct its input (explained variance 0.300 training / 0.900 held out / 0.800 "
            "prompts at layer 1; each must reach 0.60)"
        )
        assert claim.row()["verdict"] == "inconclusive"


def test_heads_are_resampled(tmp_path):
    everyone = claims(write_stage(tmp_path, {"trained": [True] * 20}, [0.7] * 20))["sae_alignment"]
    assert (everyone.tests[0].low, everyone.tests[0].high) == (1.0, 1.0)
    assert "random-init twin not run" in everyone.ours
    half = claims(write_stage(tmp_path, {"trained": [True, False] * 10}, [0.7] * 20))["sae_alignment"]
    test = half.tests[0]
    # 20 heads, half aligned: the bootstrap standard error is √(0.25 / 20) ≈ 0.11, so about ±0.22
    assert 0.15 < test.low < 0.4 and 0.6 < test.high < 0.85
    assert half.verdict == "inconclusive"


def test_prompts_not_pairs_are_resampled(tmp_path):
    """Every pair of a prompt matches or none does: resampling prompts gives a ±0.2 interval, resampling the
    400 pairs one by one would give ±0.05."""
    paths = write_stage(
        tmp_path,
        {"trained": [True] * 4},
        [1.0, 0.0] * 10,
        pairs_per_prompt=20,
        null_rate=0.0,
        chance=0.0,
        random_rate=0.0,
    )
    test = claims(paths)["sae_attribution"].tests[0]
    assert test.estimate == pytest.approx(0.5)
    assert test.high - test.low > 0.3
    assert test.low == pytest.approx(0.5 - (test.high - 0.5), abs=0.1)


def test_the_table_builds_with_the_sae_rows(tmp_path):
    paths = write_stage(tmp_path, {"trained": [True] * 4}, [0.5] * 4)
    table = report.claims_table(report.claims_from_inputs(paths, OPTIONS))
    assert table["key"] == [f"sae_alignment_{MODEL}", f"sae_attribution_{MODEL}"]
    assert "## SAE alignment per site" in details_markdown(paths) and "## Toy" not in details_markdown(paths)
    assert {"sae_alignment", "sae_attribution"} <= set(report.CLAIM_FUNCTIONS)


def test_the_fake_dictionary_control_and_the_stricter_nulls_decide_too(tmp_path):
    """90 % of heads beyond the Haar null passes alone; a fake-dictionary baseline as high makes the claim differ,
    and the stricter nulls' readings count only the heads significant under them."""
    aligned = {"trained": [True] * 18 + [False] * 2}
    beaten = claims(write_stage(tmp_path, aligned, [0.7] * 20, fake=0.2))["sae_alignment"]
    assert beaten.verdict == "pass" and beaten.tests[1].estimate == pytest.approx(0.9 - 0.2)
    assert "against 20% with fake dictionaries" in beaten.ours and "(18 heads match the SAE better" in beaten.ours
    matched = claims(write_stage(tmp_path, aligned, [0.7] * 20, fake=0.9))["sae_alignment"]
    assert matched.tests[0].verdict == "pass" and matched.tests[1].verdict != "pass"
    assert matched.verdict in ("differs", "inconclusive")
    strict = claims(write_stage(tmp_path, aligned, [0.7] * 20, strict=[True] * 5 + [False] * 15))["sae_alignment"]
    readings = {reading.name.split()[0]: reading for reading in strict.other_readings}
    assert readings["haar"].tests[0].estimate == pytest.approx(0.9)
    assert readings["subspace"].tests[0].estimate == pytest.approx(0.25) and readings["subspace"].verdict == "differs"
    assert "subspace 5 aligned / 0 below" in strict.ours
    assert "2 of 18 aligned heads positional, 16 aligned without the positional subspace" in strict.ours


def test_the_generated_sae_section_counts_each_null_and_the_fakes(tmp_path):
    aligned = {"trained": [True] * 18 + [False] * 2, "random": [False] * 20}
    markdown = details_markdown(write_stage(tmp_path, aligned, [0.7] * 20, strict=[True] * 5 + [False] * 15))
    assert "## SAE alignment per site" in markdown
    assert "| tiny, layer 1 | trained | 20 | 18 | 18 / 0 | 5 / 0 | 5 / 0 | 20% (max 30%) · 18 | 2 / 16 |" in markdown
    assert "| tiny, layer 1 | random | 20 | 0 | 0 / 0 | 0 / 0 | 0 / 0 | 20% (max 30%) · 0 | 2 / 0 |" in markdown
