"""The head explorer page of one model: its data, gathered from the Parquet tables (torch-free).

Rule ``explorer_page`` calls :func:`explorer_data` on the trained variant's tables — the degeneracy-aware spectra
(:data:`~svalign.tables.HEAD_DEGENERACY_BLOCKS`), the SAD summary, the token read-outs, the SAD examples and the
prompt tokens (:mod:`svalign.explorer.readouts`) — and :func:`svalign.explorer.page.render_page` writes the one
static HTML file.

Per-direction numbers are regrouped by degenerate block wherever a block holds more than one direction: an
example's dominant terms are the blocks' summed relative terms Σ_{k∈B} c_k (well defined: it is the block's part of
Ω, whatever basis the SVD chose inside it), and the page marks a read-out of a direction inside a block as one
arbitrary basis vector of the block's span.

**SAE hook.** :func:`explorer_data` takes SAE matches as ``sae``: a DataFrame with columns ``layer``, ``head``,
``rank`` (direction at offset 0), ``side`` (``query``/``key``), ``latent`` (int), ``cos`` (|cos| of the latent's
decoder direction with u_k or v_k) and optionally ``label``; the page then lists each direction's matched latents
under its read-outs (per block where the block is degenerate). The SAE stage fills it (:func:`sae_matches` of its
``alignment.parquet``: each direction's best latent, at the SAE sites' layers); other dictionaries can be passed
the same way. Without it the page says that no SAE stage ran.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from svalign.definitions import NULL_PREFIXES, NULLS
from svalign.degeneracy import block_sums

__all__ = [
    "DIGITS",
    "SAE_COLUMNS",
    "SCALE",
    "block_terms",
    "explorer_data",
    "page_json",
    "read_frames",
    "sae_matches",
]

DIGITS = 4
"""Significant digits of the numbers on the page (the tables keep full precision)."""
SAE_COLUMNS = ("layer", "head", "rank", "side", "latent", "cos")
"""Columns the SAE hook reads (plus an optional ``label``)."""
SCALE = 10_000
"""σ_k/σ_1 and SAD shares go into the page as integers in units of 1/SCALE."""
_SIDES = ("query", "key")
_POLES = ("high", "low")


def _round(values: Any, digits: int = DIGITS) -> Any:
    """A number or 1-D sequence to ``digits`` significant digits (decimal, so JSON stays short), NaN/inf as None."""
    array = np.asarray(values, dtype=np.float64)
    flat = [float(f"{v:.{digits}g}") if np.isfinite(v) else None for v in array.ravel().tolist()]
    return flat[0] if array.ndim == 0 else flat


def block_terms(contributions: np.ndarray, block: np.ndarray, n_terms: int) -> np.ndarray:
    """The ``n_terms`` blocks with the largest |Σ_{k∈B} c_k| of each pair.

    Args:
        contributions: ``[pairs, r]`` relative terms c_k by σ rank.
        block: ``[pairs, r]`` block of each rank at the pair's offset (:data:`~svalign.tables.HEAD_DEGENERACY_BLOCKS`).

    Returns:
        ``[pairs, n_terms, 4]``: first rank, last rank, the block's Σ c_k, and its share |Σ_B c_k| / Σ_B' |Σ_B' c_k|
        (by block; with no degenerate block this is the SAD share |c_k| / Σ|c|).
    """
    n, r = contributions.shape
    sums = block_sums(contributions, block)  # [pairs, r]: column b = block b
    rows, ranks = np.repeat(np.arange(n), r), np.tile(np.arange(r), n)
    first, last = np.full((n, r), r), np.full((n, r), -1)
    np.minimum.at(first, (rows, block.ravel()), ranks)
    np.maximum.at(last, (rows, block.ravel()), ranks)
    share = np.abs(sums) / np.maximum(np.abs(sums).sum(-1, keepdims=True), 1e-30)
    order = np.argsort(-np.abs(sums), axis=-1, kind="stable")[:, : min(n_terms, r)]
    pick = lambda a: np.take_along_axis(a, order, -1)  # noqa: E731
    return np.stack([pick(first), pick(last), pick(sums), pick(share)], -1)


def _scaled(values: Any) -> list[int]:
    """Fractions in [0, 1] as integers in units of 1/:data:`SCALE` (shorter JSON than decimals); NaN as 0."""
    return np.rint(np.nan_to_num(np.asarray(values, dtype=np.float64)) * SCALE).astype(np.int64).tolist()


def _summary_fields(summary: pd.Series) -> dict[str, Any]:
    return {
        "S": _round(summary["median_sparseness"]),
        "nS": _round(summary["null_median_sparseness"]),
        "N": _round(summary["median_n_recon"]),
        "nN": _round(summary["null_median_n_recon"]),
        "pairs": int(summary["n_pairs"]),
        "sh": _scaled(summary["share_by_rank"]),
        "nsh": _scaled(summary["null_share_by_rank"]),
        "sS": _round(summary["subspace_null_median_sparseness"]),
        "cS": _round(summary["covariance_null_median_sparseness"]),
        # per null (haar, subspace, covariance): 1 significantly sparser, −1 denser, 0 neither (BH over heads)
        "sig": [int(summary[f"{p}sparser_bh"]) - int(summary[f"{p}denser_bh"]) for p in NULL_PREFIXES.values()],
        "cap": _round(summary["softcap_max_distortion"]),
    }


def _spectrum_fields(rows: pd.DataFrame) -> dict[str, Any]:
    """The head's spectrum at offset 0 and, over its offsets, how many have a degenerate block in the top."""
    first = rows.iloc[0]  # rows sorted by offset: offset 0 first
    sigma = np.asarray(first["sigma"], dtype=np.float64)
    return {
        "s1": _round(sigma[0]),
        "s": _scaled(sigma / sigma[0] if sigma[0] > 0 else sigma),
        "blocks": _degenerate_blocks(np.asarray(first["block"]), int(first["numerical_rank"])),
        "nr": int(first["numerical_rank"]),
        "fd": int(first["first_degenerate"]),
        "deg": int(rows["degenerate_top"].sum()),
    }


