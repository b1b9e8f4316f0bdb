# Head explorer: degeneracy-aware spectra of every head, token read-outs of its leading singular directions and
# its SAD examples, and one static HTML page per model in the report (category "Head explorer").


rule explorer_spectra:
    input:
        rules.svd.output.svd,
    output:
        "results/explorer/{model}/{variant}/spectra.parquet",
    log:
        f"{LOGS}/explorer_spectra/{{model}}_{{variant}}.log",
    benchmark:
        f"{BENCHMARKS}/explorer_spectra/{{model}}_{{variant}}.tsv"
    wildcard_constraints:
        model=CONFIGURED_MODEL,
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        options=explorer_options(EXPLORER_BLOCK_KEYS),
    script:
        "../../scripts/explorer_spectra.py"


rule explorer_readouts:
    input:
        unpack(explorer_readouts_inputs),
    output:
        readouts="results/explorer/{model}/trained/readouts.parquet",
        examples="results/explorer/{model}/trained/examples.parquet",
        tokens="results/explorer/{model}/trained/tokens.parquet",
    log:
        f"{LOGS}/explorer_readouts/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/explorer_readouts/{{model}}.tsv"
    wildcard_constraints:
        model=CONFIGURED_MODEL,
    conda:
        ENV
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        model=model_params,
        seed=config["random_init"]["seed"],
        options=explorer_options(EXPLORER_READOUT_KEYS),
        prompts=explorer_prompt_params,
        chunk_prompts=config["sad"]["chunk_prompts"],
    script:
        "../../scripts/explorer_readouts.py"


rule explorer_page:
    input:
        unpack(explorer_page_inputs),
    output:
        html=report(
            "results/explorer/{model}/explorer.html",
            caption="../report/explorer.rst",
            category="Head explorer",
            subcategory="{model}",
            labels={"page": "head explorer", "model": "{model}"},
        ),
    log:
        f"{LOGS}/explorer_page/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/explorer_page/{{model}}.tsv"
    wildcard_constraints:
        model=CONFIGURED_MODEL,
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        options=explorer_options(EXPLORER_PAGE_KEYS),
    script:
        "../../scripts/explorer_page.py"


rule explorer_all:
    input:
        explorer_targets(),
