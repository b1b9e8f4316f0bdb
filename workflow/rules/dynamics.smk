# Training dynamics (paper Fig 7b): train a small transformer from scratch with checkpoints on a
# log-spaced schedule (or take external checkpoints), run every checkpoint through the extract_weights -> svd ->
# sad rules (models dyn_stepNNNNNN / dyn_cNNN), then follow one head's SAD across training, real vs null.


rule dynamics_train:
    output:
        manifest=DYNAMICS_MANIFEST,
        log_table="results/dynamics/train/training_log.parquet",
    log:
        f"{LOGS}/dynamics_train.log",
    benchmark:
        f"{BENCHMARKS}/dynamics_train.tsv"
    priority: LONG_CHAIN
    conda:
        ENV
    threads: JOB_THREADS
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU_JOBS,
    params:
        train=DYNAMICS["train"],
        # Checkpoints are written next to the manifest, not declared as outputs: Snakemake would delete them
        # before a rerun, and a killed run resumes from the last complete one (same config only).
        checkpoint_dir=checkpoint_dir_of,
        device=config["device"],
    script:
        "../../scripts/dynamics_train.py"


# The SAD stage's `repeated` prompt set for our series: sequences of the training task, from their own stream.
rule dynamics_prompts:
    output:
        "results/dynamics/train/sad_prompts.parquet",
    log:
        f"{LOGS}/dynamics_prompts.log",
    benchmark:
        f"{BENCHMARKS}/dynamics_prompts.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        train=DYNAMICS["train"],
        n_prompts=DYNAMICS["n_prompts"],
        seed=config["sad"]["prompt_seed"],
    script:
        "../../scripts/dynamics_prompts.py"


if DYNAMICS_SERIES_JOB:

    # The whole series through weights -> SVD -> SAD in one process (config dynamics.checkpoint_jobs): the steps of
    # rule dynamics_checkpoint for each checkpoint in turn, to the same paths; our 2-layer checkpoints take ~0.5 s
    # each, less than one job's start-up.
    rule dynamics_series:
        input:
            unpack(dynamics_chain_inputs),
        output:
            weights=series_paths(rules.extract_weights.output[0]),
            svd=series_paths(rules.svd.output.svd),
            bases=series_paths(rules.svd.output.bases),
            pairs=series_paths(rules.sad.output.pairs),
            summary=series_paths(rules.sad.output.summary),
            prompts=series_paths(rules.sad.output.prompts),
        log:
            f"{LOGS}/dynamics_series.log",
        benchmark:
            f"{BENCHMARKS}/dynamics_series.tsv"
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=5000,
            runtime=60,
            gpu=GPU_JOBS,
        params:
            models=series_model_params(),
            seed=config["random_init"]["seed"],
            svd=config["svd"],
            device=config["device"],
            sad=sad_params,
            prompt_set=DYNAMICS["prompt_set"],
            prompts=prompt_params(DYNAMICS["prompt_set"]),
        script:
            "../../scripts/dynamics_series.py"

else:

    # One checkpoint through weights -> SVD -> SAD in one process (and one cluster submission): the steps of rules
    # extract_weights, svd and sad, to the same paths; a checkpoint is one job, not three.
    rule dynamics_checkpoint:
        input:
            unpack(dynamics_chain_inputs),
        output:
            weights=rules.extract_weights.output[0],
            svd=rules.svd.output.svd,
            bases=rules.svd.output.bases,
            pairs=checkpoint_sad_path(rules.sad.output.pairs),
            summary=checkpoint_sad_path(rules.sad.output.summary),
            prompts=checkpoint_sad_path(rules.sad.output.prompts),
        log:
            f"{LOGS}/dynamics_checkpoint/{{model}}_{{variant}}.log",
        benchmark:
            f"{BENCHMARKS}/dynamics_checkpoint/{{model}}_{{variant}}.tsv"
        wildcard_constraints:
            model=CHECKPOINT_MODEL,
            variant="trained",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=5000,
            runtime=30,
            gpu=GPU_JOBS,
        params:
            model=model_params,
            seed=config["random_init"]["seed"],
            svd=config["svd"],
            device=config["device"],
            sad=sad_params,
            prompt_set=DYNAMICS["prompt_set"],
            prompts=prompt_params(DYNAMICS["prompt_set"]),
        script:
            "../../scripts/dynamics_checkpoint.py"


rule dynamics_scores:
    input:
        rules.dynamics_train.output.manifest,
    output:
        "results/dynamics/train/head_scores.parquet",
    log:
        f"{LOGS}/dynamics_scores.log",
    benchmark:
        f"{BENCHMARKS}/dynamics_scores.tsv"
    conda:
        ENV
    threads: JOB_THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        train=DYNAMICS["train"],
    script:
        "../../scripts/dynamics_scores.py"


rule dynamics_sad:
    input:
        unpack(dynamics_sad_inputs),
    output:
        "results/dynamics/sad.parquet",
    log:
        f"{LOGS}/dynamics_sad.log",
    benchmark:
        f"{BENCHMARKS}/dynamics_sad.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        checkpoints=DYNAMICS_MODELS,
        head=DYNAMICS["head"],
    script:
        "../../scripts/dynamics_sad.py"


rule dynamics_figure:
    input:
        unpack(dynamics_claim_inputs),
        sad=rules.dynamics_sad.output[0],
    output:
        png=report(
            "results/figures/dynamics/sad_over_training.png",
            caption="../report/dynamics.rst",
            category="Dynamics",
            labels={"figure": "SAD over training"},
        ),
        pdf="results/figures/dynamics/sad_over_training.pdf",
    log:
        f"{LOGS}/dynamics_figure.log",
    benchmark:
        f"{BENCHMARKS}/dynamics_figure.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        measured=MEASURED,
    script:
        "../../scripts/dynamics_figure.py"


rule dynamics:
    input:
        dynamics_targets(),
