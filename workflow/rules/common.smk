# Shared helpers: config validation, wildcard constraints, the model table every real-model rule reads, every
# stage's input and params functions (one section per stage: `snakemake --lint` keeps functions out of rules
# files), and the default target. Functions name upstream files through `rules.<name>.output`, resolved when
# the DAG is built, so no path is typed twice.
import dataclasses

import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import Paramspace, validate
from svalign.config import check_config, enabled_models, sae_sites
from svalign.dynamics.config import dynamics_models, series_in_one_job
from svalign.report import Measured
from svalign.sad.config import SADConfig
from svalign.sae.config import TRAINING_KEYS as SAE_TRAINING_KEYS
from svalign.sae.summary import SAECaptions
from svalign.toy.config import points_of_shape, sweep_groups, sweep_points

validate(config, schema="../schemas/config.schema.yaml")
check_config(config)


wildcard_constraints:
    experiment="[a-z][a-z0-9_]*",
    model="[a-z][a-z0-9_]*",
    variant="trained|random",
    prompt_set="ioi|plain|repeated",


ENV = "../../envs/environment.yaml"
LOGS = "results/logs"
BENCHMARKS = "results/benchmarks"
TOY_EXPERIMENTS = sorted(config["toy"]["experiments"])
MODELS = enabled_models(config)
DYNAMICS = config["dynamics"]
DYNAMICS_MANIFEST = "results/dynamics/train/checkpoints.json"
# The sad config keys that are SAD options (the rest choose prompts): a SAD job's params carry only these.
SAD_OPTIONS = [field.name for field in dataclasses.fields(SADConfig)]


def checkpoint_dir_next_to(manifest):
    """Where dynamics_train writes its checkpoints: next to its manifest."""
    return os.path.join(os.path.dirname(manifest), "checkpoints")


# Each training checkpoint is a model of its own for the extract_weights -> svd -> sad rules:
# name -> {source, revision, step, config_key, ours}.
DYNAMICS_MODELS = (
    dynamics_models(DYNAMICS, checkpoint_dir_next_to(DYNAMICS_MANIFEST))
    if DYNAMICS["enabled"]
    else {}
)
# Model names: configured models (rules extract_weights, svd, sad) and the dynamics series' checkpoints (rule
# dynamics_checkpoint), told apart by the prefix dynamics_models() gives every checkpoint.
CHECKPOINT_MODEL = "dyn_[a-z0-9_]+"
CONFIGURED_MODEL = "(?!dyn_)[a-z][a-z0-9_]*"
MODEL_ENTRIES = {**{m: config["models"][m] for m in MODELS}, **DYNAMICS_MODELS}
VARIANTS = ["trained", "random"] if config["random_init"]["enabled"] else ["trained"]
# Threads of the compute rules (torch and BLAS use exactly this many; svalign.runtime.configure_torch). With up to
# 4 cores one thread per job, jobs side by side, does the most work per CPU second: on 2 cores (measured) a 2-thread
# dynamics_train took 59 s against 50 s with one thread, toy_anisotropy 84 CPU-s against 62, a SmolLM2 SAD job 76
# against 61 — small matmuls do not pay for a second thread. From 5 cores on, the DAG is narrower than the machine
# at the end of the run, and 2 threads shorten its long jobs. `--set-threads rule=N` overrides either.


def job_threads():
    try:
        cores = workflow.cores
    except (
        WorkflowError
    ):  # a cluster executor has no local core count: 2, as profiles/slurm sets them
        return 2
    return 1 if cores <= 4 else 2


JOB_THREADS = job_threads()
# Scheduling order (`priority:`; Snakemake starts the highest-priority ready jobs first and does not pass a rule's
# priority on to its inputs, so every rule of a long chain carries it). The long jobs and the chains that lead to
# them (SmolLM2 conversion -> weights -> SVD -> SAD, toy and dynamics training, the SAE) start first; the many
# short jobs (sweep points, figures, tables) then fill the cores to the end. Without it, on 2 cores, a 90 s SmolLM2
# SAD job started last and ran alone for its whole length.
LONG_CHAIN = 1
# Rules that compute with torch ask the scheduler for a GPU only when the config demands CUDA; with
# device: auto a cluster profile can add the request per rule (see profiles/).
GPU_JOBS = 1 if config["device"] == "cuda" else 0
# Figure rules pass this to their captions, which compute our numbers from the Parquet at report time.
# They compute with the results table's bootstrap options (config `report`).
MEASURED = Measured(config["report"])


