# Toy model stage (paper Figs 1-4): batched training of autoencoder + bilinear head, metrics, figures; the
# anisotropy sweep (Theorem 2) and the one-at-a-time robustness sweeps (App. A/E).


rule toy_train:
    output:
        weights="results/toy/{experiment}/weights.parquet",
        metrics="results/toy/{experiment}/metrics.parquet",
        trajectory="results/toy/{experiment}/trajectory.parquet",
    log:
        f"{LOGS}/toy_train/{{experiment}}.log",
    benchmark:
        f"{BENCHMARKS}/toy_train/{{experiment}}.tsv"
    priority: LONG_CHAIN
    conda:
        ENV
    # One thread per job: the toy's matmuls are small, so jobs in parallel beat threads in one job
    # (raise it with --set-threads toy_train=N on a big machine).
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU_JOBS,
    params:
        experiment=toy_experiment_params,
        device=config["device"],
    script:
        "../../scripts/toy_train.py"


# The three figures of one experiment in one job: each is a second of drawing after seconds of imports.
rule toy_figures:
    input:
        metrics=rules.toy_train.output.metrics,
        trajectory=rules.toy_train.output.trajectory,
    output:
        geometry=report(
            "results/figures/toy/geometry_{experiment}.png",
            caption="../report/toy_geometry.rst",
            category="Toy model",
            subcategory="{experiment}",
            labels={"figure": "feature geometry", "experiment": "{experiment}"},
        ),
        alignment=report(
            "results/figures/toy/alignment_{experiment}.png",
            caption="../report/toy_alignment.rst",
            category="Toy model",
            subcategory="{experiment}",
            labels={
                "figure": "singular vectors vs features",
                "experiment": "{experiment}",
            },
        ),
        dynamics=report(
            "results/figures/toy/dynamics_{experiment}.png",
            caption="../report/toy_dynamics.rst",
            category="Toy model",
            subcategory="{experiment}",
            labels={"figure": "training dynamics", "experiment": "{experiment}"},
        ),
        geometry_pdf="results/figures/toy/geometry_{experiment}.pdf",
        alignment_pdf="results/figures/toy/alignment_{experiment}.pdf",
        dynamics_pdf="results/figures/toy/dynamics_{experiment}.pdf",
    log:
        f"{LOGS}/toy_figures/{{experiment}}.log",
    benchmark:
        f"{BENCHMARKS}/toy_figures/{{experiment}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        seed=config["toy"]["figures"]["seed"],
        measured=MEASURED,
    script:
        "../../scripts/toy_figures.py"


rule toy_anisotropy:
    output:
        "results/toy/anisotropy/anisotropy.parquet",
    log:
        f"{LOGS}/toy_anisotropy.log",
    benchmark:
        f"{BENCHMARKS}/toy_anisotropy.tsv"
    priority: LONG_CHAIN
    conda:
        ENV
    threads: JOB_THREADS
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU_JOBS,
    params:
        anisotropy=config["toy"]["anisotropy"],
        device=config["device"],
    script:
        "../../scripts/toy_anisotropy.py"


rule toy_figure_anisotropy:
    input:
        anisotropy=rules.toy_anisotropy.output[0],
    output:
        png=report(
            "results/figures/toy/anisotropy.png",
            caption="../report/toy_anisotropy.rst",
            category="Theory",
            subcategory="anisotropy",
            labels={"figure": "alignment vs anisotropy"},
        ),
        pdf="results/figures/toy/anisotropy.pdf",
    log:
        f"{LOGS}/toy_figure_anisotropy.log",
    benchmark:
        f"{BENCHMARKS}/toy_figure_anisotropy.tsv"
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


rule toy_sweep_point:
    output:
        f"results/toy/sweeps/{SWEEP_SPACE.wildcard_pattern}/metrics.parquet",
    log:
        f"{LOGS}/toy_sweep_point/{SWEEP_SPACE.wildcard_pattern}.log",
    benchmark:
        f"{BENCHMARKS}/toy_sweep_point/{SWEEP_SPACE.wildcard_pattern}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=GPU_JOBS,
    params:
        points=sweep_point_params,
        base=SWEEPS["base"],
        seeds=SWEEPS["seeds"],
        device=config["device"],
    script:
        "../../scripts/toy_sweep_point.py"


# toy.sweeps.batch_shared_shapes: the points of one shape (N, m, H) in one batched job (e.g. on a GPU).
use rule toy_sweep_point as toy_sweep_group with:
    output:
        f"results/toy/sweeps/groups/{SWEEP_SHAPES.wildcard_pattern}/metrics.parquet",
    log:
        f"{LOGS}/toy_sweep_group/{SWEEP_SHAPES.wildcard_pattern}.log",
    benchmark:
        f"{BENCHMARKS}/toy_sweep_group/{SWEEP_SHAPES.wildcard_pattern}.tsv"
    threads: JOB_THREADS
    params:
        points=sweep_shape_points,
        base=SWEEPS["base"],
        seeds=SWEEPS["seeds"],
        device=config["device"],


rule toy_sweep:
    input:
        sweep_files,
    output:
        "results/toy/sweeps/sweep.parquet",
    log:
        f"{LOGS}/toy_sweep.log",
    benchmark:
        f"{BENCHMARKS}/toy_sweep.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../../scripts/toy_sweep.py"


rule toy_figure_sweeps:
    input:
        rules.toy_sweep.output[0],
    output:
        png=report(
            "results/figures/toy/sweeps.png",
            caption="../report/toy_sweeps.rst",
            category="Theory",
            subcategory="robustness sweeps",
            labels={"figure": "robustness sweeps"},
        ),
        pdf="results/figures/toy/sweeps.pdf",
    log:
        f"{LOGS}/toy_figure_sweeps.log",
    benchmark:
        f"{BENCHMARKS}/toy_figure_sweeps.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        base=sweep_points(SWEEPS["base"], {})[0],
    script:
        "../../scripts/toy_figure_sweeps.py"


rule toy:
    input:
        toy_targets(),