def _degenerate_blocks(block: np.ndarray, numerical_rank: int) -> list[list[int]]:
    """``[[first, last], …]`` of the blocks of two or more resolved directions (the page rebuilds every block from
    these and the numerical rank)."""
    starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
    ends = np.r_[starts[1:], len(block)] - 1
    keep = (ends > starts) & (ends < numerical_rank)
    return [[int(a), int(b)] for a, b in zip(starts[keep], ends[keep], strict=True)]


class _Index(dict):
    """Position of each distinct key in insertion order (prompt keys, vocabulary tokens): ``index[key]``."""

    def __missing__(self, key: Any) -> int:
        self[key] = len(self)
        return self[key]


def _readout_fields(readouts: pd.DataFrame, prompts: _Index, vocab: _Index, sae: pd.DataFrame | None) -> dict:
    """Per head, its directions ``{"k", "c": [4 cells], "e": [4 cells]}``; the cells are (query, high), (query, low),
    (key, high), (key, low), flat: ``c`` holds prompt index (into ``prompts``), position, value, … and ``e``
    vocabulary index (into ``vocab``), value, …; plus each direction's matched SAE latents
    ``"sae": [[side, latent, |cos|, label]]`` when the hook is given."""
    frame = readouts.sort_values(["layer", "head", "rank", "side", "pole", "source", "order"], kind="stable")
    heads: dict[tuple[int, int], dict[int, dict]] = {}
    columns = ("layer", "head", "rank", "side", "pole", "source", "token", "prompt_set", "prompt", "position")
    for (layer, head, k, side, pole, source, token, s, p, pos), value in zip(
        zip(*(frame[c].tolist() for c in columns), strict=True), _round(frame["value"], 3), strict=True
    ):
        direction = heads.setdefault((layer, head), {}).setdefault(
            k, {"k": k, "c": [[], [], [], []], "e": [[], [], [], []]}
        )
        cell = 2 * _SIDES.index(side) + _POLES.index(pole)
        if source == "context":
            direction["c"][cell] += [prompts[(s, p)], pos, value]
        else:
            direction["e"][cell] += [vocab[token], value]
    matches = {} if sae is None else {k: rows for k, rows in sae.groupby(["layer", "head", "rank"])}
    out = {}
    for key, directions in heads.items():
        out[key] = [directions[k] for k in sorted(directions)]
        for direction in out[key] if sae is not None else ():
            rows = matches.get((*key, direction["k"]), sae.iloc[:0]).sort_values("cos", ascending=False)
            labels = rows["label"] if "label" in rows else rows["latent"]
            direction["sae"] = [
                [side, int(latent), _round(cos), str(label)]
                for side, latent, cos, label in zip(rows["side"], rows["latent"], rows["cos"], labels, strict=True)
            ]
    return out


