# SAE stage (docs/method.md, "Real features"): an offline corpus, one TopK SAE per site on the head input, singular
# vectors against its decoder directions (vs a Haar-frame null and the random-init twin), firing logits split over
# latent pairs; then the per-model figures.


rule sae_sampled_text:
    input:
        model_dir=rules.convert_smollm2.output[0],
    output:
        "results/sae/sampled_text.parquet",
    log:
        f"{LOGS}/sae_sampled_text.log",
    benchmark:
        f"{BENCHMARKS}/sae_sampled_text.tsv"
    priority: LONG_CHAIN
    conda:
        ENV
    threads: JOB_THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        sampled=sae_sampling_params(),
    script:
        "../../scripts/sae_sampled_text.py"


rule sae_corpus:
    input:
        unpack(sae_corpus_inputs),
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
        published=sae_published_inputs,
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


# The SAE sweep (config sae.sweep, off by default; a GPU or cluster run): the stage rerun at every expansion x k x
# seed point under results/sae/sweep/{model}/<point>/, then one table of every point's quality, alignment counts,
# controls, attribution and verdicts, with their agreement across seeds.
use rule sae_train as sae_train_sweep with:
    output:
        tokens=f"results/sae/sweep/{{model}}/{SAE_SWEEP.wildcard_pattern}/tokens.parquet",
        dictionary=f"results/sae/sweep/{{model}}/{SAE_SWEEP.wildcard_pattern}/dictionary.parquet",
        quality=f"results/sae/sweep/{{model}}/{SAE_SWEEP.wildcard_pattern}/quality.parquet",
    log:
        f"{LOGS}/sae_train_sweep/{{model}}/{SAE_SWEEP.wildcard_pattern}.log",
    benchmark:
        f"{BENCHMARKS}/sae_train_sweep/{{model}}/{SAE_SWEEP.wildcard_pattern}.tsv"
    params:
        model=model_params,
        layers=sae_layers,
        sae=sae_sweep_training_params,
        seed=config["random_init"]["seed"],
        device=config["device"],


use rule sae_align as sae_align_sweep with:
    input:
        unpack(sae_align_inputs),
        dictionary=rules.sae_train_sweep.output.dictionary,
        quality=rules.sae_train_sweep.output.quality,
        weights=expand(
            rules.extract_weights.output[0], variant="trained", allow_missing=True
        )[0],
    output:
        alignment=f"results/sae/sweep/{{model}}/{SAE_SWEEP.wildcard_pattern}/alignment.parquet",
        heads=f"results/sae/sweep/{{model}}/{SAE_SWEEP.wildcard_pattern}/heads.parquet",
        attribution=f"results/sae/sweep/{{model}}/{SAE_SWEEP.wildcard_pattern}/attribution.parquet",
        sites=f"results/sae/sweep/{{model}}/{SAE_SWEEP.wildcard_pattern}/sites.parquet",
    log:
        f"{LOGS}/sae_align_sweep/{{model}}/{SAE_SWEEP.wildcard_pattern}.log",
    benchmark:
        f"{BENCHMARKS}/sae_align_sweep/{{model}}/{SAE_SWEEP.wildcard_pattern}.tsv"


rule sae_sweep_summary:
    input:
        unpack(sae_sweep_summary_inputs),
    output:
        "results/sae/sweep/{model}/summary.parquet",
    log:
        f"{LOGS}/sae_sweep_summary/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/sae_sweep_summary/{{model}}.tsv"
    wildcard_constraints:
        model=CONFIGURED_MODEL,
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        points=SAE_SWEEP_POINTS,
        bootstrap=config["report"],
    script:
        "../../scripts/sae_sweep_summary.py"
