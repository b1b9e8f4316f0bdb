"""Rule toy_figures: the feature geometry, alignment and training-dynamics figures of one toy experiment."""

from svalign import io
from svalign.figures import canvas
from svalign.figures import toy as toy_figures
from svalign.runtime import rule_logging
from svalign.tables import TOY_METRICS, TOY_TRAJECTORY

with rule_logging(snakemake.log[0]):
    seed, out = snakemake.params.seed, snakemake.output
    metrics = io.to_frame(io.read_table(snakemake.input.metrics, TOY_METRICS))
    trajectory = io.to_frame(io.read_table(snakemake.input.trajectory, TOY_TRAJECTORY))
    canvas.save_figure(toy_figures.toy_geometry_figure(metrics, seed=seed), out.geometry, out.geometry_pdf)
    canvas.save_figure(toy_figures.toy_alignment_figure(metrics, seed=seed), out.alignment, out.alignment_pdf)
    canvas.save_figure(toy_figures.toy_dynamics_figure(trajectory), out.dynamics, out.dynamics_pdf)