def _example_fields(
    examples: pd.DataFrame, blocks: np.ndarray, prompts: _Index, n_terms: int
) -> dict[tuple[int, int], list]:
    """Per head, its examples ``[prompt, t, j, A, ℓ̃, N_recon, null N_recon, S, [S under each null], top rank,
    offset, terms]`` (the nulls in :data:`svalign.definitions.NULLS` order)
    (prompt: index into ``prompts``), terms ``[[first rank, last rank, Σ c, share], …]`` (:func:`block_terms`).

    Args:
        blocks: ``[examples, r]`` block of each rank at each example's offset.
    """
    if examples.empty:
        return {}
    terms = block_terms(np.stack(examples["contributions"].to_numpy()), blocks, n_terms)
    null_columns = [NULL_PREFIXES[null] + "sparseness" for null in NULLS]
    rounded = {c: _round(examples[c]) for c in ("attention", "ltilde", "null_n_recon", "sparseness", *null_columns)}
    null_values = zip(*(rounded[c] for c in null_columns), strict=True)
    rows = zip(
        *(examples[c].tolist() for c in ("layer", "head", "prompt_set", "prompt", "t", "j", "n_recon", "top_rank")),
        *(rounded[c] for c in ("attention", "ltilde", "null_n_recon", "sparseness")),
        [list(values) for values in null_values],
        examples["offset"].tolist(),
        terms.tolist(),
        strict=True,
    )
    out: dict[tuple[int, int], list] = {}
    for layer, head, s, p, t, j, nr, top, a, lt, nnr, S, null_s, off, row_terms in rows:
        shown = [[int(f), int(last), _round(v), _round(share, 3)] for f, last, v, share in row_terms]
        out.setdefault((layer, head), []).append([prompts[(s, p)], t, j, a, lt, nr, nnr, S, null_s, top, off, shown])
    return out


