# SVD stage's functions (rules in svd.smk).


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
