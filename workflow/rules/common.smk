# Shared helpers: config validation, wildcard constraints, the model table every real-model rule reads, every
# stage's input and params functions (one section per stage: `snakemake --lint` keeps functions out of rules
# files), and the default target. Functions name upstream files through `rules.<name>.output`, resolved when
# the DAG is built, so no path is typed twice.
import dataclasses

import pandas as pd
from snakemake.utils import Paramspace, validate
from svalign.config import check_config, enabled_models
from svalign.dynamics.config import dynamics_models
from svalign.report import Measured
from svalign.sad.config import SADConfig
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
MODEL_ENTRIES = {**{m: config["models"][m] for m in MODELS}, **DYNAMICS_MODELS}
VARIANTS = ["trained", "random"] if config["random_init"]["enabled"] else ["trained"]
# Rules that compute with torch ask the scheduler for a GPU only when the config demands CUDA; with
# device: auto a cluster profile can add the request per rule (see profiles/).
GPU_JOBS = 1 if config["device"] == "cuda" else 0
# Figure rules pass this to their captions, which compute our numbers from the Parquet at report time.
MEASURED = Measured()


def model_params(wildcards):
    """The model's config entry plus its name (only this model's slice: editing another reruns nothing)."""
    entry = MODEL_ENTRIES[wildcards.model]
    keep = ("source", "revision", "config_key")
    return {"name": wildcards.model, **{k: v for k, v in entry.items() if k in keep}}


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
    figures = [
        rules.toy_figure_geometry,
        rules.toy_figure_alignment,
        rules.toy_figure_dynamics,
    ]
    targets = expand(rules.toy_train.output.metrics, experiment=TOY_EXPERIMENTS)
    for rule_ in figures:
        targets += expand(rule_.output.png, experiment=TOY_EXPERIMENTS)
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


def sad_prompt_params(wildcards):
    """What the prompt set of this job needs: the IOI set its size and seed; the plain set nothing; the repeated
    set is an input file. Editing `sad.n_ioi_prompts` therefore reruns the IOI jobs only.
    """
    if wildcards.prompt_set == "ioi":
        return {name: config["sad"][name] for name in ("n_ioi_prompts", "prompt_seed")}
    return {}


def sad_figure_inputs(wildcards):
    """Summary tables of every variant on the IOI prompt set (figures compare real, null, random-init)."""
    return {
        variant: expand(
            rules.sad.output.summary,
            model=wildcards.model,
            variant=variant,
            prompt_set="ioi",
        )[0]
        for variant in VARIANTS
    }


def sad_targets():
    return expand(
        rules.sad.output.summary,
        model=MODELS,
        variant=VARIANTS,
        prompt_set=config["sad"]["prompt_sets"],
    ) + expand(rules.sad_figures.output.heatmap, model=MODELS)


# ---- Dynamics stage (dynamics.smk) -----------------------------------------------------------------------


def checkpoint_dir_of(wildcards, output):
    """The checkpoint directory of a dynamics_train job (derived from its output, as `snakemake --lint` asks)."""
    return checkpoint_dir_next_to(output.manifest)


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


def dynamics_targets():
    if not DYNAMICS["enabled"]:
        return []
    return [rules.dynamics_figure.output.png]


# ---- Results table (report.smk) --------------------------------------------------------------------------


def results_table_inputs(wildcards):
    """The tables the claims rest on, named as `svalign.report.claims_from_inputs` expects, for what the config
    runs (paths from the producing rules, never retyped)."""
    inputs = {}
    for name in ("single_pair", "multi_pair"):
        if name in config["toy"]["experiments"]:
            inputs[name] = expand(rules.toy_train.output.metrics, experiment=name)[0]
    if config["toy"]["anisotropy"]["enabled"]:
        inputs["anisotropy"] = rules.toy_anisotropy.output[0]
    for model in MODELS:
        inputs[f"sad_{model}"] = expand(
            rules.sad.output.summary, model=model, variant="trained", prompt_set="ioi"
        )[0]
    if DYNAMICS["enabled"]:
        inputs["dynamics"] = rules.dynamics_sad.output[0]
    return inputs


def all_targets():
    return (
        toy_targets()
        + svd_targets()
        + sad_targets()
        + dynamics_targets()
        + [rules.results_table.output.table, rules.results_table.output.markdown]
    )
