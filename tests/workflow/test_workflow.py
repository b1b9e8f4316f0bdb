"""Snakemake end to end: dry runs, config errors before any job, and a small real run with the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from workflow_helpers import SMALL_CONFIG, SMALL_TARGETS, job_counts
from workflow_helpers import run_snakemake as snakemake

from svalign import io, report, tables

pytestmark = pytest.mark.workflow


def test_dry_run_plans_every_job(workdir):
    out = snakemake(workdir, "-n").stdout
    counts = job_counts(out)
    expected = {
        "toy_train": 3,
        "toy_figures": 3,
        "toy_anisotropy": 1,
        "toy_sweep_point": 11,
        "extract_weights": 4,  # 2 models x 2 variants
        "svd": 4,
        "convert_smollm2": 1,
        "sad": 8,  # 2 models x 2 variants x 2 prompt sets
        "dynamics_train": 1,
        "dynamics_prompts": 1,
        "dynamics_series": 1,  # the 30 training checkpoints: weights -> SVD -> SAD, all in one job
        "dynamics_sad": 1,
        "sae_sampled_text": 1,
        "sae_corpus": 1,
        "sae_train": 2,  # one job per model: MiniLM layers 1 and 4, SmolLM2 layer 15
        "sae_align": 2,
        "results_table": 1,
    }
    assert {rule: counts.get(rule) for rule in expected} == expected, out


def _default_plan_with(workdir: Path, target: str, override: str) -> tuple[dict[str, int], str]:
    """Job counts and output of a dry run of ``target`` under the default config with ``override`` merged last."""
    (workdir / "override.yaml").write_text(override)
    out = snakemake(workdir, "-n", target, "--configfile", "config.yaml", "override.yaml").stdout
    return job_counts(out), out


def test_checkpoint_jobs_each_plans_one_job_per_checkpoint(workdir):
    """dynamics.checkpoint_jobs: each (auto's choice for external checkpoints) makes every checkpoint its own job."""
    counts, out = _default_plan_with(workdir, "dynamics", "dynamics:\n  checkpoint_jobs: each\n")
    assert counts["dynamics_checkpoint"] == 30 and "dynamics_series" not in counts, out
    assert "results/sad/dyn_step000000/trained/repeated/summary.parquet" in out


def test_batched_sweeps_plan_one_job_per_shape(workdir):
    """The 11 default points have 7 shapes (N, m, H): the 5 base-shape points (λ, S vary) become one job."""
    counts, out = _default_plan_with(workdir, "toy", "toy:\n  sweeps:\n    batch_shared_shapes: true\n")
    assert counts["toy_sweep_group"] == 7 and "toy_sweep_point" not in counts, out
    assert "groups/n_features~20/context_len~8/d_head~10/metrics.parquet" in out


def test_the_sae_sweep_plans_every_point_and_its_summary(workdir):
    """sae.sweep on: 2 expansions x 2 k x 2 seeds = 8 points per model, each trained and analysed, one summary per
    model, the points' options in their directories."""
    override = "sae:\n  sweep:\n    enabled: true\n"
    counts, out = _default_plan_with(workdir, "sae_all", override)
    assert counts["sae_train_sweep"] == counts["sae_align_sweep"] == 16 and counts["sae_sweep_summary"] == 2, out
    assert "results/sae/sweep/smollm2/expansion_factor~16/k~32/seed~1/sites.parquet" in out
    assert "results/sae/sweep/minilm/summary.parquet" in out


def test_the_paper_overlays_plan_the_papers_models_and_ask_for_the_head(workdir):
    """config/paper.yaml adds GPT-2 small and Pythia-160M by Hub name; config/paper-dynamics.yaml their Fig 7b series,
    which stops, naming dynamics.head, until the head to track is chosen."""
    paper = ["--configfile", "config.yaml", "config/paper.yaml"]
    out = snakemake(workdir, "-n", *paper).stdout
    assert job_counts(out)["extract_weights"] == 8, out  # 4 models x 2 variants
    assert (
        "results/sad/pythia/trained/ioi/summary.parquet" in out and "results/sad/gpt2/random/ioi/summary.parquet" in out
    )
    result = snakemake(workdir, "-n", "dynamics", *paper, "config/paper-dynamics.yaml", check=False)
    assert result.returncode != 0 and "dynamics.head" in result.stdout
    (workdir / "head.yaml").write_text("dynamics:\n  head: {layer: 9, head: 6}\n")
    out = snakemake(workdir, "-n", "dynamics", *paper, "config/paper-dynamics.yaml", "head.yaml").stdout
    assert job_counts(out)["dynamics_checkpoint"] == 154, out


def test_bad_config_fails_before_any_job_and_names_the_key(workdir):
    (workdir / "bad.yaml").write_text("toy:\n  experiments:\n    single_pair:\n      sparsities: [1.5]\n")
    result = snakemake(workdir, "--configfile", "bad.yaml", check=False)
    assert result.returncode != 0
    assert "sparsities" in result.stdout
    assert not (workdir / "results").exists()


def test_unknown_config_key_is_rejected(workdir):
    (workdir / "bad.yaml").write_text("toy:\n  experiments:\n    single_pair:\n      lamdas: [1.0]\n")
    result = snakemake(workdir, "-n", "--configfile", "bad.yaml", check=False)
    assert result.returncode != 0
    assert "lamdas" in result.stdout


@pytest.mark.slow
def test_small_run_produces_tables_figures_and_report(small_run):
    workdir = small_run
    results = workdir / "results"
    metrics = io.read_table(results / "toy" / "single_pair" / "metrics.parquet", tables.TOY_METRICS)
    assert metrics.num_rows == 4  # 2 seeds x (head, control)
    assert io.read_provenance(results / "toy" / "single_pair" / "weights.parquet")["config"]["steps"] == 40
    for figure in ("geometry", "alignment", "dynamics"):
        for experiment in ("single_pair", "multi_pair", "orthogonalisation"):
            png = results / "figures" / "toy" / f"{figure}_{experiment}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    anisotropy = io.read_table(results / "toy" / "anisotropy" / "anisotropy.parquet", tables.TOY_ANISOTROPY)
    assert anisotropy.num_rows == 2 and (results / "figures" / "toy" / "anisotropy.png").exists()
    sweep = io.read_table(results / "toy" / "sweeps" / "sweep.parquet", tables.TOY_SWEEP)
    assert sweep.num_rows == 3 and sorted(sweep.column("d_head").to_pylist()) == [2, 10, 10]
    assert (results / "toy" / "sweeps" / "lam~0.5" / "sparsity~0.9").is_dir()  # one directory per point
    assert (results / "figures" / "toy" / "sweeps.png").exists()
    assert (results / "logs" / "toy_train" / "single_pair.log").stat().st_size > 0
    assert (results / "benchmarks" / "toy_train" / "single_pair.tsv").exists()
    for variant in ("trained", "random"):
        svd = io.read_table(results / "svd" / "minilm" / f"{variant}.parquet", tables.HEAD_SVD)
        assert svd.num_rows == 72 and max(svd.column("recon_error").to_pylist()) < 1e-5
        weights = io.read_table(results / "weights" / "minilm" / f"{variant}.parquet", tables.HEAD_WEIGHTS)
        assert weights.num_rows == 72
    assert (results / "figures" / "svd" / "spectra_minilm.png").stat().st_size > 10_000
    summary = io.read_table(results / "sad" / "minilm" / "trained" / "ioi" / "summary.parquet", tables.SAD_SUMMARY)
    assert summary.num_rows == 72
    record = io.read_provenance(results / "sad" / "minilm" / "trained" / "ioi" / "pairs.parquet")
    assert record["config"]["max_score_error"] < 1e-4 and record["config"]["prompts_kept"] == 8
    prompt_table = io.read_table(results / "sad" / "minilm" / "trained" / "ioi" / "prompts.parquet", tables.SAD_PROMPTS)
    assert prompt_table.num_rows == 8 and all(prompt_table.column("kept").to_pylist())
    assert (results / "figures" / "sad" / "ranks_minilm.png").exists()
    assert (results / "figures" / "sad" / "nrecon_minilm.png").exists()
    claims = io.to_frame(io.read_table(results / "report" / "claims.parquet", report.RESULTS_CLAIMS))
    assert claims["key"].tolist() == [
        "single_pair",
        "multi_pair",
        "anisotropy",
        "nrecon_minilm",
        "small_sigma_minilm",
        "null_minilm",
        "dynamics",
        "sae_alignment_minilm",
        "sae_attribution_minilm",
    ]
    sae_rows = claims["key"].str.startswith("sae_")
    assert set(claims.loc[~sae_rows, "verdict"]) <= {"pass", "differs"}
    # the small run's SAE (2048 tokens, 40 steps) reconstructs too little to be a proxy: both rows say so
    assert (claims.loc[sae_rows, "verdict"] == "inconclusive").all()
    assert claims.loc[sae_rows, "ours"].str.contains("does not reconstruct").all()
    markdown = (results / "report" / "claims.md").read_text()
    claims_section = markdown.split("## Claims", 1)[1].split("\n## ", 1)[0]
    assert claims_section.count("\n| ") == 1 + 9 and "do not edit" in markdown  # header + one row per claim
    # Dynamics: 4 checkpoints (steps 0, 1, 2, 4) x 8 heads through the model stages, one head tracked.
    dynamics_table = io.to_frame(io.read_table(results / "dynamics" / "sad.parquet", tables.DYNAMICS_SAD))
    assert sorted(set(dynamics_table["step"])) == [0, 1, 2, 4] and len(dynamics_table) == 4 * 8
    assert dynamics_table.groupby("step")["chosen"].sum().tolist() == [1, 1, 1, 1]
    assert dynamics_table["induction_score"].notna().all()
    assert (results / "figures" / "dynamics" / "sad_over_training.png").exists()
    _check_sae_tables(results)
    # A second invocation has nothing to do.
    assert "Nothing to be done" in snakemake(workdir, *SMALL_TARGETS, *SMALL_CONFIG).stdout
    snakemake(workdir, *SMALL_TARGETS, "--report", "results/report.html", *SMALL_CONFIG)
    html = (results / "report.html").read_text(errors="replace")
    assert "Toy model" in html and "Real models" in html and "SAD" in html and "SAE" in html
    for figure in ("alignment_minilm", "heads_minilm", "anisotropy"):
        assert (results / "figures" / "sae" / f"{figure}.png").exists(), figure


@pytest.mark.slow
def test_jobs_use_exactly_their_rules_threads(small_run):
    """Torch and BLAS threads inside each job equal the rule's `threads:` (cores are never oversubscribed); on the
    small run's 2 cores every compute rule runs one thread per job (`JOB_THREADS`)."""
    logs = small_run / "results" / "logs"
    rules = ("toy_train", "dynamics_series", "sad", "svd", "dynamics_train", "sae_train", "sae_align")
    for rule in rules:
        files = sorted((logs / rule).glob("*.log")) or [logs / f"{rule}.log"]
        assert files, rule
        for path in files:
            assert "threads: torch 1, OMP_NUM_THREADS=1" in path.read_text(), path


def test_compute_rules_take_two_threads_from_five_cores(workdir):
    """`JOB_THREADS`: 1 up to 4 cores (jobs side by side), 2 from 5 cores (shorter long jobs); Snakemake plans it."""
    for cores, threads in ((4, 1), (8, 2)):
        out = snakemake(workdir, "-n", "--forceall", "sad_all", cores=cores).stdout
        blocks = [block for block in out.split("\n\n") if "rule sad:" in block]
        # Snakemake prints a job's threads only when they are more than one.
        planned = {int(line.split(":")[1]) if line else 1 for block in blocks for line in _threads_line(block)}
        assert blocks and planned == {threads}, (cores, out)


def _threads_line(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip().startswith("threads:")] or [""]


def _check_sae_tables(results):
    """The SAE stage of the small run: one MiniLM site (layer 1), every head of both variants, exact attribution."""
    from svalign import tables as schemas

    quality = io.to_frame(io.read_table(results / "sae" / "minilm" / "quality.parquet", schemas.SAE_QUALITY))
    # 64 windows of 32 tokens: 56 train the SAE, 8 (sae.heldout_fraction 0.125) are held out
    assert quality["layer"].tolist() == [1] and quality["n_tokens"].tolist() == [1792]
    assert quality["n_heldout_tokens"].tolist() == [256] and 0 < quality["heldout_explained_variance"].iloc[0] < 1
    assert quality["n_latents"].tolist() == [768] and 0 < quality["explained_variance"].iloc[0] < 1
    heads = io.to_frame(io.read_table(results / "sae" / "minilm" / "heads.parquet", schemas.SAE_HEADS))
    assert sorted(set(heads["variant"])) == ["random", "trained"] and len(heads) == 2 * 12
    assert (heads.loc[heads["variant"] == "trained", "n_pairs"] > 0).all()
    pairs = io.read_table(results / "sae" / "minilm" / "attribution.parquet", schemas.SAE_ATTRIBUTION)
    assert pairs.num_rows == heads["n_pairs"].sum() > 0
    assert max(pairs.column("relative_error").to_pylist()) <= 1e-4
    sites = io.to_frame(io.read_table(results / "sae" / "minilm" / "sites.parquet", schemas.SAE_SITES))
    assert len(sites) == 2 and (sites["n_active_latents"] > 0).all()


def _tiny_gpt2(directory: Path, seed: int) -> Path:
    """A 2-layer GPT-2 with random weights (config naming float16, as the Hub's do) and a word-level tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from svalign.dynamics.config import DynamicsConfig
    from svalign.dynamics.task import build_tokenizer

    torch.manual_seed(seed)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=67, bos_token_id=2, eos_token_id=2)
    GPT2LMHeadModel(config).save_pretrained(str(directory))
    config_file = directory / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "dtype": "float16"}))
    build_tokenizer(DynamicsConfig(vocab_size=64, seq_len=64, max_period=16)).save_pretrained(str(directory))
    return directory


def _cache_at_main(cache: Path, name: str, model_dir: Path, commit: str) -> None:
    """``model_dir`` as the Hub cache's ``name`` at main (huggingface_hub's layout: refs/main → snapshots/COMMIT)."""
    repo = cache / f"models--{name}"
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_a_moved_branch_in_the_hf_cache_reruns_the_models_jobs(workdir, tmp_path, monkeypatch):
    """A Hub name runs offline from a filled cache (HF_HOME); when the cache's `main` moves to a new commit, the
    jobs that boot the model rerun (the resolved commit is a param of each, extract_weights here), nothing else."""
    cache = tmp_path / "hf-home" / "hub"
    _cache_at_main(cache, "gpt2", _tiny_gpt2(tmp_path / "v1", seed=0), "a" * 40)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (workdir / "gpt2.yaml").write_text("models:\n  gpt2:\n    source: gpt2\n")
    target = "results/weights/gpt2/trained.parquet"
    snakemake(workdir, target, *SMALL_CONFIG, "gpt2.yaml")
    assert io.read_provenance(workdir / target)["config"]["snapshot"] == "a" * 40  # the commit it was read from
    assert "Nothing to be done" in snakemake(workdir, "-n", target, *SMALL_CONFIG, "gpt2.yaml").stdout
    _cache_at_main(cache, "gpt2", _tiny_gpt2(tmp_path / "v2", seed=1), "b" * 40)  # `main` moved
    plan = snakemake(workdir, "-n", target, *SMALL_CONFIG, "gpt2.yaml").stdout
    assert job_counts(plan) == {"extract_weights": 1}, plan
    assert "Params have changed since last execution" in plan
