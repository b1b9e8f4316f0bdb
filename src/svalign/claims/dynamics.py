"""The training-dynamics claim (paper Fig 7b), with bootstrap intervals over prompts and null draws.

The verdict compares the tracked head's median S at the first and the last checkpoint, and at the last checkpoint
with its rotation null. Both checkpoints read the same prompts, so a resample draws the prompts once for both
(paired), and the null draws on top for the null's median.
"""

from __future__ import annotations

import numpy as np

from svalign import io
from svalign.claims.core import Claim, combine, compare
from svalign.definitions import NULL_GAP, gap_below_null
from svalign.io import PathLike
from svalign.stats import BootstrapOptions, generator, resample_counts, weighted_medians
from svalign.tables import SAD_PAIRS, schema

__all__ = ["dynamics_claim", "head_pairs"]


def head_pairs(pairs_path: PathLike, checkpoint: str, layer: int, head: int) -> dict[str, np.ndarray]:
    """One head's firing pairs of one checkpoint's SAD run: ``prompt``, ``sparseness`` ``[pairs]`` and
    ``null_sparseness`` ``[pairs, draws]``, and the run's kept prompt count ``prompts_kept``."""
    config = io.read_provenance(pairs_path).get("config", {})
    if config.get("model") != checkpoint:
        raise ValueError(f"{pairs_path} holds the SAD pairs of {config.get('model')!r}, not of {checkpoint!r}")
    table = io.read_table(pairs_path, SAD_PAIRS, columns=["layer", "head", "prompt", "sparseness", "null_sparseness"])
    chosen = (table.column("layer").to_numpy() == layer) & (table.column("head").to_numpy() == head)
    return {
        "prompt": table.column("prompt").to_numpy()[chosen],
        "sparseness": table.column("sparseness").to_numpy()[chosen],
        "null_sparseness": io.tensor(table, "null_sparseness")[chosen],
        "prompts_kept": np.asarray(config.get("prompts_kept", 0)),
    }


def _resampled_medians(first: dict, last: dict, options: BootstrapOptions) -> tuple[np.ndarray, ...]:
    """``[resamples]`` medians of S at the first and last checkpoint and of the last one's null (paired prompts)."""
    ids, units = np.unique(np.concatenate([first["prompt"], last["prompt"]]), return_inverse=True)
    n_prompts = max(len(ids), int(first["prompts_kept"]), int(last["prompts_kept"]))
    unit_first, unit_last = units[: len(first["prompt"])], units[len(first["prompt"]) :]
    prompts = resample_counts(n_prompts, options.resamples, generator(options, 0))
    n_draws = last["null_sparseness"].shape[1]
    draws = resample_counts(n_draws, options.resamples, generator(options, 1))
    null_weights = (prompts[:, :, None] * draws[:, None, :]).reshape(len(prompts), -1)
    null_groups = (unit_last[:, None] * n_draws + np.arange(n_draws)).ravel()
    return (
        weighted_medians(first["sparseness"], unit_first, prompts),
        weighted_medians(last["sparseness"], unit_last, prompts),
        weighted_medians(last["null_sparseness"].ravel(), null_groups, null_weights),
        n_prompts,
        n_draws,
    )


def _at(row) -> str:
    return (
        f"step {int(row['step'])}: S {row['median_sparseness']:.3f} (null {row['null_median_sparseness']:.3f}), "
        f"N_recon {row['median_n_recon']:.0f} (null {row['null_median_n_recon']:.0f})"
    )


def dynamics_claim(
    dynamics_path: PathLike, first_pairs: PathLike, last_pairs: PathLike, options: BootstrapOptions | None = None
) -> Claim:
    """Paper Fig 7b: SAD emerges during training (S falls) and not under the rotation null.

    Args:
        dynamics_path: the dynamics stage's per-checkpoint summary (``dynamics_sad``).
        first_pairs, last_pairs: ``pairs.parquet`` of the first and the last checkpoint's SAD run.
    """
    options = BootstrapOptions.from_mapping(options)
    table = io.to_frame(io.read_table(dynamics_path, schema("dynamics_sad")))
    rows = table[table["chosen"]].sort_values("step")
    if rows.empty:
        raise ValueError(f"{dynamics_path}: no tracked head")
    first, last = rows.iloc[0], rows.iloc[-1]
    layer, head = int(last["layer"]), int(last["head"])
    first_s, last_s, null_s, n_prompts, n_draws = _resampled_medians(
        head_pairs(first_pairs, first["checkpoint"], layer, head),
        head_pairs(last_pairs, last["checkpoint"], layer, head),
        options,
    )
    tests = (
        compare(
            "S at the first checkpoint − S at the last",
            first["median_sparseness"] - last["median_sparseness"],
            first_s - last_s,
            ">",
            0.0,
            options,
        ),
        compare(
            "S below the null at the last checkpoint (1 − S/S_null)",
            float(gap_below_null(last["median_sparseness"], last["null_median_sparseness"])),
            gap_below_null(last_s, null_s),
            "≥",
            NULL_GAP,
            options,
            ".1%",
        ),
    )
    # The phase change: the checkpoint after the steepest rise of the induction score (our series), if known.
    rise = rows["induction_score"].diff()
    phase = rows.loc[rise.idxmax()] if rise.notna().any() else None
    points = [f"init {_at(first)}"] + ([f"phase change {_at(phase)}"] if phase is not None else [])
    points += [f"end {_at(last)}", f"S {tests[1].estimate:.0%} below the null at the end"]
    if rows["median_sparseness"].notna().any():  # NaN at every checkpoint where no pair of the head fires
        points[-1] += f"; lowest S at {_at(rows.loc[rows['median_sparseness'].idxmin()])}"
    return Claim(
        key="dynamics",
        claim="SAD emerges over training and is absent under the rotation null",
        paper="S of an IOI head falls over Pythia-160M training, not under the null (Fig 7b)",
        ours=f"L{layer}H{head}: " + "; ".join(points),
        setting=f"{'our series' if last['series'] == 'ours' else 'external checkpoints'} ({len(rows)} checkpoints)",
        verdict=combine(t.verdict for t in tests),
        criterion=f"S at the end below S at init and ≥ {NULL_GAP:.0%} below the null",
        tests=tests,
        resampled=f"over {n_prompts} prompts and {n_draws} null draws, {options.resamples} resamples",
        confidence=options.confidence,
    )
