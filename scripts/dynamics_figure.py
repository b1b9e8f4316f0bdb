"""Rule dynamics_figure: SAD of the tracked head across training checkpoints (paper Fig 7b analogue)."""

from svalign import io
from svalign.figures import canvas
from svalign.figures import dynamics as dynamics_figures
from svalign.runtime import rule_logging
from svalign.tables import DYNAMICS_SAD

with rule_logging(snakemake.log[0]):
    table = io.to_frame(io.read_table(snakemake.input.sad, DYNAMICS_SAD))
    canvas.save_figure(dynamics_figures.dynamics_figure(table), snakemake.output.png, snakemake.output.pdf)
