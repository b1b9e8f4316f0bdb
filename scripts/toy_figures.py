"""Rule toy_figures: the feature geometry, alignment and training-dynamics figures of one toy experiment."""

from svalign import figures, io
from svalign.runtime import rule_logging
from svalign.tables import TOY_METRICS, TOY_TRAJECTORY

with rule_logging(snakemake.log[0]):
    seed, out = snakemake.params.seed, snakemake.output
    metrics = io.to_frame(io.read_table(snakemake.input.metrics, TOY_METRICS))
    trajectory = io.to_frame(io.read_table(snakemake.input.trajectory, TOY_TRAJECTORY))
    figures.save_figure(figures.toy_geometry_figure(metrics, seed=seed), out.geometry, out.geometry_pdf)
    figures.save_figure(figures.toy_alignment_figure(metrics, seed=seed), out.alignment, out.alignment_pdf)
    figures.save_figure(figures.toy_dynamics_figure(trajectory), out.dynamics, out.dynamics_pdf)
