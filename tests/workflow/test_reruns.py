"""Partial reruns, resume after a killed run, and determinism, on the small end-to-end run.

What reruns is read from Snakemake's own plan ("Job stats") and, where jobs really run, from file times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from workflow_helpers import (
    SMALL_CONFIG,
    SMALL_TARGETS,
    SNAKEMAKE,
    job_counts,
    parquet_contents,
    run_snakemake,
)

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def _mtimes(results: Path, pattern: str) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in results.rglob(pattern)}


def _plan_with_override(workdir: Path, name: str, override: str) -> dict[str, int]:
    """Jobs a changed config would run (dry run; the override is merged last)."""
    (workdir / name).write_text(override)
    out = run_snakemake(workdir, "-n", *SMALL_TARGETS, *SMALL_CONFIG, name).stdout
    return job_counts(out)


def test_forcerun_of_figure_rules_reruns_only_figures(small_run):
    results = small_run / "results"
    tables_before = _mtimes(results, "*.parquet")
    figures_before = _mtimes(results / "figures", "*.png")
    out = run_snakemake(
        small_run, *SMALL_TARGETS, "--forcerun", "svd_figure_spectra", "toy_figures", *SMALL_CONFIG
    ).stdout
    counts = job_counts(out)
    # `toy` is the stage's target rule (no outputs, no command): it follows any of its inputs.
    assert counts == {"svd_figure_spectra": 1, "toy_figures": 3, "toy": 1}, out
    assert _mtimes(results, "*.parquet") == tables_before
    changed = {p.name for p, t in _mtimes(results / "figures", "*.png").items() if t != figures_before[p]}
    assert changed == {
        "spectra_minilm.png",
        *(
            f"{figure}_{e}.png"
            for figure in ("geometry", "alignment", "dynamics")
            for e in ("single_pair", "multi_pair", "orthogonalisation")
        ),
    }


def test_changing_a_toy_parameter_reruns_only_that_experiment_and_its_consumers(small_run):
    counts = _plan_with_override(small_run, "steps.yaml", "toy:\n  experiments:\n    single_pair:\n      steps: 50\n")
    assert counts == {
        "toy_train": 1,
        "toy_figures": 1,
        "toy": 1,
        "results_table": 1,
    }


# The SAE stage's analysis attributes SAD's firing pairs (IOI prompts, SAD's threshold), so it follows both keys; its
# SAEs (rule sae_train) do not read them and are not retrained. `sae_all` is the stage's target rule.
SAE_ANALYSIS = {"sae_align": 1, "sae_figures": 1, "sae_figure_anisotropy": 1, "sae_all": 1}


def test_changing_the_sad_threshold_reruns_sad_only(small_run):
    counts = _plan_with_override(small_run, "threshold.yaml", "sad:\n  threshold: 0.5\n")
    # Both prompt sets of MiniLM's two variants (the results table reads every SAD run) and the 4 training
    # checkpoints (one job: weights -> SVD -> SAD of each), what reads them, and nothing upstream: no training, no
    # MiniLM weights or SVD.
    assert counts == {
        "sad": 4,
        "dynamics_series": 1,
        "sad_figures": 1,
        "dynamics_sad": 1,
        "dynamics_figure": 1,
        "dynamics": 1,
        "results_table": 1,
        "explorer_readouts": 1,  # the head explorer's examples come from the trained pairs
        "explorer_page": 1,
        **SAE_ANALYSIS,
    }


def test_changing_the_ioi_prompt_count_reruns_only_ioi_sad_jobs(small_run):
    counts = _plan_with_override(small_run, "n_ioi.yaml", "sad:\n  n_ioi_prompts: 6\n")
    # MiniLM's IOI jobs (trained and random) and what reads them; the checkpoints' repeated-prompt SAD jobs and the
    # dynamics stage do not read the key, so they do not rerun.
    expected = {"sad": 2, "sad_figures": 1, "results_table": 1, "explorer_readouts": 1, "explorer_page": 1}
    assert counts == {**expected, **SAE_ANALYSIS}


# The resume test's run: a toy experiment, MiniLM's weights -> SVD -> SAD and the training checkpoints' chains (two
# asked for; the series job makes all 4) — every kind of job that writes tables (one of each suffices: the other
# variants and experiments run the same code), a quarter of the small run's jobs.
RESUME_TARGETS = [
    "results/toy/single_pair/metrics.parquet",
    "results/sad/minilm/trained/ioi/summary.parquet",
    "results/sad/dyn_step000000/trained/repeated/summary.parquet",
    "results/sad/dyn_step000004/trained/repeated/summary.parquet",
]
# Their tables: 1 toy experiment x 3; MiniLM's trained variant (weights, SVD, bases, 3 SAD); the training log, the
# repeated prompts and 4 checkpoints x 6.
RESUME_TABLES = 3 + 6 + 2 + 4 * 6


def test_killed_run_resumes_to_the_same_tables_as_an_uninterrupted_run(workdir, small_run):
    """SIGKILL mid-run, `--unlock`, `--until svd`, then `--rerun-incomplete`: tables equal the uninterrupted run's.

    Doubles as the determinism check: same config and seeds, two runs, identical Parquet content.
    """
    results = workdir / "results"
    first_output = results / "toy" / "single_pair" / "metrics.parquet"
    process = subprocess.Popen(
        [*SNAKEMAKE, "--cores", "2", *RESUME_TARGETS, *SMALL_CONFIG],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the running jobs with it
    )
    deadline = time.monotonic() + 300
    while not first_output.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the run finished before it could be interrupted"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_tables = set(parquet_contents(results))
    assert first_output.exists() and len(killed_tables) < RESUME_TABLES

    # A plain rerun refuses (outputs of killed jobs are marked incomplete, the lock is left behind) and says
    # what to do; no finished output is lost.
    refused = run_snakemake(workdir, *RESUME_TARGETS, *SMALL_CONFIG, check=False)
    assert refused.returncode != 0, refused.stdout
    assert "--rerun-incomplete" in refused.stdout or "--unlock" in refused.stdout, refused.stdout
    assert killed_tables <= set(parquet_contents(results))
    run_snakemake(workdir, "--unlock", *RESUME_TARGETS, *SMALL_CONFIG)

    # --until svd: only the MiniLM weights and SVD (and what they need) run; SAD and the toy stage wait. (Which
    # SAD tables the killed run had finished depends on the machine's speed, so compare, not expect none.)
    sad_before = {name for name in parquet_contents(results) if name.startswith("sad/")}
    out = run_snakemake(workdir, *RESUME_TARGETS, "--until", "svd", "--rerun-incomplete", *SMALL_CONFIG).stdout
    assert set(job_counts(out)) <= {"extract_weights", "svd", "dynamics_train"}, out
    assert (results / "svd" / "minilm" / "trained.parquet").exists()
    assert {name for name in parquet_contents(results) if name.startswith("sad/")} == sad_before

    run_snakemake(workdir, *RESUME_TARGETS, "--rerun-incomplete", *SMALL_CONFIG)
    resumed, uninterrupted = parquet_contents(results), parquet_contents(small_run / "results")
    assert len(resumed) == RESUME_TABLES and resumed.keys() <= uninterrupted.keys(), sorted(resumed)
    different = [name for name, content in resumed.items() if content != uninterrupted[name]]
    assert not different, f"tables differ between two runs of the same config: {different}"


def test_a_threshold_no_pair_reaches_runs_through_sad(workdir):
    """sad.threshold: 1.0 is allowed by the schema: no pair fires in any layer; the SAD job writes an empty pair table
    and NaN head statistics (a layer without firing pairs used to crash the job; the figures and claims reading such
    tables: tests/unit/test_sad.py, test_report.py)."""
    (workdir / "threshold.yaml").write_text("sad:\n  threshold: 1.0\n")
    sad = workdir / "results" / "sad" / "minilm" / "random" / "ioi"
    run_snakemake(workdir, str((sad / "summary.parquet").relative_to(workdir)), *SMALL_CONFIG, "threshold.yaml")
    assert pq.read_metadata(sad / "pairs.parquet").num_rows == 0
    assert pq.read_metadata(sad / "summary.parquet").num_rows == 72  # every head, NaN statistics
