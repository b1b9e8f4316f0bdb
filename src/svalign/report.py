"""The paper's claims beside our measurements, computed from the pipeline's Parquet tables.

Each ``*_claim`` function reads the tables one claim rests on and returns a :class:`Claim`: the paper's
statement and number, ours, the setting, and a verdict (``pass`` where our number meets the paper's statement
under the acceptance level written next to it, else ``differs``). The same functions feed

* the results table (rule ``results_table``: ``results/report/claims.{parquet,md,csv}``), and
* the report captions, which call them through :class:`Measured` when ``snakemake --report`` renders them,
  so every number in a caption comes from the current tables, never typed in.

The Snakefile imports this module on every call, dry runs included, so it imports no torch: the table
schemas (and torch with them) load when a claim is computed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from svalign import io
from svalign.tables import RESULTS_CLAIMS, schema

__all__ = [
    "PAPER_ALIGNMENT_LEVEL",
    "PAPER_ANISOTROPY_NORM",
    "PAPER_SAE_INTERFERENCE",
    "RESULTS_CLAIMS",
    "Claim",
    "Measured",
    "anisotropy_claim",
    "anisotropy_crossing",
    "anisotropy_curves",
    "claims_from_inputs",
    "claims_markdown",
    "claims_table",
    "crossing_text",
    "dynamics_claim",
    "multi_pair_claim",
    "nrecon_claim",
    "null_claim",
    "single_pair_claim",
    "small_sigma_claim",
]

PathLike = str | os.PathLike[str]
# The paper's numbers that verdicts, captions and figures compare against: defined here only.
PAPER_ALIGNMENT_LEVEL = 0.75  # Fig 4: mean matched |cos| stays above this ...
PAPER_ANISOTROPY_NORM = 55.0  # ... up to this interference ‖E_X‖₂
PAPER_SAE_INTERFERENCE = (10.0, 55.0)  # the paper's ‖E_X‖₂ estimate from GPT-2 SAE decoder directions
MOST_HEADS = 0.5  # "most heads": strictly more than half
OFTEN = 0.2  # "often": at least a fifth of the firing pairs (our reading of the paper's Fig 8)
NULL_GAP = 0.1  # "absent under the null" over training: S at least this fraction below the null's S


@dataclass(frozen=True)
class Claim:
    """One row of the results table.

    Attributes:
        key: stable identifier (``single_pair``, ``nrecon_minilm``, ...).
        claim: the paper's statement, in our words.
        paper: the paper's number or qualitative result.
        ours: our measured value(s), formatted.
        setting: model / config the number comes from.
        verdict: ``pass`` or ``differs``.
        criterion: the acceptance level the verdict applies.
    """

    key: str
    claim: str
    paper: str
    ours: str
    setting: str
    verdict: str
    criterion: str

    def __str__(self) -> str:
        return self.ours

    @property
    def rst(self) -> str:
        """One reStructuredText paragraph for a caption (``|`` and ``*`` escaped: RST markup otherwise)."""

        def escape(text: str) -> str:
            return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")

        return (
            f"**Paper:** {escape(self.paper)}. **Measured here** ({escape(self.setting)}): {escape(self.ours)}. "
            f"**Verdict: {self.verdict}** ({escape(self.criterion)})."
        )


def _verdict(ok: bool) -> str:
    return "pass" if ok else "differs"


def _frame(path: PathLike, schema_name: str):
    """A validated table as a pandas DataFrame (tensor cells as arrays)."""
    return io.to_frame(io.read_table(path, schema(schema_name)))


def _head_rows(metrics):
    """Instances with a head (λ > 0); the λ = 0 controls are baselines, not results."""
    return metrics[metrics["lam"] > 0]


def single_pair_claim(metrics_path: PathLike) -> Claim:
    """Paper Fig 2a: one attended pair gives one significant σ, |cos(w_0, u_1)| ≈ |cos(w_1, v_1)| ≈ 1."""
    rows = _head_rows(_frame(metrics_path, "toy_metrics"))
    cos_u = rows["matched_cos_u"].map(lambda a: float(a[0]))
    cos_v = rows["matched_cos_v"].map(lambda a: float(a[0]))
    ratio = rows["sigma2_over_sigma1"]
    significant = rows["n_significant"]
    ok = cos_u.min() > 0.95 and cos_v.min() > 0.95 and ratio.max() < 0.05
    return Claim(
        key="single_pair",
        claim="one attended pair: one significant singular value, its vectors are the two features",
        paper="|cos| ≈ 1, one significant σ",
        ours=(
            f"|cos(w_0, u_1)| = {cos_u.mean():.4f}, |cos(w_1, v_1)| = {cos_v.mean():.4f} "
            f"(min {min(cos_u.min(), cos_v.min()):.4f}); σ2/σ1 = {ratio.mean():.4f}; "
            f"significant σ: {sorted(set(significant.astype(int)))}"
        ),
        setting=f"toy single pair, {len(rows)} seeds",
        verdict=_verdict(ok),
        criterion="both |cos| > 0.95 and σ2/σ1 < 0.05 for every seed",
    )


def multi_pair_claim(metrics_path: PathLike) -> Claim:
    """Paper Fig 2b: the top P singular pairs align with the P template pairs in order, σ tracks T."""
    rows = _head_rows(_frame(metrics_path, "toy_metrics"))
    n_pairs = len(rows["matched_cos_u"].iloc[0])
    mean_cos, spearman = rows["mean_matched_cos"], rows["spearman_sigma_T"]
    distinct = rows["matched_rank"].map(lambda a: int((a >= 0).sum()))
    ok = mean_cos.mean() > 0.9 and spearman.min() > 0.9
    return Claim(
        key="multi_pair",
        claim=f"{n_pairs} attended pairs: each gets its own singular pair, σ ordered like T",
        paper=f"{n_pairs} pairs aligned, σ ∝ T",
        ours=(
            f"mean matched |cos| = {mean_cos.mean():.3f} (seeds {', '.join(f'{v:.3f}' for v in mean_cos)}); "
            f"Spearman(σ, T) min {spearman.min():.2f}; {distinct.min()}–{distinct.max()} pairs matched one-to-one"
        ),
        setting=f"toy multi pair, {len(rows)} seeds",
        verdict=_verdict(ok),
        criterion="mean matched |cos| > 0.9 and Spearman > 0.9",
    )


def anisotropy_crossing(mean_by_norm, threshold: float = PAPER_ALIGNMENT_LEVEL) -> float | None:
    """Where a decreasing curve (Series: ‖E_X‖₂ → mean |cos|) first drops below ``threshold``, by linear
    interpolation; None if it never does. The one definition of "the crossing" (results table, caption, figure).
    """
    norms, values = list(mean_by_norm.index), list(mean_by_norm.values)
    for (x0, y0), (x1, y1) in zip(
        zip(norms, values, strict=True), zip(norms[1:], values[1:], strict=True), strict=False
    ):
        if y0 >= threshold > y1:
            return float(x0 + (y0 - threshold) * (x1 - x0) / (y0 - y1))
    return None if values[0] >= threshold else float(norms[0])


def anisotropy_curves(table) -> tuple[Any, Any]:
    """Mean matched |cos| over feature seeds by interference norm (sorted): trained head, closed form Ω*."""
    by_norm = table.groupby("interference_norm")
    return (
        by_norm["mean_matched_cos"].mean().sort_index(),
        by_norm["closed_form_mean_matched_cos"].mean().sort_index(),
    )


def crossing_text(curve, threshold: float = PAPER_ALIGNMENT_LEVEL) -> str:
    """Where ``curve`` crosses ``threshold``, as prose: "≈ 43", or "never (up to 60)"."""
    value = anisotropy_crossing(curve, threshold)
    return f"≈ {value:.0f}" if value is not None else f"never (up to {curve.index.max():g})"


def anisotropy_claim(
    anisotropy_path: PathLike, threshold: float = PAPER_ALIGNMENT_LEVEL, paper_norm: float = PAPER_ANISOTROPY_NORM
) -> Claim:
    """Paper Fig 4 / Theorem 2: mean matched |cos| stays above 0.75 up to ‖E_X‖₂ ≈ 55."""
    table = _frame(anisotropy_path, "toy_anisotropy")
    trained, closed = anisotropy_curves(table)
    crossing = anisotropy_crossing(trained, threshold)
    at_paper = float(trained.loc[trained.index >= paper_norm].iloc[0]) if (trained.index >= paper_norm).any() else None
    ours = (
        f"trained curve crosses {threshold} at ‖E_X‖₂ {crossing_text(trained, threshold)}, "
        f"closed form {crossing_text(closed, threshold)}"
    )
    if at_paper is not None:
        ours += f"; mean |cos| {at_paper:.3f} at {paper_norm:g}"
    return Claim(
        key="anisotropy",
        claim="alignment survives feature interference of GPT-2's size",
        paper=f"mean |cos| > {threshold} up to ‖E_X‖₂ ≈ {paper_norm:g}",
        ours=ours,
        setting=f"head on frozen features, {table['feature_seed'].nunique()} seeds × {trained.size} norms",
        verdict=_verdict(crossing is None or crossing >= paper_norm),
        criterion=f"crossing of {threshold} at ‖E_X‖₂ ≥ {paper_norm:g}",
    )


def _summary(summary_path: PathLike):
    summary = _frame(summary_path, "sad_summary")
    if summary.empty:
        raise ValueError(f"{summary_path}: the SAD summary has no heads")
    return summary


def nrecon_claim(summary_path: PathLike, model: str) -> Claim:
    """Paper Fig 9a: most heads need 1–4 singular vectors to reconstruct their relative attention."""
    summary = _summary(summary_path)
    share = float((summary["median_n_recon"] <= 4).mean())
    return Claim(
        key=f"nrecon_{model}",
        claim="most heads reconstruct their attention with 1–4 singular-vector terms",
        paper="most heads: median N_recon 1–4 (GPT-2 small, 128 IOI prompts)",
        ours=(
            f"{share:.1%} of {len(summary)} heads have median N_recon ≤ 4 "
            f"(median over heads {summary['median_n_recon'].median():.1f}; pairs with N_recon ≤ 4: "
            f"{summary['frac_n_recon_le4'].mean():.0%})"
        ),
        setting=f"{model}, {summary['prompt_set'].iloc[0]} prompts",
        verdict=_verdict(share > MOST_HEADS),
        criterion=f"share of heads > {MOST_HEADS:.0%}",
    )


def small_sigma_claim(summary_path: PathLike, model: str) -> Claim:
    """Paper Fig 8: the dominant term of a firing pair often comes from a small singular value."""
    summary = _summary(summary_path)
    weights = summary["n_pairs"].clip(lower=1)
    share = float((summary["frac_top_lower_half"] * weights).sum() / weights.sum())
    return Claim(
        key=f"small_sigma_{model}",
        claim="dominant terms often come from small singular values",
        paper="often (Fig 8)",
        ours=f"{share:.0%} of firing pairs have their largest term in the lower half of the σ ranks",
        setting=f"{model}, {summary['prompt_set'].iloc[0]} prompts",
        verdict=_verdict(share >= OFTEN),
        criterion=f"≥ {OFTEN:.0%} of firing pairs",
    )


def null_claim(summary_path: PathLike, model: str) -> Claim:
    """The sparsity is absent under the spectrum-preserving rotation null: S(real) < S(null)."""
    summary = _summary(summary_path).dropna(subset=["median_sparseness", "null_median_sparseness"])
    sparser = float((summary["median_sparseness"] < summary["null_median_sparseness"]).mean())
    return Claim(
        key=f"null_{model}",
        claim="the sparsity is absent under a spectrum-preserving random rotation of U and V",
        paper="absent under the rotation null",
        ours=(
            f"median Rolls–Tovée S {summary['median_sparseness'].median():.3f} real vs "
            f"{summary['null_median_sparseness'].median():.3f} null; {sparser:.0%} of heads sparser than their null"
        ),
        setting=f"{model}, {summary['prompt_set'].iloc[0]} prompts",
        verdict=_verdict(sparser > MOST_HEADS),
        criterion=f"more than {MOST_HEADS:.0%} of heads have lower S than under the null",
    )


def dynamics_claim(dynamics_path: PathLike) -> Claim:
    """Paper Fig 7b: SAD emerges during training (S falls) and not under the rotation null."""
    table = _frame(dynamics_path, "dynamics_sad")
    rows = table[table["chosen"]].sort_values("step")
    if rows.empty:
        raise ValueError(f"{dynamics_path}: no tracked head")
    first, last = rows.iloc[0], rows.iloc[-1]
    # The phase change: the checkpoint after the steepest rise of the induction score (our series), if known.
    rise = rows["induction_score"].diff()
    phase = rows.loc[rise.idxmax()] if rise.notna().any() else None
    emerged = last["median_sparseness"] < first["median_sparseness"]
    # As sparse as the trained real models are against their null (MiniLM and SmolLM2: 18-20 % below it).
    gap = 1 - last["median_sparseness"] / last["null_median_sparseness"]
    lowest = rows.loc[rows["median_sparseness"].idxmin()]

    def at(row) -> str:
        return (
            f"step {int(row['step'])}: S {row['median_sparseness']:.3f} (null {row['null_median_sparseness']:.3f}), "
            f"N_recon {row['median_n_recon']:.0f} (null {row['null_median_n_recon']:.0f})"
        )

    points = [f"init {at(first)}"] + ([f"phase change {at(phase)}"] if phase is not None else []) + [f"end {at(last)}"]
    points.append(f"S {gap:.0%} below the null at the end; lowest S at {at(lowest)}")
    return Claim(
        key="dynamics",
        claim="SAD emerges over training and is absent under the rotation null",
        paper="S of an IOI head falls over Pythia-160M training, not under the null (Fig 7b)",
        ours=f"L{int(last['layer'])}H{int(last['head'])}: " + "; ".join(points),
        setting=f"{'our series' if last['series'] == 'ours' else 'external checkpoints'} ({len(rows)} checkpoints)",
        verdict=_verdict(bool(emerged and gap >= NULL_GAP)),
        criterion=f"S at the end below S at init and ≥ {NULL_GAP:.0%} below the null",
    )


CLAIM_FUNCTIONS = {
    "single_pair": single_pair_claim,
    "multi_pair": multi_pair_claim,
    "anisotropy": anisotropy_claim,
    "nrecon": nrecon_claim,
    "small_sigma": small_sigma_claim,
    "null": null_claim,
    "dynamics": dynamics_claim,
}


class Measured:
    """Claims for report captions, computed from Parquet when the caption renders.

    A rule puts ``measured=Measured()`` in its ``params``; its caption writes e.g.
    ``{{ snakemake.params.measured.single_pair(snakemake.input[0]) }}`` (a :class:`Claim` prints as our value;
    ``.paper`` and ``.verdict`` are there too). Snakemake ignores objects of this kind when it decides about
    reruns, and nothing is read until the report is built.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return CLAIM_FUNCTIONS[name]
        except KeyError:
            raise AttributeError(f"no claim {name!r}; known: {sorted(CLAIM_FUNCTIONS)}") from None

    def __getitem__(self, name: str) -> Any:
        return CLAIM_FUNCTIONS[name]

    def __contains__(self, name: object) -> bool:
        return name in CLAIM_FUNCTIONS

    def __repr__(self) -> str:
        return "Measured()"