def model_params(wildcards):
    """The model's config entry plus its name (only this model's slice: editing another reruns nothing)."""
    return named_model_params(wildcards.model)


def named_model_params(name):
    entry = MODEL_ENTRIES[name]
    keep = ("source", "revision", "config_key")
    return {"name": name, **{k: v for k, v in entry.items() if k in keep}}


def model_inputs(wildcards):
    """SmolLM2 needs its converted directory, our training checkpoints their training run; other sources are
    resolved inside the job."""
    entry = MODEL_ENTRIES[wildcards.model]
    if entry["source"] == "smollm2":
        return {"model_dir": rules.convert_smollm2.output[0]}
    if entry.get("ours"):
        return {"checkpoints": DYNAMICS_MANIFEST}
    return {}


# ---- Toy stage (toy.smk) ---------------------------------------------------------------------------------
SWEEPS = config["toy"]["sweeps"]
# One directory level per swept parameter (lam~0.25/sparsity~0.9/...): each point is its own job and file.
SWEEP_POINTS = sweep_points(SWEEPS["base"], SWEEPS["grid"])
SWEEP_SPACE = Paramspace(pd.DataFrame(SWEEP_POINTS), param_sep="~")
# With batch_shared_shapes: one job per (N, m, H), training its points' (lambda, S) x seeds as one batch.
SWEEP_SHAPES = Paramspace(pd.DataFrame(sweep_groups(SWEEP_POINTS)), param_sep="~")


def toy_experiment_params(wildcards):
    """The config slice one toy experiment uses (so editing another experiment reruns nothing here)."""
    return config["toy"]["experiments"][wildcards.experiment]


def sweep_point_params(wildcards):
    """The one sweep point of this path, as a list of points (the script trains lists of same-shape points)."""
    return [SWEEP_SPACE.instance(wildcards)]


def sweep_shape_points(wildcards):
    """The sweep points of one shape (N, m, H), from its path."""
    return points_of_shape(SWEEP_POINTS, SWEEP_SHAPES.instance(wildcards))


def sweep_files(wildcards):
    """Every sweep table: one per point, or one per shape when shapes are batched."""
    rule_, space = (
        (rules.toy_sweep_group, SWEEP_SHAPES)
        if SWEEPS["batch_shared_shapes"]
        else (rules.toy_sweep_point, SWEEP_SPACE)
    )
    path = rule_.output[0]
    return [
        path.replace(space.wildcard_pattern, instance)
        for instance in space.instance_patterns
    ]


def toy_targets():
    targets = expand(rules.toy_train.output.metrics, experiment=TOY_EXPERIMENTS)
    for name in ("geometry", "alignment", "dynamics"):
        targets += expand(
            getattr(rules.toy_figures.output, name), experiment=TOY_EXPERIMENTS
        )
    if config["toy"]["anisotropy"]["enabled"]:
        targets.append(rules.toy_figure_anisotropy.output.png)
    if SWEEPS["enabled"]:
        targets.append(rules.toy_figure_sweeps.output.png)
    return targets


# ---- SVD stage (svd.smk) ---------------------------------------------------------------------------------


def spectra_inputs(wildcards):
    """The SVD table of every variant of one model (the figure sets trained beside random-init)."""
    return {
        variant: expand(rules.svd.output.svd, model=wildcards.model, variant=variant)[0]
        for variant in VARIANTS
    }


def svd_targets():
    return expand(rules.svd.output.svd, model=MODELS, variant=VARIANTS) + expand(
        rules.svd_figure_spectra.output.png, model=MODELS
    )


# ---- SAD stage (sad.smk) ---------------------------------------------------------------------------------


