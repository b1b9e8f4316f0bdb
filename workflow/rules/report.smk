# Results stage: the paper's claims beside our numbers, from the current tables.


rule results_table:
    input:
        unpack(results_table_inputs),
    output:
        table="results/report/claims.parquet",
        markdown="results/report/claims.md",
        csv=report(
            "results/report/claims.csv",
            caption="../report/results_table.rst",
            category="Results",
            labels={"table": "paper claims vs ours"},
        ),
    log:
        f"{LOGS}/results_table.log",
    benchmark:
        f"{BENCHMARKS}/results_table.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        bootstrap=config["report"],
    script:
        "../../scripts/results_table.py"