def claims_table(claims: Iterable[Claim]) -> dict[str, list[str]]:
    """Column data for :data:`RESULTS_CLAIMS`."""
    rows = [asdict(claim) for claim in claims]
    return {f.name: [row[f.name] for row in rows] for f in fields(Claim)}


def claims_markdown(claims: Iterable[Claim], header: str = "") -> str:
    """The results table as Markdown (generated: never edit the file by hand)."""
    lines = [header] if header else []
    lines += ["| claim | paper | ours | setting | verdict (criterion) |", "|---|---|---|---|---|"]
    for c in claims:
        cells = [c.claim, c.paper, c.ours, c.setting, f"**{c.verdict}** ({c.criterion})"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def claims_from_inputs(inputs: Mapping[str, PathLike]) -> list[Claim]:
    """Every claim the given tables support, in the table's order.

    ``inputs`` names tables as rule ``results_table`` does (workflow/rules/report.smk): ``single_pair``,
    ``multi_pair`` (toy metrics), ``anisotropy``, ``sad_<model>`` (IOI summary of the trained variant), ``dynamics``.
    """
    claims = []
    for name in ("single_pair", "multi_pair", "anisotropy"):
        if name in inputs:
            claims.append(CLAIM_FUNCTIONS[name](inputs[name]))
    sad_models = sorted(name.removeprefix("sad_") for name in inputs if name.startswith("sad_"))
    for kind in ("nrecon", "small_sigma", "null"):
        claims.extend(CLAIM_FUNCTIONS[kind](inputs[f"sad_{model}"], model) for model in sad_models)
    if "dynamics" in inputs:
        claims.append(dynamics_claim(inputs["dynamics"]))
    return claims
