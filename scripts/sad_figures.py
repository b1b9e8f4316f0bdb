"""Rule sad_figures: per-head SAD heatmaps and contributions by singular-value rank, from the summary Parquet."""

from svalign import io
from svalign.figures import canvas
from svalign.figures import sad as sad_figures
from svalign.runtime import rule_logging
from svalign.tables import SAD_SUMMARY

with rule_logging(snakemake.log[0]):
    summaries = {  # input `pairs` is for the captions' intervals
        variant: io.to_frame(io.read_table(path, SAD_SUMMARY))
        for variant, path in snakemake.input.items()
        if variant != "pairs"
    }
    model = snakemake.wildcards.model
    out = snakemake.output
    canvas.save_figure(sad_figures.sad_heads_figure(summaries, model), out.heatmap, out.heatmap_pdf)
    canvas.save_figure(sad_figures.sad_ranks_figure(summaries, model), out.ranks, out.ranks_pdf)
    canvas.save_figure(sad_figures.sad_nrecon_figure(summaries, model), out.nrecon, out.nrecon_pdf)