def sad_inputs(wildcards):
    """The model's own inputs (converted directory, training run), plus the repeated-segment prompts that the
    dynamics stage writes for its series (prompt set `repeated` exists for our series only).
    """
    inputs = model_inputs(wildcards)
    if wildcards.prompt_set == "repeated":
        if not MODEL_ENTRIES[wildcards.model].get("ours"):
            raise ValueError(
                f"prompt set repeated is made for the dynamics series only, not for model {wildcards.model!r}"
            )
        inputs["prompts"] = rules.dynamics_prompts.output[0]
    return inputs


def sad_params(wildcards):
    """The SAD options (`SADConfig` fields) only: prompt-set keys live in `sad_prompt_params`."""
    return {name: config["sad"][name] for name in SAD_OPTIONS}


def prompt_params(prompt_set):
    """What a prompt set needs: the IOI set its size and seed; the plain set nothing; the repeated set is an
    input file. Editing `sad.n_ioi_prompts` therefore reruns the IOI jobs only.
    """
    if prompt_set == "ioi":
        return {name: config["sad"][name] for name in ("n_ioi_prompts", "prompt_seed")}
    return {}


def sad_prompt_params(wildcards):
    return prompt_params(wildcards.prompt_set)


def sad_figure_inputs(wildcards):
    """Summary tables of every variant on the IOI prompt set (figures compare real, null, random-init), and the
    trained variant's pairs (`pairs`: the captions' claims resample them for their intervals).
    """
    inputs = {
        variant: expand(
            rules.sad.output.summary,
            model=wildcards.model,
            variant=variant,
            prompt_set="ioi",
        )[0]
        for variant in VARIANTS
    }
    inputs["pairs"] = expand(
        rules.sad.output.pairs,
        model=wildcards.model,
        variant="trained",
        prompt_set="ioi",
    )[0]
    return inputs


def sad_targets():
    return expand(
        rules.sad.output.summary,
        model=MODELS,
        variant=VARIANTS,
        prompt_set=config["sad"]["prompt_sets"],
    ) + expand(rules.sad_figures.output.heatmap, model=MODELS)


# ---- SAE stage (sae.smk) ---------------------------------------------------------------------------------

SAE = config["sae"]
SAE_SITES = sae_sites(config)  # model -> layers, enabled models only
# The SAE captions' numbers, computed from the tables at report time (as MEASURED's claims are).
SAE_CAPTIONS = SAECaptions()


def sae_layers(wildcards):
    return SAE_SITES[wildcards.model]


def sae_training_params():
    """The `sae` keys the training job reads (editing the analysis keys reruns only sae_align)."""
    return {key: SAE[key] for key in SAE_TRAINING_KEYS}


def sae_analysis_params():
    skip = {"enabled", "sites", *SAE_TRAINING_KEYS}
    return {key: value for key, value in SAE.items() if key not in skip}


def sae_align_inputs(wildcards):
    """The model's own inputs and the SVD (tables and bases) of every variant, as svd_<variant>, bases_<variant>."""
    inputs = model_inputs(wildcards)
    for variant in VARIANTS:
        inputs[f"svd_{variant}"] = expand(
            rules.svd.output.svd, model=wildcards.model, variant=variant
        )[0]
        inputs[f"bases_{variant}"] = expand(
            rules.svd.output.bases, model=wildcards.model, variant=variant
        )[0]
    return inputs


def sae_targets():
    models = sorted(SAE_SITES)
    return (
        expand(rules.sae_align.output.sites, model=models)
        + expand(rules.sae_figures.output.alignment, model=models)
        + expand(rules.sae_figures.output.heads, model=models)
        + (
            [rules.sae_figure_anisotropy.output.png]
            if models and config["toy"]["anisotropy"]["enabled"]
            else []
        )
    )


def anisotropy_figure_inputs(wildcards):
    """The anisotropy sweep (`anisotropy`) and, per SAE model, its quality and sites tables (`quality_<model>`,
    `sites_<model>`): the figure marks the real dictionaries' interference on the toy's axis. `rules.sae_*` resolve
    here, when the DAG is built."""
    inputs = {"anisotropy": rules.toy_anisotropy.output[0]}
    for model in sorted(SAE_SITES):
        inputs[f"quality_{model}"] = expand(
            rules.sae_train.output.quality, model=model
        )[0]
        inputs[f"sites_{model}"] = expand(rules.sae_align.output.sites, model=model)[0]
    return inputs


