"""Rule toy_figure_sweeps: alignment against each swept parameter, the others at their base values."""

from svalign import io
from svalign.figures import canvas
from svalign.figures import toy as toy_figures
from svalign.runtime import rule_logging
from svalign.tables import TOY_SWEEP

with rule_logging(snakemake.log[0]):
    table = io.to_frame(io.read_table(snakemake.input[0], TOY_SWEEP))
    figure = toy_figures.sweeps_figure(table, snakemake.params.base)
    canvas.save_figure(figure, snakemake.output.png, snakemake.output.pdf)
