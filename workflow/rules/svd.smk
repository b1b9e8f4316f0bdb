# SVD stage: batched factored SVD of every head's QK form, and the spectra figure.


rule svd:
    input:
        rules.extract_weights.output,
    output:
        svd="results/svd/{model}/{variant}.parquet",
        bases="results/svd/{model}/{variant}_bases.parquet",
    log:
        f"{LOGS}/svd/{{model}}_{{variant}}.log",
    benchmark:
        f"{BENCHMARKS}/svd/{{model}}_{{variant}}.tsv"
    wildcard_constraints:
        model=CONFIGURED_MODEL,
    priority: LONG_CHAIN
    conda:
        ENV
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=GPU_JOBS,
    params:
        svd=config["svd"],
        device=config["device"],
    script:
        "../../scripts/svd.py"


rule svd_figure_spectra:
    input:
        unpack(spectra_inputs),
    output:
        png=report(
            "results/figures/svd/spectra_{model}.png",
            caption="../report/svd_spectra.rst",
            category="Real models",
            subcategory="{model}",
            labels={"figure": "singular-value spectra", "model": "{model}"},
        ),
        pdf="results/figures/svd/spectra_{model}.pdf",
    log:
        f"{LOGS}/svd_figure_spectra/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/svd_figure_spectra/{{model}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../../scripts/svd_figure_spectra.py"


rule svd_all:
    input:
        svd_targets(),
