# Shared helpers: config validation, input functions, wildcard constraints and rule defaults.
from snakemake.utils import validate
from svalign.config import check_config

validate(config, schema="../schemas/config.schema.yaml")
check_config(config)


wildcard_constraints:
    experiment="[a-z][a-z0-9_]*",


ENV = "../../envs/environment.yaml"
LOGS = "results/logs"
BENCHMARKS = "results/benchmarks"
TOY_EXPERIMENTS = sorted(config["toy"]["experiments"])


def toy_experiment_params(wildcards):
    """The config slice one toy experiment uses (so editing another experiment reruns nothing here)."""
    return config["toy"]["experiments"][wildcards.experiment]


def toy_targets():
    figures = ["geometry", "alignment", "dynamics"]
    return expand(
        "results/toy/{experiment}/metrics.parquet", experiment=TOY_EXPERIMENTS
    ) + expand(
        "results/figures/toy/{figure}_{experiment}.png",
        figure=figures,
        experiment=TOY_EXPERIMENTS,
    )


def all_targets():
    return toy_targets()