# ---- Dynamics stage (dynamics.smk) -----------------------------------------------------------------------


def checkpoint_dir_of(wildcards, output):
    """The checkpoint directory of a dynamics_train job (derived from its output, as `snakemake --lint` asks)."""
    return checkpoint_dir_next_to(output.manifest)


def checkpoint_sad_path(pattern):
    """A SAD output pattern with the series' prompt set filled in (a checkpoint job runs that one set)."""
    return expand(pattern, prompt_set=DYNAMICS["prompt_set"], allow_missing=True)[0]


# All checkpoints in one job (rule dynamics_series) or one job each (rule dynamics_checkpoint).
DYNAMICS_SERIES_JOB = series_in_one_job(DYNAMICS)


def dynamics_chain_inputs(wildcards):
    """Our series: its training run, and the repeated prompts when SAD reads them (SmolLM2-style model inputs never
    apply: checkpoints are ours or external)."""
    inputs = {"checkpoints": DYNAMICS_MANIFEST} if not DYNAMICS["checkpoints"] else {}
    if DYNAMICS["prompt_set"] == "repeated":
        inputs["prompts"] = rules.dynamics_prompts.output[0]
    return inputs


def series_paths(pattern):
    """One output pattern of the checkpoint chain filled in for every checkpoint, in training order."""
    return expand(
        pattern,
        model=list(DYNAMICS_MODELS),
        variant="trained",
        prompt_set=DYNAMICS["prompt_set"],
    )


def series_model_params():
    """Each checkpoint's model params (as `model_params` gives one job), in the order of `series_paths`."""
    return [named_model_params(name) for name in DYNAMICS_MODELS]


def dynamics_sad_inputs(wildcards):
    """SAD summaries of every checkpoint, plus our series' head scores."""
    inputs = {
        f"sad_{name}": expand(
            rules.sad.output.summary,
            model=name,
            variant="trained",
            prompt_set=DYNAMICS["prompt_set"],
        )[0]
        for name in DYNAMICS_MODELS
    }
    if not DYNAMICS["checkpoints"]:
        inputs["scores"] = rules.dynamics_scores.output[0]
    return inputs


def dynamics_claim_inputs(wildcards):
    """Pairs of the first and the last checkpoint (`first`, `last`): the dynamics claim resamples their prompts."""
    by_step = sorted(DYNAMICS_MODELS, key=lambda name: DYNAMICS_MODELS[name]["step"])
    return {
        end: expand(
            rules.sad.output.pairs,
            model=name,
            variant="trained",
            prompt_set=DYNAMICS["prompt_set"],
        )[0]
        for end, name in (("first", by_step[0]), ("last", by_step[-1]))
    }


def dynamics_targets():
    if not DYNAMICS["enabled"]:
        return []
    return [rules.dynamics_figure.output.png]


# ---- Head explorer (explorer.smk) ------------------------------------------------------------------------
EXPLORER = config["explorer"]
# The keys each explorer rule reads (so editing one reruns only the jobs it feeds).
EXPLORER_SPECTRA_KEYS = ("degeneracy_gap", "rank_rtol", "top_directions")
EXPLORER_READOUT_KEYS = (
    "readout_directions",
    "n_tokens",
    "context_tokens",
    "n_examples",
    "examples_per_key_token",
    "embedding_position",
)
EXPLORER_PAGE_KEYS = ("example_terms", "context_tokens")


def explorer_options(keys):
    return {key: EXPLORER[key] for key in keys}


def explorer_readouts_inputs(wildcards):
    """The trained variant's weights, SVD and SAD pairs of every explorer prompt set (`pairs_<set>`), plus the
    model's own inputs (SmolLM2's converted directory)."""
    trained = {"model": wildcards.model, "variant": "trained"}
    inputs = {
        **model_inputs(wildcards),
        "weights": expand(rules.extract_weights.output[0], **trained)[0],
        "svd": expand(rules.svd.output.svd, **trained)[0],
        "bases": expand(rules.svd.output.bases, **trained)[0],
    }
    for prompt_set in EXPLORER["prompt_sets"]:
        inputs[f"pairs_{prompt_set}"] = expand(
            rules.sad.output.pairs, prompt_set=prompt_set, **trained
        )[0]
    return inputs


