"""Rule toy_figure_sweeps: alignment against each swept parameter, the others at their base values."""

from svalign import figures, io
from svalign.runtime import rule_logging
from svalign.tables import TOY_SWEEP

with rule_logging(snakemake.log[0]):
    table = io.to_frame(io.read_table(snakemake.input[0], TOY_SWEEP))
    figure = figures.sweeps_figure(table, snakemake.params.base)
    figures.save_figure(figure, snakemake.output.png, snakemake.output.pdf)
