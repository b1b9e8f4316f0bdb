"""The measured values behind the claims, as generated Markdown tables (torch-free; docs/results.md).

Rule ``results_table`` appends these sections to the claims table (``results/report/claims.md``, copied to
``docs/results.md``), so the README quotes no measured value of its own: its prose links here. Each section reads
one kind of table; a section whose inputs the config does not produce is left out. Every aggregate goes through
:mod:`svalign.definitions` or the claim modules' own functions, so a number here equals the one in the claims table,
the captions and the figure titles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from svalign import io
from svalign.definitions import (
    NULL_LABELS,
    NULL_PREFIXES,
    NULLS,
    anisotropy_curves,
    crossing_text,
    pooled_share,
    share_at_most,
    share_sparser,
)
from svalign.io import PathLike
from svalign.tables import schema

__all__ = [
    "anisotropy_section",
    "details_markdown",
    "dynamics_section",
    "sad_section",
    "sae_section",
    "sweep_section",
    "toy_section",
]


def _span(values: Any, spec: str = ".3f") -> str:
    """``a–b`` over seeds (one value: ``a``); NaN values are left out, none left: ``—``."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return "—"
    low, high = format(values.min(), spec), format(values.max(), spec)
    return low if low == high else f"{low}–{high}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Toy model
# --------------------------------------------------------------------------------------------------


def _sigma_ratio(row: pd.Series) -> float:
    return float(np.nanmedian(row["matched_sigma"] / row["closed_form_sigma"]))


def _closed_cos(row: pd.Series) -> float:
    return float(np.nanmean((row["closed_form_cos_u"] + row["closed_form_cos_v"]) / 2))


_TOY_COLUMNS: dict[str, Callable[[pd.DataFrame], str]] = {
    "\\|cos(w_a, u)\\| / \\|cos(w_b, v)\\|, first pair": lambda f: (
        f"{_span(f['matched_cos_u'].map(lambda a: a[0]))} / {_span(f['matched_cos_v'].map(lambda a: a[0]))}"
    ),
    "mean matched \\|cos\\|": lambda f: _span(f["mean_matched_cos"]),
    "min matched \\|cos\\|": lambda f: _span(f["min_matched_cos"]),
    "σ2/σ1": lambda f: _span(f["sigma2_over_sigma1"], ".4f"),
    "significant σ": lambda f: _span(f["n_significant"], ".0f"),
    "σ/(βT) over pairs": lambda f: _span(np.concatenate(f["sigma_over_target"].to_list()), ".2f"),
    "‖Ω − Ω*‖/‖Ω*‖": lambda f: _span(f["closed_form_rel_error"]),
    "σ / closed-form σ (median over pairs)": lambda f: _span(f.apply(_sigma_ratio, axis=1)),
    "\\|cos\\| of trained and closed-form vectors (mean over pairs)": lambda f: _span(f.apply(_closed_cos, axis=1)),
    "max \\|cos\\| of the query / key feature with any other": lambda f: (
        f"{_span(f['max_interference_query'])} / {_span(f['max_interference_key'])}"
    ),
    "max \\|cos\\| of an attended feature with any other": lambda f: _span(f["max_interference_attended"]),
    "other features' energy in span(attended)": lambda f: _span(f["attended_span_energy"]),
}
"""The toy metrics behind the toy claims, each a range over seeds (:func:`_span`)."""


def toy_section(metrics: Mapping[str, PathLike]) -> str:
    """Every toy experiment's head instances beside their λ = 0 controls: ranges over seeds of the metrics the
    toy claims rest on (alignment, spectrum, closed form, orthogonalisation)."""
    rows = []
    for experiment, path in metrics.items():
        frame = io.read_frame(path, schema("toy_metrics"))
        for lam, group in frame.groupby("lam", sort=False):
            label = f"{'head' if lam > 0 else 'control'} λ = {lam:g}, {_count(len(group), 'seed')}"
            rows.append([experiment, label, *(cell(group) for cell in _TOY_COLUMNS.values())])
    note = "Ranges over seeds (one value: all seeds agree to the digits shown).\n\n"
    return "## Toy experiments\n\n" + note + _table(["experiment", "instances", *_TOY_COLUMNS], rows)


