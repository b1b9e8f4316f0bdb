"""Seaborn figures, drawn only from the pipeline's Parquet tables (torch-free), one module per stage:
:mod:`~svalign.figures.toy`, :mod:`~svalign.figures.svd`, :mod:`~svalign.figures.sad`, :mod:`~svalign.figures.sae`
and :mod:`~svalign.figures.dynamics`; :mod:`~svalign.figures.canvas` holds the theme, the palette and the writers
(:func:`~svalign.figures.canvas.save_figure`, :func:`~svalign.figures.canvas.thumbnail`).

Each ``*_figure`` function takes a DataFrame from :func:`svalign.io.to_frame` (tensor cells are arrays of their
declared shape) and returns a matplotlib Figure. This file imports nothing.
"""
