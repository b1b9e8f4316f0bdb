# Shared helpers: config validation, input functions, wildcard constraints and rule defaults.
import pandas as pd
from snakemake.utils import Paramspace, validate
from svalign.config import check_config, enabled_models
from svalign.dynamics_config import dynamics_models
from svalign.report import Measured, claim_inputs
from svalign.toy_config import points_of_shape, sweep_groups, sweep_points

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


def checkpoint_dir_next_to(manifest):
    """Where dynamics_train writes its checkpoints: next to its manifest."""
    return os.path.join(os.path.dirname(manifest), "checkpoints")


DYNAMICS_CHECKPOINT_DIR = checkpoint_dir_next_to(DYNAMICS_MANIFEST)
# Each training checkpoint is a model of its own for the extract_weights -> svd -> sad rules:
# name -> {source, revision, step, config_key, ours}.
DYNAMICS_MODELS = (
    dynamics_models(DYNAMICS, DYNAMICS_CHECKPOINT_DIR) if DYNAMICS["enabled"] else {}
)
MODEL_ENTRIES = {**{m: config["models"][m] for m in MODELS}, **DYNAMICS_MODELS}
VARIANTS = ["trained", "random"] if config["random_init"]["enabled"] else ["trained"]
# Rules that compute with torch ask the scheduler for a GPU only when the config demands CUDA; with
# device: auto a cluster profile can add the request per rule (see profiles/).
GPU_JOBS = 1 if config["device"] == "cuda" else 0
# Figure rules pass this to their captions, which compute our numbers from the Parquet at report time.
MEASURED = Measured()
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
    if SWEEPS["batch_shared_shapes"]:
        return expand(
            "results/toy/sweeps/groups/{shape}/metrics.parquet",
            shape=SWEEP_SHAPES.instance_patterns,
        )
    return expand(
        "results/toy/sweeps/{point}/metrics.parquet",
        point=SWEEP_SPACE.instance_patterns,
    )


def toy_targets():
    figures = ["geometry", "alignment", "dynamics"]
    targets = expand(
        "results/toy/{experiment}/metrics.parquet", experiment=TOY_EXPERIMENTS
    ) + expand(
        "results/figures/toy/{figure}_{experiment}.png",
        figure=figures,
        experiment=TOY_EXPERIMENTS,
    )
    if config["toy"]["anisotropy"]["enabled"]:
        targets.append("results/figures/toy/anisotropy.png")
    if SWEEPS["enabled"]:
        targets.append("results/figures/toy/sweeps.png")
    return targets


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
        return {"model_dir": "results/models/smollm2-hf"}
    if entry.get("ours"):
        return {"checkpoints": DYNAMICS_MANIFEST}
    return {}


def checkpoint_dir_of(wildcards, output):
    """The checkpoint directory of a dynamics_train job (derived from its output, as `snakemake --lint` asks)."""
    return checkpoint_dir_next_to(output.manifest)


def sad_prompt_params(wildcards):
    """What the repeated-segment prompt set needs (only for checkpoints of our series: other models' SAD jobs
    do not rerun when the dynamics config changes)."""
    if MODEL_ENTRIES[wildcards.model].get("ours"):
        return {"train": DYNAMICS["train"], "n_prompts": DYNAMICS["n_prompts"]}
    return {}


def dynamics_sad_inputs(wildcards):
    """SAD summaries of every checkpoint, plus our series' head scores and training log."""
    inputs = {
        f"sad_{name}": f"results/sad/{name}/trained/{DYNAMICS['prompt_set']}/summary.parquet"
        for name in DYNAMICS_MODELS
    }
    if not DYNAMICS["checkpoints"]:
        inputs["scores"] = "results/dynamics/train/head_scores.parquet"
    return inputs


def dynamics_targets():
    if not DYNAMICS["enabled"]:
        return []
    return ["results/figures/dynamics/sad_over_training.png"]


def spectra_inputs(wildcards):
    return {
        variant: f"results/svd/{wildcards.model}/{variant}.parquet"
        for variant in VARIANTS
    }


def svd_targets():
    return expand(
        "results/svd/{model}/{variant}.parquet", model=MODELS, variant=VARIANTS
    ) + expand("results/figures/svd/spectra_{model}.png", model=MODELS)


def sad_figure_inputs(wildcards):
    """Summary tables of every variant on the IOI prompt set (figures compare real, null, random-init)."""
    return {
        variant: f"results/sad/{wildcards.model}/{variant}/ioi/summary.parquet"
        for variant in VARIANTS
    }


def sad_targets():
    return expand(
        "results/sad/{model}/{variant}/{prompt_set}/summary.parquet",
        model=MODELS,
        variant=VARIANTS,
        prompt_set=config["sad"]["prompt_sets"],
    ) + expand(
        "results/figures/sad/{figure}_{model}.png",
        figure=["heads", "ranks", "nrecon"],
        model=MODELS,
    )


def all_targets():
    return (
        toy_targets()
        + svd_targets()
        + sad_targets()
        + dynamics_targets()
        + ["results/report/claims.parquet", "results/report/claims.md"]
    )
