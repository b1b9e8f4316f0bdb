# Toy stage's functions and constants (rules in toy.smk): the sweep points and Paramspaces, params, targets.
import pandas as pd
from snakemake.utils import Paramspace
from svalign.toy.config import points_of_shape, sweep_groups, sweep_points

# One directory level per swept parameter (lam~0.25/sparsity~0.9/...): each point is its own job and file.
SWEEP_POINTS = sweep_points(SWEEPS["base"], SWEEPS["grid"])
SWEEP_SPACE = Paramspace(pd.DataFrame(SWEEP_POINTS), param_sep="~")
# With batch_shared_shapes: one job per (N, m, H), training its points' (lambda, S) x seeds as one batch.
SWEEP_SHAPES = Paramspace(pd.DataFrame(sweep_groups(SWEEP_POINTS)), param_sep="~")


def toy_experiment_params(wildcards):
    """The config slice one toy experiment uses (so editing another experiment reruns nothing here)."""
    return config["toy"]["experiments"][wildcards.experiment]


def sweep_point_params(wildcards):
    """The one sweep point of this path, as a list of points (the script trains lists of same-shape points)."""
    return [SWEEP_SPACE.instance(wildcards)]


def sweep_shape_points(wildcards):
    """The sweep points of one shape (N, m, H), from its path."""
    return points_of_shape(SWEEP_POINTS, SWEEP_SHAPES.instance(wildcards))


def sweep_files(wildcards):
    """Every sweep table: one per point, or one per shape when shapes are batched."""
    rule_, space = (
        (rules.toy_sweep_group, SWEEP_SHAPES)
        if SWEEPS["batch_shared_shapes"]
        else (rules.toy_sweep_point, SWEEP_SPACE)
    )
    path = rule_.output[0]
    return [
        path.replace(space.wildcard_pattern, instance)
        for instance in space.instance_patterns
    ]


def toy_targets():
    targets = expand(rules.toy_train.output.metrics, experiment=TOY_EXPERIMENTS)
    for name in ("geometry", "alignment", "dynamics"):
        targets += expand(
            getattr(rules.toy_figures.output, name), experiment=TOY_EXPERIMENTS
        )
    if config["toy"]["anisotropy"]["enabled"]:
        targets.append(rules.toy_figure_anisotropy.output.png)
    if SWEEPS["enabled"]:
        targets.append(rules.toy_figure_sweeps.output.png)
    return targets
