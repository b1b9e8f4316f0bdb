"""Rule toy_figure_anisotropy: alignment vs ‖XᵀX − I‖₂, trained and closed form (paper Fig 4)."""

from svalign import figures, io
from svalign.runtime import rule_logging
from svalign.tables import TOY_ANISOTROPY

with rule_logging(snakemake.log[0]):
    table = io.to_frame(io.read_table(snakemake.input[0], TOY_ANISOTROPY))
    figures.save_figure(figures.anisotropy_figure(table), snakemake.output.png, snakemake.output.pdf)
