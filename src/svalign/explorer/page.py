"""The head explorer's static HTML page: inline JSON, a small script and its style (torch-free).

One self-contained file, no network and no server: it opens from the file system and inside the
``snakemake --report`` iframe (a ``data:`` URL, which Chromium caps at 2 MB: :data:`REPORT_URL_LIMIT`). The data
(:func:`svalign.explorer.data.explorer_data`) sits in a ``<script type="application/json">`` element; the script draws
the head picker (layer × head grid coloured by median S, S ÷ null S or median N_recon) and, for the chosen head, its
spectrum with degenerate blocks, token read-outs and SAD examples.

Hooks for tests: ``window.explorer.select(layer, head)``, ``document.body.dataset.head`` (``"L.H"`` once a head is
drawn), grid cells ``td.cell[data-layer][data-head]``, and the sections ``#spectrum svg``, ``#readouts .readout``,
``#examples tr.example``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from importlib import resources
from typing import Any

from svalign.explorer.data import explorer_data, page_json, read_frames, sae_matches

__all__ = ["REPORT_URL_LIMIT", "build_page", "check_report_size", "render_page"]

REPORT_URL_LIMIT = 2 * 1024 * 1024
"""Chromium's longest URL: the report shows an HTML result as a base64 ``data:`` URL, 4/3 of the file's size."""

ASSETS = "assets"
"""Folder of the page's style sheet and script, inside the package (inlined into every page)."""


def _asset(name: str) -> str:
    return (resources.files("svalign.explorer") / ASSETS / name).read_text(encoding="utf-8")


BODY = """
<h1>Head explorer: {model}</h1>
<p class="note">{intro}</p>
<p><label>colour by <select id="metric"><option value="S">median S</option>
<option value="ratio">S ÷ null S</option><option value="N">median N_recon</option></select></label>
<span id="legend"></span></p>
<table id="grid"></table>
<h2 id="title"></h2><p id="stats" class="note"></p>
<h3>Spectrum at δ = 0 with its degenerate blocks, and the SAD share of |c| by σ rank (bars; red ticks: null)</h3>
<div id="spectrum"></div>
<h2>Token read-outs of the leading directions</h2>
<p class="note">{readout_note}</p>
<div id="readouts"></div>
<h2>SAD examples: the firing pairs with the largest attention</h2>
<p class="note">{example_note}</p>
<div id="examples"></div>
<h2>SAE latents</h2><p class="note">{sae_note}</p>
"""


def _notes(meta: Mapping[str, Any]) -> dict[str, str]:
    gap, top = meta["degeneracy_gap"], meta["top_directions"]
    return {
        "intro": (
            f"{meta['model']} ({meta['variant']}), SVD of every head's QK form. Adjacent singular values closer than "
            f"a relative gap of {gap:g} form a degenerate block: inside it only the block's span is defined, so the "
            f"page reports blocks, not directions, there. {meta['degenerate_spectra']} of {meta['spectra']} "
            f"(head, offset) spectra have such a block among their top {top} directions. Pick a head in the grid."
        ),
        "readout_note": (
            "Prompt positions (over the prompt sets " + ", ".join(meta["prompt_sets"]) + ") whose head input x̃ "
            "projects highest and lowest on u_k (query side) or v_k (key side), in context (highlighted), with the "
            "projection. The term σ_k (x̃_t·u_k)(v_k·x̃_j) is largest when both projections are large with the same "
            "sign. 'embedding': vocabulary tokens whose embedding, through the head's input normalisation at layer 0, "
            "projects highest or lowest (this describes layer 0 only)."
        ),
        "example_note": (
            "Query (yellow) and key (blue) in context, attention A, relative attention ℓ̃, N_recon and Rolls–Tovée S "
            f"with their null medians (N_recon: the Haar rotation null; S: the Haar, within-subspace and covariance "
            f"nulls; N_recon ordering: {meta['n_recon_order']}), and the largest terms "
            "grouped by degenerate block (orange: a block of several directions, whose sum is defined)."
        ),
        "sae_note": (
            "Under each direction: the SAE latent whose decoder direction is closest to it (best |cos|, query and key "
            "side; SAE stage, sites' layers only, offset 0)."
            if meta["sae"]
            else "No SAE stage ran in this workflow; the page has a hook for its matches "
            "(svalign.explorer.data, SAE hook)."
        ),
    }


def render_page(data: Mapping[str, Any]) -> str:
    """The whole page for :func:`svalign.explorer.data.explorer_data` ``data``."""
    meta = data["meta"]
    notes = {k: html.escape(v) for k, v in _notes(meta).items()}
    body = BODY.format(model=html.escape(str(meta["model"])), **notes)
    title = html.escape(f"Head explorer: {meta['model']}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_asset('explorer.css')}</style></head><body>{body}"
        f'<script type="application/json" id="explorer-data">{page_json(data)}</script>'
        f"<script>{_asset('explorer.js')}</script></body></html>\n"
    )


def check_report_size(page: str, path: str) -> int:
    """The page's size in bytes; raises when the report could not show it (its base64 ``data:`` URL would exceed
    :data:`REPORT_URL_LIMIT`)."""
    size = len(page.encode())
    url = len("data:text/html;charset=utf8;base64,") + 4 * ((size + 2) // 3)
    if url > REPORT_URL_LIMIT:
        raise ValueError(
            f"{path}: the page is {size / 2**20:.2f} MiB, too large for the report's iframe (a data: URL of "
            f"{url / 2**20:.2f} MiB > 2 MiB in Chromium); lower explorer.n_tokens, explorer.readout_directions or "
            "explorer.n_examples, or read fewer prompt sets (explorer.prompt_sets)"
        )
    return size


def build_page(paths: Mapping[str, Any], model: str, options: Mapping[str, Any]) -> str:
    """The page of one model from its tables (``paths``: ``spectra``, ``summary``, ``readouts``, ``examples``,
    ``tokens``; :func:`svalign.explorer.data.read_frames`). The header's settings come from the tables themselves: the
    spectra's provenance (gap, numerical-rank tolerance, top directions), the summary's prompt set and N_recon
    ordering, the prompt sets of the tokens."""
    from svalign.io import read_provenance

    frames = read_frames(paths)
    named = dict(paths.items())  # a mapping or Snakemake's input list (whose `in` tests values, not names)
    sae = sae_matches(named["sae_alignment"]) if "sae_alignment" in named else None
    spectra_config = read_provenance(paths["spectra"])["config"]
    meta = {
        "model": model,
        "variant": str(frames["spectra"]["variant"].iloc[0]),
        **{key: spectra_config[key] for key in ("degeneracy_gap", "rank_rtol", "top_directions")},
        "prompt_sets": list(dict.fromkeys(frames["tokens"]["prompt_set"])),
        "summary_prompt_set": str(frames["summary"]["prompt_set"].iloc[0]),
        "n_recon_order": str(frames["summary"]["n_recon_order"].iloc[0]),
    }
    return render_page(explorer_data(frames, options, meta, sae))
