# Results stage's functions (rules in report.smk).


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