def anisotropy_section(path: PathLike) -> str:
    """The anisotropy sweep by interference norm: trained and closed-form alignment, and where each crosses."""
    table = io.read_frame(path, schema("toy_anisotropy"))
    trained, closed = anisotropy_curves(table)
    rows = []
    for norm, group in table.groupby("interference_norm"):
        rows.append(
            [
                f"{norm:g}",
                f"{trained[norm]:.3f} ({_span(group['mean_matched_cos'])})",
                f"{closed[norm]:.3f}",
                f"{(group['mean_matched_cos'] - group['closed_form_mean_matched_cos']).abs().max():.3f}",
                _span(group["closed_form_rel_error"]),
            ]
        )
    header = [
        "‖E_X‖₂",
        "trained mean matched \\|cos\\| (seed range)",
        "closed form Ω*",
        "largest \\|trained − closed form\\|",
        "‖Ω − Ω*‖/‖Ω*‖",
    ]
    crossing = (
        f"Means over {_count(table['feature_seed'].nunique(), 'feature seed')}. The trained curve "
        f"{crossing_text(trained)}, the closed form {crossing_text(closed)}.\n\n"
    )
    return "## Anisotropy sweep\n\n" + crossing + _table(header, rows)


def sweep_section(path: PathLike) -> str:
    """The robustness sweeps: mean matched |cos| per point, one parameter at a time (the others at the base, the
    value every other parameter's points share)."""
    table = io.read_frame(path, schema("toy_sweep"))
    names = ["lam", "sparsity", "n_features", "context_len", "d_head"]
    base = {name: table[name].mode().iloc[0] for name in names}
    rows = []
    for name in names:
        others = np.logical_and.reduce([table[o] == base[o] for o in names if o != name])
        for value, group in table[others].groupby(name):
            rows.append(
                [
                    f"{name} = {value:g}" + (" (base)" if value == base[name] else ""),
                    f"{group['mean_matched_cos'].mean():.3f}",
                    ", ".join(f"{v:.2f}" for v in group.sort_values("seed")["mean_matched_cos"]),
                    f"{group['n_distinct_best'].mean():.1f} of {int(group['n_pairs'].iloc[0])}",
                    _span(group["n_matched"], ".0f"),
                ]
            )
    header = ["point", "mean matched \\|cos\\|", "by seed", "distinct best singular pairs", "pairs matched"]
    return "## Robustness sweeps\n\n" + _table(header, rows)


# --------------------------------------------------------------------------------------------------
# SAD and dynamics
# --------------------------------------------------------------------------------------------------


def _sad_cells(summary: pd.DataFrame, record: dict) -> list[str]:
    rank = int(summary["rank"].iloc[0])
    defined = summary["n_pairs"] - summary["n_nonpositive"]
    diagnostics = record.get("config", {})
    ioi = diagnostics.get("ioi_logit_diff_mean")
    return [
        f"{_span(share_at_most(summary['median_n_recon_signed']), '.0%')} / "
        f"{_span(share_at_most(summary['median_n_recon_magnitude']), '.0%')}",
        f"{_span(pooled_share(summary['frac_n_recon_le4_signed'], defined), '.0%')} / "
        f"{_span(pooled_share(summary['frac_n_recon_le4_magnitude'], defined), '.0%')}",
        _span(summary["median_sparseness"].median(), ".3f"),
        _span(summary["null_median_sparseness"].median(), ".3f"),
        f"{_span(pooled_share(summary['frac_top_lower_half'], summary['n_pairs']), '.0%')} (r = {rank})",
        f"{int(summary['n_pairs'].sum()):,}",
        _span(diagnostics.get("max_score_error", float("nan")), ".1e"),
        f"{ioi:.2f}, {diagnostics['ioi_accuracy']:.0%}" if ioi is not None else "—",
    ]


def sad_section(summaries: Mapping[str, PathLike]) -> str:
    """Every SAD run (model, prompt set; trained beside its random-init twin).

    ``summaries`` maps ``summary_<model>_<variant>_<prompt_set>`` to the run's summary table.
    """
    runs = {tuple(name.removeprefix("summary_").rsplit("_", 2)): path for name, path in summaries.items()}
    rows = []
    for (model, variant, prompt_set), path in sorted(runs.items(), key=lambda item: (item[0][0], item[0][2])):
        cells = _sad_cells(io.read_frame(path, schema("sad_summary")), io.read_provenance(path))
        rows.append([f"{model}, {prompt_set}", variant, *cells])
    header = [
        "model, prompts",
        "weights",
        "heads with median N_recon ≤ 4 (signed / magnitude ordering)",
        "firing pairs (ℓ̃ > 0) with N_recon ≤ 4, pooled (signed / magnitude)",
        "median S",
        "median S, rotation null",
        "largest term in the lower half of σ (pooled over pairs)",
        "firing pairs",
        "max score error",
        "IOI logit(IO) − logit(S), accuracy",
    ]
    note = (
        'S: median over heads of each head\'s median Rolls–Tovée S (lower = sparser); docs/method.md, "Definitions", '
        "defines every column. The claims table gives the intervals of the numbers its verdicts use.\n\n"
    )
    return "## SAD per model and prompt set\n\n" + note + _table(header, rows) + "\n\n" + _nulls_table(runs)


