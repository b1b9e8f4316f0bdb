"""The figures' common ground: one theme and a colour-blind palette (:func:`set_theme`, :data:`PALETTE`,
:data:`HEATMAP`), and the writers: :func:`save_figure` (PNG for the report, PDF for papers, atomically) and
:func:`thumbnail` (the README's pictures)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # rules run headless

import matplotlib.pyplot as plt
import seaborn as sns

from svalign.io import PathLike, atomic_file

__all__ = ["HEATMAP", "PALETTE", "save_figure", "set_theme", "thumbnail"]

PALETTE = "colorblind"
HEATMAP = "rocket_r"


def set_theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font_scale=1.1)


def save_figure(figure: plt.Figure, png_path: PathLike, pdf_path: PathLike | None = None) -> None:
    """Write the figure as PNG (150 dpi) and optionally PDF, each atomically (:func:`svalign.io.atomic_file`).

    Both are byte-identical for the same figure: the PDF leaves out its ``/CreationDate`` (PNGs carry no time).
    """
    for path, kwargs in ((png_path, {"dpi": 150}), (pdf_path, {"metadata": {"CreationDate": None}})):
        if path is None:
            continue
        with atomic_file(path) as handle:
            figure.savefig(handle, format=Path(path).suffix.lstrip("."), bbox_inches="tight", **kwargs)
    plt.close(figure)


def thumbnail(png_path: PathLike, out_path: PathLike, width: int = 720) -> Path:
    """A downscaled copy of a figure (README thumbnails), written atomically as an optimised PNG."""
    from PIL import Image

    with Image.open(png_path) as image:
        height = round(image.height * width / image.width)
        small = image.convert("RGB").resize((width, height), Image.LANCZOS)
        with atomic_file(out_path) as handle:
            small.save(handle, format="PNG", optimize=True)
    return Path(out_path)
