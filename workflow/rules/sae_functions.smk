# SAE stage's functions and config (rules in sae.smk); `SAE_SITES` and `SAE_CAPTIONS`, which other stages read
# too, are in common.smk.
from svalign.sae.config import TRAINING_KEYS as SAE_TRAINING_KEYS

SAE = config["sae"]


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