def explorer_prompt_params(wildcards):
    """What each explorer prompt set needs (`prompt_params`), by name, in the configured order."""
    return {name: prompt_params(name) for name in EXPLORER["prompt_sets"]}


def explorer_page_inputs(wildcards):
    """The trained variant's spectra, read-outs, examples and tokens, its SAD summary on the first explorer
    prompt set (the grid's colours), and the SAE stage's alignment when the model has SAE sites.
    """
    trained = {"model": wildcards.model, "variant": "trained"}
    readouts = rules.explorer_readouts.output
    sae = {}
    if (
        wildcards.model in SAE_SITES
    ):  # the SAE hook: each direction's best-aligned latent
        sae["sae_alignment"] = expand(
            rules.sae_align.output.alignment, model=wildcards.model
        )[0]
    return {
        **sae,
        "spectra": expand(rules.explorer_spectra.output[0], **trained)[0],
        "summary": expand(
            rules.sad.output.summary, prompt_set=EXPLORER["prompt_sets"][0], **trained
        )[0],
        **{
            name: expand(getattr(readouts, name), model=wildcards.model)[0]
            for name in ("readouts", "examples", "tokens")
        },
    }


def explorer_targets():
    if not EXPLORER["enabled"]:
        return []
    return expand(rules.explorer_page.output.html, model=MODELS) + expand(
        rules.explorer_spectra.output[0], model=MODELS, variant=VARIANTS
    )


# ---- Results table (report.smk) --------------------------------------------------------------------------


def results_table_inputs(wildcards):
    """The tables the claims and the generated result tables rest on, named as `svalign.report.claims_from_inputs`
    and `svalign.claims.details.details_markdown` expect, for what the config runs (paths from the producing
    rules, never retyped): toy metrics by experiment name, `anisotropy`, `sweep`; per model `sad_<model>` and
    `pairs_<model>` (trained, IOI: the claims) and `summary_<model>_<variant>_<prompt_set>` (every SAD run);
    `dynamics` with the first and last checkpoint's pairs (`dynamics_first`, `dynamics_last`); per model with an
    SAE site `sae_heads_<model>`, `sae_sites_<model>`, `sae_attribution_<model>`.
    """
    inputs = {
        name: expand(rules.toy_train.output.metrics, experiment=name)[0]
        for name in TOY_EXPERIMENTS
    }
    if config["toy"]["anisotropy"]["enabled"]:
        inputs["anisotropy"] = rules.toy_anisotropy.output[0]
    if SWEEPS["enabled"]:
        inputs["sweep"] = rules.toy_sweep.output[0]
    for model in MODELS:
        ioi = {"model": model, "variant": "trained", "prompt_set": "ioi"}
        inputs[f"sad_{model}"] = expand(rules.sad.output.summary, **ioi)[0]
        inputs[f"pairs_{model}"] = expand(rules.sad.output.pairs, **ioi)[0]
        for variant in VARIANTS:
            for prompt_set in config["sad"]["prompt_sets"]:
                inputs[f"summary_{model}_{variant}_{prompt_set}"] = expand(
                    rules.sad.output.summary,
                    model=model,
                    variant=variant,
                    prompt_set=prompt_set,
                )[0]
    if DYNAMICS["enabled"]:
        inputs["dynamics"] = rules.dynamics_sad.output[0]
        claim_inputs = dynamics_claim_inputs(wildcards)
        inputs.update({f"dynamics_{end}": path for end, path in claim_inputs.items()})
    for model in sorted(SAE_SITES):
        for table in ("heads", "sites", "attribution"):
            inputs[f"sae_{table}_{model}"] = expand(
                getattr(rules.sae_align.output, table), model=model
            )[0]
    return inputs


def all_targets():
    return (
        toy_targets()
        + svd_targets()
        + sad_targets()
        + dynamics_targets()
        + explorer_targets()
        + sae_targets()
        + [rules.results_table.output.table, rules.results_table.output.markdown]
    )
