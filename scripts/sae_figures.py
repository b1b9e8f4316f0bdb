"""Rule sae_figures: best |cos| by σ rank (trained, random init, Haar null) and the per-head alignment statistic and
attribution match rates, from the SAE stage's Parquet (the inputs `quality` and `attribution` feed the captions)."""

from svalign import io
from svalign.figures import canvas
from svalign.figures import sae as sae_figures
from svalign.runtime import rule_logging
from svalign.tables import SAE_ALIGNMENT, SAE_HEADS, SAE_SITES

with rule_logging(snakemake.log[0]):
    inputs, out, params = snakemake.input, snakemake.output, snakemake.params
    alignment = io.to_frame(io.read_table(inputs.alignment, SAE_ALIGNMENT))
    sites = io.to_frame(io.read_table(inputs.sites, SAE_SITES))
    heads = io.to_frame(io.read_table(inputs.heads, SAE_HEADS))
    by_rank = sae_figures.alignment_by_rank_figure(alignment, sites, params.top_singular, params.null_quantile)
    canvas.save_figure(by_rank, out.alignment, out.alignment_pdf)
    canvas.save_figure(sae_figures.head_alignment_figure(heads), out.heads, out.heads_pdf)