def _null_cell(summary: pd.DataFrame, null: str) -> str:
    """``median S · share of heads sparser · significant sparser / denser`` of one null (— when not run)."""
    prefix = NULL_PREFIXES[null]
    medians = summary["null_median_sparseness" if null == "haar" else f"{prefix}median_sparseness"]
    if medians.isna().all():
        return "—"
    sparser = share_sparser(summary["median_sparseness"], medians)
    significant = f"{int(summary[f'{prefix}sparser_bh'].sum())} / {int(summary[f'{prefix}denser_bh'].sum())}"
    return f"{medians.median():.3f} · {sparser:.0%} · {significant}"


def _softcap_cell(summary: pd.DataFrame) -> str:
    """The largest and the median over heads of the soft-cap distortion of ℓ̃ (— for an uncapped model)."""
    largest = summary["softcap_max_distortion"].max()
    return f"{largest:.0%} / {summary['softcap_median_distortion'].median():.1%}" if largest > 0 else "—"


def _nulls_table(runs: Mapping[tuple[str, str, str], PathLike]) -> str:
    """Every SAD run against each null, and the soft-cap distortion of capped models."""
    rows = []
    for (model, variant, prompt_set), path in sorted(runs.items(), key=lambda item: (item[0][0], item[0][2])):
        summary = io.read_frame(path, schema("sad_summary"))
        rows.append(
            [
                f"{model}, {prompt_set}",
                variant,
                f"{len(summary)}",
                _span(summary["median_sparseness"].median(), ".3f"),
                *(_null_cell(summary, null) for null in NULLS),
                _softcap_cell(summary),
            ]
        )
    header = [
        "model, prompts",
        "weights",
        "heads",
        "median S",
        *(f"{null} null: median S · heads sparser · significant sparser / denser" for null in NULLS),
        "soft-cap distortion of ℓ̃: largest / median over heads",
    ]
    note = (
        'Each null keeps σ and replaces the singular directions (docs/method.md, "Nulls"): '
        + "; ".join(f"{null}: {label}" for null, label in NULL_LABELS.items())
        + ". *Heads sparser*: share of heads whose median S is below the null's (draws pooled, at the real firing "
        "pairs). *Significant*: heads whose median S lies below (sparser) or above (denser) the null draws' medians, "
        "each draw scored at its own firing pairs, by a t prediction test with Benjamini–Hochberg at 5 % over the "
        "run's heads.\n\n"
    )
    return "### SAD against each null\n\n" + note + _table(header, rows)


def _checkpoint_row(label: str, row: pd.Series) -> list[str]:
    return [
        label,
        f"{int(row['step'])}",
        f"{row['median_sparseness']:.3f}",
        f"{row['null_median_sparseness']:.3f}",
        f"{row['median_n_recon']:.0f} ({row['null_median_n_recon']:.0f})",
        f"{row['induction_score']:.2f}",
        f"{row['previous_token_score']:.2f}",
        f"{row['loss']:.2f}",
        f"{row['icl_loss']:.2f}",
    ]


def dynamics_section(path: PathLike) -> str:
    """The tracked head at its landmark checkpoints, and every head at the last checkpoint."""
    table = io.read_frame(path, schema("dynamics_sad"))
    rows = table[table["chosen"]].sort_values("step").reset_index(drop=True)
    rise = rows["induction_score"].diff()
    marks = {"init": 0}
    if rows["median_sparseness"].notna().any():  # NaN where no pair of the head fires
        marks["lowest S"] = int(rows["median_sparseness"].idxmin())
    if rise.notna().any():
        marks["before the phase change"] = int(rise.idxmax()) - 1
        marks["phase change (steepest induction rise)"] = int(rise.idxmax())
    marks["end"] = len(rows) - 1
    labels: dict[int, list[str]] = {}
    for label, index in marks.items():
        labels.setdefault(index, []).append(label)
    chosen = [_checkpoint_row(", ".join(labels[i]), rows.iloc[i]) for i in sorted(labels)]
    header = ["checkpoint", "step", "S", "S null", "N_recon (null)", "induction", "previous-token", "loss", "ICL loss"]
    last = table[table["step"] == table["step"].max()].sort_values(["layer", "head"])
    heads = [[f"L{int(r['layer'])}H{int(r['head'])}", *_checkpoint_row("", r)[2:7]] for _, r in last.iterrows()]
    head = rows.iloc[0]
    return (
        f"## Training dynamics\n\nTracked head L{int(head['layer'])}H{int(head['head'])}, {len(rows)} checkpoints.\n\n"
        + _table(header, chosen)
        + "\nEvery head at the last checkpoint:\n\n"
        + _table(["head", "S", "S null", "N_recon (null)", "induction", "previous-token"], heads)
    )


