"""Rules toy_figure_*: draw one toy figure from the experiment's metrics or trajectory Parquet."""

from svalign import figures, io
from svalign.runtime import rule_logging
from svalign.tables import TOY_METRICS, TOY_TRAJECTORY

with rule_logging(snakemake.log[0]):
    seed = snakemake.params.seed
    if snakemake.rule == "toy_figure_dynamics":
        trajectory = io.to_frame(io.read_table(snakemake.input.trajectory, TOY_TRAJECTORY))
        figure = figures.toy_dynamics_figure(trajectory)
    else:
        metrics = io.to_frame(io.read_table(snakemake.input.metrics, TOY_METRICS))
        draw = {
            "toy_figure_geometry": figures.toy_geometry_figure,
            "toy_figure_alignment": figures.toy_alignment_figure,
        }
        figure = draw[snakemake.rule](metrics, seed=seed)
    figures.save_figure(figure, snakemake.output.png, snakemake.output.pdf)
