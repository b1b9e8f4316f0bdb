# SAD stage (paper Figs 8, 9a): every firing attention logit split over singular-vector terms, real and under the
# spectrum-preserving rotation null, per model, variant and prompt set; then the per-model SAD figures.


rule sad:
    input:
        unpack(sad_inputs),
        weights=rules.extract_weights.output[0],
        svd=rules.svd.output.svd,
        bases=rules.svd.output.bases,
    output:
        pairs="results/sad/{model}/{variant}/{prompt_set}/pairs.parquet",
        summary="results/sad/{model}/{variant}/{prompt_set}/summary.parquet",
        prompts="results/sad/{model}/{variant}/{prompt_set}/prompts.parquet",
    log:
        f"{LOGS}/sad/{{model}}_{{variant}}_{{prompt_set}}.log",
    benchmark:
        f"{BENCHMARKS}/sad/{{model}}_{{variant}}_{{prompt_set}}.tsv"
    wildcard_constraints:
        model=CONFIGURED_MODEL,
    priority: LONG_CHAIN
    conda:
        ENV
    threads: JOB_THREADS
    resources:
        mem_mb=12000,
        runtime=60,
    params:
        model=model_params,
        seed=config["random_init"]["seed"],
        sad=sad_params,
        prompts=sad_prompt_params,
    script:
        "../../scripts/sad.py"


rule sad_figures:
    input:
        unpack(sad_figure_inputs),
    output:
        heatmap=report(
            "results/figures/sad/heads_{model}.png",
            caption="../report/sad_heads.rst",
            category="SAD",
            subcategory="{model}",
            labels={"figure": "median N_recon per head", "model": "{model}"},
        ),
        ranks=report(
            "results/figures/sad/ranks_{model}.png",
            caption="../report/sad_ranks.rst",
            category="SAD",
            subcategory="{model}",
            labels={
                "figure": "contribution by singular-value rank",
                "model": "{model}",
            },
        ),
        nrecon=report(
            "results/figures/sad/nrecon_{model}.png",
            caption="../report/sad_nrecon.rst",
            category="SAD",
            subcategory="{model}",
            labels={"figure": "N_recon per head", "model": "{model}"},
        ),
        heatmap_pdf="results/figures/sad/heads_{model}.pdf",
        ranks_pdf="results/figures/sad/ranks_{model}.pdf",
        nrecon_pdf="results/figures/sad/nrecon_{model}.pdf",
    log:
        f"{LOGS}/sad_figures/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/sad_figures/{{model}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        measured=MEASURED,
    script:
        "../../scripts/sad_figures.py"


rule sad_all:
    input:
        sad_targets(),
