"""Rule svd_figure_spectra: σ_k/σ_1 heatmaps per layer × head, trained model beside its random-init twin."""

from svalign import io
from svalign.figures import canvas
from svalign.figures import svd as svd_figures
from svalign.runtime import rule_logging
from svalign.tables import HEAD_SVD

with rule_logging(snakemake.log[0]):
    tables = {
        variant: io.to_frame(io.read_table(path, HEAD_SVD, columns=["layer", "head", "offset", "sigma"]))
        for variant, path in snakemake.input.items()
    }
    figure = svd_figures.spectra_figure(tables, model=snakemake.wildcards.model)
    canvas.save_figure(figure, snakemake.output.png, snakemake.output.pdf)
