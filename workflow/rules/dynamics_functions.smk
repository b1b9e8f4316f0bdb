# Dynamics stage's functions (rules in dynamics.smk); the series' config, manifest and checkpoint models, which
# the model table reads, and `dynamics_claim_inputs`, which the results table reads too, are in common.smk.
from svalign.dynamics.config import series_in_one_job


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


def dynamics_targets():
    if not DYNAMICS["enabled"]:
        return []
    return [rules.dynamics_figure.output.png]
