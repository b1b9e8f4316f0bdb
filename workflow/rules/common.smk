# Shared helpers, included first: config validation, wildcard constraints, the model table every real-model rule
# reads, the threads/priority/GPU settings, what more than one stage reads (config slices, the SAD and prompt
# params, the SAE sites and captions, the dynamics claim inputs), and the default target.
# A stage's own input, params and target functions and its constants live beside its rules, in
# `workflow/rules/<stage>_functions.smk` next to `<stage>.smk` (`snakemake --lint` keeps functions out of rules
# files); the Snakefile includes each directly before its rules. The weights stage has none of its own: it reads
# `model_inputs` and `model_params` below. Functions name upstream files through `rules.<name>.output`, resolved
# when the DAG is built, so no path is typed twice.
import dataclasses

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from svalign.captions import SAECaptions
from svalign.config import check_config, enabled_models, sae_sites
from svalign.dynamics.config import dynamics_models
from svalign.hub import cached_snapshot, is_hub_name
from svalign.report import Measured
from svalign.sad.config import SADConfig

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
    """A model's entry; for a Hub name also the commit its revision resolves to in the local HF cache (`snapshot`):
    a moved branch or a newly cached revision then reruns every job that boots the model. A name not cached yet
    has no snapshot here: the job downloads it (with network), and the next run plans its jobs again once.
    """
    entry = MODEL_ENTRIES[name]
    keep = ("source", "revision", "config_key")
    params = {"name": name, **{k: v for k, v in entry.items() if k in keep}}
    if is_hub_name(str(entry["source"])):
        params["snapshot"] = cached_snapshot(entry["source"], entry.get("revision"))
    return params


def model_inputs(wildcards):
    """SmolLM2 needs its converted directory, our training checkpoints their training run; other sources are
    resolved inside the job."""
    entry = MODEL_ENTRIES[wildcards.model]
    if entry["source"] == "smollm2":
        return {"model_dir": rules.convert_smollm2.output[0]}
    if entry.get("ours"):
        return {"checkpoints": DYNAMICS_MANIFEST}
    return {}


# ---- Read by more than one stage ---------------------------------------------------------------------------
# The toy sweeps' config (toy.smk, report.smk).
SWEEPS = config["toy"]["sweeps"]
# The SAE sites (sae.smk, explorer.smk, report.smk) and captions (toy.smk, sae.smk).
SAE_SITES = sae_sites(config)  # model -> layers, enabled models only
# The SAE captions' numbers, computed from the tables at report time (as MEASURED's claims are).
SAE_CAPTIONS = SAECaptions()


# The SAD options (sad.smk, sae.smk, dynamics.smk).
def sad_params(wildcards):
    """The SAD options (`SADConfig` fields) only: prompt-set keys live in `sad_prompt_params`."""
    return {name: config["sad"][name] for name in SAD_OPTIONS}


# What a prompt set needs (sad.smk, sae.smk, dynamics.smk, explorer.smk).
def prompt_params(prompt_set):
    """What a prompt set needs: the IOI set its size and seed; the plain set nothing; the repeated set is an
    input file. Editing `sad.n_ioi_prompts` therefore reruns the IOI jobs only.
    """
    if prompt_set == "ioi":
        return {name: config["sad"][name] for name in ("n_ioi_prompts", "prompt_seed")}
    return {}


# The dynamics claim's pairs (dynamics.smk, report.smk).
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


# The default target: every stage's `<stage>_targets()` (defined in its functions file; rule all calls this after
# every include).
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
