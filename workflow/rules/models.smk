# Real-model stages (SPEC sections 2 and 3): weights of every head -> batched factored SVD -> spectra figure.


rule convert_smollm2:
    output:
        directory("results/models/smollm2-hf"),
    log:
        f"{LOGS}/convert_smollm2.log",
    benchmark:
        f"{BENCHMARKS}/convert_smollm2.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=6000,
        runtime=20,
    script:
        "../../scripts/convert_smollm2.py"


rule extract_weights:
    input:
        unpack(model_inputs),
    output:
        "results/weights/{model}/{variant}.parquet",
    log:
        f"{LOGS}/extract_weights/{{model}}_{{variant}}.log",
    benchmark:
        f"{BENCHMARKS}/extract_weights/{{model}}_{{variant}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        model=model_params,
        seed=config["random_init"]["seed"],
    script:
        "../../scripts/extract_weights.py"


rule svd:
    input:
        "results/weights/{model}/{variant}.parquet",
    output:
        svd="results/svd/{model}/{variant}.parquet",
        bases="results/svd/{model}/{variant}_bases.parquet",
    log:
        f"{LOGS}/svd/{{model}}_{{variant}}.log",
    benchmark:
        f"{BENCHMARKS}/svd/{{model}}_{{variant}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=GPU_JOBS,
    params:
        svd=config["svd"],
        device=config["device"],
    script:
        "../../scripts/svd.py"


rule figure_spectra:
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
        f"{LOGS}/figure_spectra/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/figure_spectra/{{model}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../../scripts/figure_spectra.py"


rule svd_all:
    input:
        svd_targets(),


rule sad:
    input:
        unpack(model_inputs),
        weights="results/weights/{model}/{variant}.parquet",
        svd="results/svd/{model}/{variant}.parquet",
        bases="results/svd/{model}/{variant}_bases.parquet",
    output:
        pairs="results/sad/{model}/{variant}/{prompt_set}/pairs.parquet",
        summary="results/sad/{model}/{variant}/{prompt_set}/summary.parquet",
        prompts="results/sad/{model}/{variant}/{prompt_set}/prompts.parquet",
    log:
        f"{LOGS}/sad/{{model}}_{{variant}}_{{prompt_set}}.log",
    benchmark:
        f"{BENCHMARKS}/sad/{{model}}_{{variant}}_{{prompt_set}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=12000,
        runtime=60,
    params:
        model=model_params,
        seed=config["random_init"]["seed"],
        sad=config["sad"],
        repeated=sad_prompt_params,
    script:
        "../../scripts/sad.py"


rule figure_sad:
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
        f"{LOGS}/figure_sad/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/figure_sad/{{model}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        measured=MEASURED,
    script:
        "../../scripts/figure_sad.py"


rule sad_all:
    input:
        sad_targets(),
