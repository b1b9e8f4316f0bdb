# Real-model weights: per-head W_Q/W_K (+ biases, RoPE, GQA) of every model variant.


rule convert_smollm2:
    output:
        directory("results/models/smollm2-hf"),
    log:
        f"{LOGS}/convert_smollm2.log",
    benchmark:
        f"{BENCHMARKS}/convert_smollm2.tsv"
    priority: LONG_CHAIN
    conda:
        ENV
    threads: JOB_THREADS
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
        seed=config["random_init"]["seed"],
    script:
        "../../scripts/extract_weights.py"
