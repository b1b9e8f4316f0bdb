# SAE stage's functions and config (rules in sae.smk); `SAE_SITES` and `SAE_CAPTIONS`, which other stages read
# too, are in common.smk.
import pandas as pd
from snakemake.utils import Paramspace

from svalign.sae.config import TRAINING_KEYS as SAE_TRAINING_KEYS
from svalign.sae.config import sweep_points

SAE = config["sae"]
# The sweep's points (sae.sweep): expansion_factor x k x seed, one directory each (expansion_factor~8/k~16/seed~0).
SAE_SWEEP_POINTS = sweep_points(SAE["sweep"])
SAE_SWEEP = Paramspace(
    pd.DataFrame(SAE_SWEEP_POINTS), filename_params=[], param_sep="~"
)


def sae_layers(wildcards):
    return SAE_SITES[wildcards.model]


def sae_training_params():
    """The `sae` keys the training job reads (editing the analysis keys reruns only sae_align)."""
    return {key: SAE[key] for key in SAE_TRAINING_KEYS}


def sae_sweep_training_params(wildcards):
    """The training keys with the point's expansion_factor, k and seed."""
    point = SAE_SWEEP.instance(wildcards)
    return {
        **sae_training_params(),
        **{key: int(value) for key, value in point.items()},
    }


def sae_sweep_summary_inputs(wildcards):
    """Every sweep point's heads, sites and attribution tables, as <table>_<point index>."""
    inputs = {}
    for index, pattern in enumerate(SAE_SWEEP.instance_patterns):
        for table in ("heads", "sites", "attribution"):
            inputs[f"{table}_{index}"] = (
                f"results/sae/sweep/{wildcards.model}/{pattern}/{table}.parquet"
            )
    return inputs


def sae_analysis_params():
    skip = {"enabled", "sites", "sweep", *SAE_TRAINING_KEYS}
    return {key: value for key, value in SAE.items() if key not in skip}


def sae_published_inputs(wildcards):
    """The directories of the model's published SAEs (sae.pretrained): editing one retrains nothing but reloads."""
    return [e["path"] for e in SAE["pretrained"] if e["model"] == wildcards.model]


def sae_sampling_params():
    """sae.sampled_text without `share` (which only sae_train reads), so editing the share resamples nothing."""
    return {k: v for k, v in SAE["sampled_text"].items() if k != "share"}


def sae_corpus_inputs(wildcards):
    """The sampled text joins the docstrings unless sae.sampled_text.sequences is 0."""
    if SAE["sampled_text"]["sequences"]:
        return {"sampled": rules.sae_sampled_text.output[0]}
    return {}


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
    sweep = SAE["sweep"]["enabled"]
    return (
        (
            expand("results/sae/sweep/{model}/summary.parquet", model=models)
            if sweep
            else []
        )
        + expand(rules.sae_align.output.sites, model=models)
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
