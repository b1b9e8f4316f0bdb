# svalign: do the singular vectors of attention heads align with features?
# This file is a table of contents: configuration, validation, report, and one rules file per stage, in the
# order data flows (toy; weights -> svd -> sad; dynamics; report). A stage's input/params/target functions sit
# beside its rules in workflow/rules/<stage>_functions.smk, included directly before <stage>.smk (rules read
# them, and its Paramspaces, when they are defined); what several stages share is in common.smk.


from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/toy_functions.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/weights.smk"  # no functions of its own: model_inputs, model_params (common.smk)
include: "workflow/rules/svd_functions.smk"
include: "workflow/rules/svd.smk"
include: "workflow/rules/sad_functions.smk"
include: "workflow/rules/sad.smk"
include: "workflow/rules/sae_functions.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/dynamics_functions.smk"
include: "workflow/rules/dynamics.smk"
include: "workflow/rules/explorer_functions.smk"
include: "workflow/rules/explorer.smk"
include: "workflow/rules/report_functions.smk"
include: "workflow/rules/report.smk"


# Light jobs (figures, tables, targets) run inside the main Snakemake process on a cluster, not as submissions.
localrules:
    all,
    toy,
    toy_figures,
    toy_figure_anisotropy,
    toy_sweep,
    toy_figure_sweeps,
    svd_figure_spectra,
    svd_all,
    sad_figures,
    sad_all,
    sae_corpus,
    sae_sweep_summary,
    sae_figure_anisotropy,
    sae_figures,
    sae_all,
    dynamics_prompts,
    dynamics_sad,
    dynamics_figure,
    dynamics,
    explorer_spectra,
    explorer_page,
    explorer_all,
    results_table,


rule all:
    default_target: True
    input:
        all_targets(),
