"""Bootstrap machinery: exact weighted medians, seeded resamples, and intervals that cover at their nominal rate."""

from __future__ import annotations

import numpy as np
import pytest

from svalign import definitions, stats


def test_weighted_medians_equal_numpy_median_of_the_repeated_values():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n, n_groups = int(rng.integers(1, 300)), int(rng.integers(1, 9))
        values = rng.integers(0, 12, size=n).astype(float) if trial % 2 else rng.normal(size=n)
        groups = rng.integers(0, n_groups, size=n)
        weights = rng.integers(0, 4, size=(6, n_groups)).astype(float)
        medians = stats.weighted_medians(values, groups, weights)
        for b in range(len(weights)):
            repeated = np.repeat(values, weights[b, groups].astype(int))
            expected = np.median(repeated) if len(repeated) else np.nan
            np.testing.assert_equal(medians[b], expected, err_msg=f"trial {trial}, resample {b}")
    assert np.isnan(stats.weighted_medians(np.array([]), np.array([], int), np.ones((2, 3)))).all()


def test_resample_counts_are_seeded_multinomial_draws():
    options = stats.BootstrapOptions(resamples=500, seed=3)
    counts = stats.resample_counts(7, options.resamples, stats.generator(options, 0))
    assert counts.shape == (500, 7) and (counts.sum(1) == 7).all()
    assert np.array_equal(counts, stats.resample_counts(7, 500, stats.generator(options, 0)))
    assert not np.array_equal(counts, stats.resample_counts(7, 500, stats.generator(options, 1)))  # own stream
    assert counts.mean() == pytest.approx(1.0, abs=0.05)


def test_percentile_interval_keeps_infinite_resamples_and_ignores_nan():
    samples = np.array([1.0, 2.0, 3.0, np.inf, np.nan] * 20)
    low, high = stats.percentile_interval(samples, 0.9)
    assert low == 1.0 and high == np.inf


def test_options_come_from_the_config_mapping():
    assert stats.BootstrapOptions.from_mapping({"resamples": 10}) == stats.BootstrapOptions(resamples=10)
    assert stats.BootstrapOptions.from_mapping(None) == stats.BootstrapOptions()
    with pytest.raises(ValueError, match=r"unknown keys \['draws'\]"):
        stats.BootstrapOptions.from_mapping({"draws": 3})
    with pytest.raises(ValueError, match="confidence"):
        stats.BootstrapOptions(confidence=1.5)


def _clustered_sample(rng: np.random.Generator, n_prompts: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Pairs clustered by prompt: value = prompt effect + noise, both N(0, 1): the population median is 0 and
    half the values are positive, but pairs of one prompt are correlated (a bootstrap over pairs would be too
    narrow)."""
    sizes = rng.integers(5, 16, size=n_prompts)
    prompt = np.repeat(np.arange(n_prompts), sizes)
    return rng.normal(size=n_prompts)[prompt] + rng.normal(size=len(prompt)), prompt


def test_bootstrap_over_prompts_covers_the_known_value_at_its_nominal_rate():
    """100 seeded synthetic data sets; the 95 % intervals of the median and of a pooled fraction must cover the
    true value (0 and 0.5) at least 90 times each (95 expected; 90 allows for the binomial spread)."""
    options = stats.BootstrapOptions(resamples=1000, confidence=0.95)
    covered_median = covered_share = 0
    for repeat in range(100):
        values, prompt = _clustered_sample(np.random.default_rng([2024, repeat]))
        n_prompts = int(prompt.max()) + 1
        counts = stats.resample_counts(n_prompts, options.resamples, stats.generator(options, repeat))
        low, high = stats.percentile_interval(stats.weighted_medians(values, prompt, counts), options.confidence)
        covered_median += low <= 0 <= high
        positive = np.bincount(prompt, weights=(values > 0).astype(float), minlength=n_prompts)
        shares = stats.pooled_ratio(counts, positive, np.bincount(prompt, minlength=n_prompts).astype(float))
        low, high = stats.percentile_interval(shares, options.confidence)
        covered_share += low <= 0.5 <= high
    assert covered_median >= 90, covered_median
    assert covered_share >= 90, covered_share


def test_crossings_are_vectorised_over_curves_and_agree_with_the_series_form():
    import pandas as pd

    norms = np.array([0.0, 10.0, 20.0, 30.0])
    curves = np.array([[0.95, 0.85, 0.65, 0.55], [0.9, 0.8, 0.78, 0.76], [0.7, 0.6, 0.5, 0.4], [0.7, 0.8, 0.6, 0.5]])
    found = definitions.crossings(curves, norms, 0.75)
    np.testing.assert_allclose(found, [15.0, np.inf, 0.0, 10 + 0.05 / 0.2 * 10])
    for curve, expected in zip(curves, found, strict=True):
        value = definitions.anisotropy_crossing(pd.Series(curve, index=norms), 0.75)
        assert (value is None and np.isinf(expected)) or value == pytest.approx(expected)
    np.testing.assert_equal(definitions.grid_crossings(curves, norms, 0.75), [20.0, np.inf, 0.0, 0.0])


def test_head_shares_and_pooled_fractions():
    assert definitions.share_at_most(np.array([[1.0, 4.0, 5.0, np.nan]])).tolist() == [0.5]
    assert definitions.share_sparser([0.3, 0.5, np.nan], [0.4, 0.4, 0.2]) == pytest.approx(0.5)
    # pooled over pairs, not a mean over heads: 1 of 10 and 9 of 10 pairs → 50 %; 1 of 2 heads' … → differs
    assert definitions.pooled_share([0.1, 0.9, 0.5], [10, 10, 0]) == pytest.approx(0.5)
    assert definitions.pooled_share([0.0, 1.0], [90, 10]) == pytest.approx(0.1)
    assert definitions.lower_half(np.array([15, 16, 31]), 32).tolist() == [False, True, True]
