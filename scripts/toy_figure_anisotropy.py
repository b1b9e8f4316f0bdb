"""Rules toy_figure_anisotropy and sae_figure_anisotropy: alignment vs ‖XᵀX − I‖₂, trained and closed form (paper
Fig 4); the second marks the SAE dictionaries' interference norms (inputs quality_<model>, sites_<model>)."""

from svalign import figures, io
from svalign.runtime import rule_logging
from svalign.sae.summary import interference_inputs
from svalign.tables import TOY_ANISOTROPY

with rule_logging(snakemake.log[0]):
    table = io.to_frame(io.read_table(snakemake.input.anisotropy, TOY_ANISOTROPY))
    sae = interference_inputs(snakemake.input)
    figures.save_figure(figures.anisotropy_figure(table, sae=sae), snakemake.output.png, snakemake.output.pdf)
