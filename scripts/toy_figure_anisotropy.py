"""Rules toy_figure_anisotropy and sae_figure_anisotropy: alignment vs ‖XᵀX − I‖₂, trained and closed form (paper
Fig 4); the second marks the SAE dictionaries' interference norms (inputs quality_<model>, sites_<model>)."""

from svalign import io
from svalign.captions import interference_inputs
from svalign.figures import canvas
from svalign.figures import toy as toy_figures
from svalign.runtime import rule_logging
from svalign.tables import TOY_ANISOTROPY

with rule_logging(snakemake.log[0]):
    table = io.to_frame(io.read_table(snakemake.input.anisotropy, TOY_ANISOTROPY))
    sae = interference_inputs(snakemake.input)
    canvas.save_figure(toy_figures.anisotropy_figure(table, sae=sae), snakemake.output.png, snakemake.output.pdf)