def sae_section(inputs: Mapping[str, PathLike]) -> str:
    """Every SAE site and variant: heads aligned beyond the Haar quantile, significant under each null after
    Benjamini–Hochberg (aligned / below), and the fake-dictionary control."""
    rows = []
    models = sorted(name.removeprefix("sae_heads_") for name in inputs if name.startswith("sae_heads_"))
    for model in models:
        heads = io.read_frame(inputs[f"sae_heads_{model}"], schema("sae_heads"))
        sites = io.read_frame(inputs[f"sae_sites_{model}"], schema("sae_sites")).set_index(["layer", "variant"])
        for (layer, variant), part in heads.groupby(["layer", "variant"], sort=True):
            site = sites.loc[(layer, variant)]
            n_fakes = int(site["n_fake_dictionaries"])
            beats = int(np.isclose(part["fake_p_aligned"], 1 / (n_fakes + 1)).sum()) if n_fakes else 0
            fakes = (
                f"{site['fake_aligned_mean']:.0%} (max {site['fake_aligned_max']:.0%}) · {beats}" if n_fakes else "—"
            )
            rows.append(
                [
                    f"{model}, layer {int(layer)}",
                    variant,
                    f"{len(part)}",
                    f"{int(part['aligned'].sum())}",
                    *(f"{int(part[f'{n}_aligned_bh'].sum())} / {int(part[f'{n}_below_bh'].sum())}" for n in NULLS),
                    fakes,
                    f"{int(part['positional'].sum())} / {int(part['aligned_without_position'].sum())}",
                    _attribution_cell(site),
                ]
            )
    header = [
        "site",
        "weights",
        "heads",
        "aligned beyond the Haar quantile",
        *(f"{null} null: significant aligned / below" for null in NULLS),
        "fake dictionaries: aligned share (max) · heads matched better than by every fake",
        "positional heads / aligned without the positional subspace",
        "attribution match: SAE / random dictionary / rotation null · latent×latent share: SAE / random",
    ]
    note = (
        "Per head the mean best |cos| of u_1..u_n, v_1..v_n with the SAE's decoder directions (docs/method.md, "
        '"Real features"); *significant*: Monte Carlo p under the null, Benjamini–Hochberg at 5 % over the '
        "variant's site heads, each tail. The fake dictionaries have the SAE's size and directions drawn from the "
        "site's head-input second moment: their aligned share is the baseline. *Positional*: more than half of the "
        "top singular vectors' energy in the site's 16-dimensional positional subspace (the per-position mean head "
        "input's principal directions). *Attribution*: the share of firing pairs whose dominant latent pair is the "
        "dominant singular term's, through the SAE and through a random dictionary of its size (matching pursuit, "
        "k atoms), and the median share of the logit carried by latent×latent terms.\n\n"
    )
    return "## SAE alignment per site\n\n" + note + _table(header, rows)


def _attribution_cell(site: Any) -> str:
    """One site's attribution rates and latent shares ("—" for the random-init twin, never attributed)."""
    if not np.isfinite(site["match_rate"]):
        return "—"
    rates = " / ".join(f"{site[c]:.1%}" for c in ("match_rate", "random_match_rate", "null_match_rate"))
    return f"{rates} · {site['latent_share']:.2f} / {site['random_latent_share']:.2f}"


def details_markdown(inputs: Mapping[str, PathLike]) -> str:
    """The generated sections for what ``inputs`` (named as in rule ``results_table``) holds."""
    toy = {name: path for name, path in inputs.items() if name in _toy_names(inputs)}
    sections = [toy_section(toy)] if toy else []
    if "anisotropy" in inputs:
        sections.append(anisotropy_section(inputs["anisotropy"]))
    if "sweep" in inputs:
        sections.append(sweep_section(inputs["sweep"]))
    summaries = {name: path for name, path in inputs.items() if name.startswith("summary_")}
    if summaries:
        sections.append(sad_section(summaries))
    if any(name.startswith("sae_heads_") for name in inputs):
        sections.append(sae_section(inputs))
    if "dynamics" in inputs:
        sections.append(dynamics_section(inputs["dynamics"]))
    return "".join("\n" + section for section in sections)


def _toy_names(inputs: Mapping[str, PathLike]) -> list[str]:
    """Toy experiments among the inputs: every name that is not another kind of table."""
    other = ("anisotropy", "sweep", "dynamics", "sad_", "pairs_", "summary_", "sae_")
    return [name for name in inputs if not name.startswith(other)]