def explorer_data(
    frames: Mapping[str, pd.DataFrame],
    options: Mapping[str, Any],
    meta: Mapping[str, Any],
    sae: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Everything the page shows, as one JSON-ready mapping.

    Args:
        frames: ``spectra``, ``summary``, ``readouts``, ``examples``, ``tokens`` (:func:`svalign.io.to_frame` of the
            trained variant's explorer tables and its SAD summary).
        options: ``example_terms`` (blocks shown per example), ``context_tokens`` (tokens either side in contexts).
        meta: what the header states (model, variant, gap, rank_rtol, top_directions, summary prompt set, ...).
        sae: the SAE hook (module doc), or None.

    Returns:
        ``{"meta", "options", "scale", "sets", "prompts": [[set, prompt, tokens]], "vocab", "nL", "nH", "r",
        "offsets", "heads": [per head: "l", "h", summary fields (S, nS, N, nN, pairs, sh, nsh, sS, cS, sig, cap),
        spectrum fields (s1, s, blocks, nr, fd, deg), "ro", "ex"]}``; ``s``, ``sh``, ``nsh`` in units of 1/scale.
    """
    spectra = frames["spectra"].sort_values(["layer", "head", "offset"], kind="stable").reset_index(drop=True)
    sets = list(dict.fromkeys(frames["tokens"]["prompt_set"]))
    token_rows = frames["tokens"]
    keys = list(zip(token_rows["prompt_set"].tolist(), token_rows["prompt"].tolist(), strict=True))
    tokens = dict(zip(keys, token_rows["tokens"], strict=True))
    prompts, vocab = _Index({key: i for i, key in enumerate(keys)}), _Index()  # prompts in the tokens table's order
    row_of = {key: i for i, key in enumerate(zip(spectra["layer"], spectra["head"], spectra["offset"], strict=True))}
    blocks = np.stack(spectra["block"].to_numpy())
    examples = frames["examples"]
    rows = [row_of[key] for key in zip(examples["layer"], examples["head"], examples["offset"], strict=True)]
    example_fields = _example_fields(examples, blocks[rows], prompts, int(options["example_terms"]))
    readouts = _readout_fields(frames["readouts"], prompts, vocab, sae)
    summary = frames["summary"].set_index(["layer", "head"])
    heads = []
    for (layer, head), head_rows in spectra.groupby(["layer", "head"], sort=True):
        key = (int(layer), int(head))
        record = {"l": key[0], "h": key[1], **_summary_fields(summary.loc[key]), **_spectrum_fields(head_rows)}
        heads.append({**record, "ro": readouts.get(key, []), "ex": example_fields.get(key, [])})
    return {
        "meta": {
            **meta,
            "spectra": len(spectra),
            "degenerate_spectra": int(spectra["degenerate_top"].sum()),
            "sae": sae is not None,
        },
        "options": {"context_tokens": int(options["context_tokens"])},
        "scale": SCALE,
        "sets": sets,
        "prompts": [[sets.index(s), int(p), list(tokens[(s, p)])] for s, p in prompts],
        "vocab": list(vocab),
        "nL": int(spectra["layer"].max()) + 1,
        "nH": int(spectra["head"].max()) + 1,
        "r": int(blocks.shape[-1]),
        "offsets": int(spectra["offset"].nunique()),
        "heads": heads,
    }


def page_json(data: Mapping[str, Any]) -> str:
    """Compact JSON of :func:`explorer_data`, safe inside a ``<script>`` element (no ``</`` or ``<!--``: no ``<``)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c")  # "<" occurs only inside JSON strings, where \u003c is the same character


def sae_matches(path: Any) -> pd.DataFrame:
    """The SAE hook's rows from the SAE stage's ``alignment.parquet`` (trained variant): each singular direction's
    best-aligned latent, labelled with its corpus frequency."""
    from svalign import io
    from svalign.tables import SAE_ALIGNMENT

    table = io.to_frame(io.read_table(path, SAE_ALIGNMENT))
    table = table[table["variant"] == "trained"]
    return pd.DataFrame(
        {
            "layer": table["layer"],
            "head": table["head"],
            "rank": table["rank"],
            "side": table["side"].map({"u": "query", "v": "key"}),
            "latent": table["latent"],
            "cos": table["best_cos"],
            "label": [f"(active on {f:.1%} of corpus tokens)" for f in table["frequency"]],
        }
    )


def read_frames(paths: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The page's tables (``spectra``, ``summary``, ``readouts``, ``examples``, ``tokens``) as DataFrames."""
    from svalign import io, tables

    schemas = {
        "spectra": tables.HEAD_DEGENERACY_BLOCKS,
        "summary": tables.SAD_SUMMARY,
        "readouts": tables.EXPLORER_READOUTS,
        "examples": tables.EXPLORER_EXAMPLES,
        "tokens": tables.EXPLORER_TOKENS,
    }
    return {name: io.to_frame(io.read_table(paths[name], schema)) for name, schema in schemas.items()}
