# SAE stage (docs/method.md, "Real features"): an offline corpus, one TopK SAE per site on the head input, singular
# vectors against its decoder directions (vs a Haar-frame null and the random-init twin), firing logits split over
# latent pairs; then the per-model figures.


rule sae_corpus:
    output:
        "results/sae/corpus.parquet",
    log:
        f"{LOGS}/sae_corpus.log",
    benchmark:
        f"{BENCHMARKS}/sae_corpus.tsv"
    priority: LONG_CHAIN
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../../scripts/sae_corpus.py"


rule sae_train:
    input:
        unpack(model_inputs),
        corpus=rules.sae_corpus.output[0],
        weights=expand(
            rules.extract_weights.output[0], variant="trained", allow_missing=True
        )[0],
    output:
        tokens="results/sae/{model}/tokens.parquet",
        dictionary="results/sae/{model}/dictionary.parquet",
        quality="results/sae/{model}/quality.parquet",
    log:
        f"{LOGS}/sae_train/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/sae_train/{{model}}.tsv"
    wildcard_constraints:
        model=CONFIGURED_MODEL,
    priority: LONG_CHAIN
    conda:
        ENV
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=GPU_JOBS,
    params:
        model=model_params,
        layers=sae_layers,
        sae=sae_training_params(),
        seed=config["random_init"]["seed"],
        device=config["device"],
    script:
        "../../scripts/sae_train.py"


rule sae_align:
    input:
        unpack(sae_align_inputs),
        dictionary=rules.sae_train.output.dictionary,
        quality=rules.sae_train.output.quality,
        weights=expand(
            rules.extract_weights.output[0], variant="trained", allow_missing=True
        )[0],
    output:
        alignment="results/sae/{model}/alignment.parquet",
        heads="results/sae/{model}/heads.parquet",
        attribution="results/sae/{model}/attribution.parquet",
        sites="results/sae/{model}/sites.parquet",
    log:
        f"{LOGS}/sae_align/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/sae_align/{{model}}.tsv"
    wildcard_constraints:
        model=CONFIGURED_MODEL,
    priority: LONG_CHAIN
    conda:
        ENV
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        model=model_params,
        variants=VARIANTS,
        sae=sae_analysis_params(),
        sad=sad_params,
        prompts=prompt_params(config["sae"]["prompt_set"]),
        seed=config["random_init"]["seed"],
    script:
        "../../scripts/sae_align.py"


rule sae_figures:
    input:
        alignment=rules.sae_align.output.alignment,
        heads=rules.sae_align.output.heads,
        sites=rules.sae_align.output.sites,
        attribution=rules.sae_align.output.attribution,
        quality=rules.sae_train.output.quality,
    output:
        alignment=report(
            "results/figures/sae/alignment_{model}.png",
            caption="../report/sae_alignment.rst",
            category="SAE",
            subcategory="{model}",
            labels={"figure": "best |cos| by singular-value rank", "model": "{model}"},
        ),
        heads=report(
            "results/figures/sae/heads_{model}.png",
            caption="../report/sae_heads.rst",
            category="SAE",
            subcategory="{model}",
            labels={
                "figure": "alignment and attribution per head",
                "model": "{model}",
            },
        ),
        alignment_pdf="results/figures/sae/alignment_{model}.pdf",
        heads_pdf="results/figures/sae/heads_{model}.pdf",
    log:
        f"{LOGS}/sae_figures/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/sae_figures/{{model}}.tsv"
    wildcard_constraints:
        model=CONFIGURED_MODEL,
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        top_singular=SAE["top_singular"],
        null_quantile=SAE["null_quantile"],
        measured=MEASURED,
        captions=SAE_CAPTIONS,
    script:
        "../../scripts/sae_figures.py"


# Paper Fig 4 with the real dictionaries' interference ||E_X||_2 marked on its axis (the toy figure without them is
# rule toy_figure_anisotropy, so the toy target never waits for the model stages).
rule sae_figure_anisotropy:
    input:
        unpack(anisotropy_figure_inputs),
    output:
        png=report(
            "results/figures/sae/anisotropy.png",
            caption="../report/toy_anisotropy.rst",
            category="SAE",
            subcategory="anisotropy",
            labels={"figure": "alignment vs anisotropy, SAE dictionaries marked"},
        ),
        pdf="results/figures/sae/anisotropy.pdf",
    log:
        f"{LOGS}/sae_figure_anisotropy.log",
    benchmark:
        f"{BENCHMARKS}/sae_figure_anisotropy.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        measured=MEASURED,
        captions=SAE_CAPTIONS,
    script:
        "../../scripts/toy_figure_anisotropy.py"


rule sae_all:
    input:
        sae_targets(),
