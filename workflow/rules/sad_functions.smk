# SAD stage's functions (rules in sad.smk); `sad_params` and `prompt_params`, which other stages read too, are
# in common.smk.


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
