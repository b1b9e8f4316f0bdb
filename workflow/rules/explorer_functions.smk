# Head explorer's functions and config keys (rules in explorer.smk).


EXPLORER = config["explorer"]
# The keys each explorer rule reads (so editing one reruns only the jobs it feeds).
EXPLORER_BLOCK_KEYS = ("degeneracy_gap", "rank_rtol", "top_directions")
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
