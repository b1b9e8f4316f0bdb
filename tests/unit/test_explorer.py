"""The head explorer's torch-free parts: degenerate blocks of spectra, per-block terms, the page's data and HTML."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from svalign import degeneracy, io, tables
from svalign.definitions import NULL_PREFIXES
from svalign.degeneracy import block_sums, degenerate_within, spectrum_blocks
from svalign.explorer import data as explorer
from svalign.explorer import page as explorer_page
from svalign.explorer.data import block_terms, explorer_data

GAP, RTOL = 1e-2, 1e-5


# --------------------------------------------------------------------------------------------------
# Degenerate blocks
# --------------------------------------------------------------------------------------------------


def test_blocks_join_close_neighbours_and_the_numerical_null_space():
    sigma = np.array([10.0, 9.95, 9.0, 5.0, 4.99, 4.98, 1e-5, 1e-7, 0.0])
    blocks = spectrum_blocks(sigma, GAP, RTOL)
    # 9.95/10: gap 0.005 < 0.01 joins; 9.0: gap 0.095 starts a block; 5, 4.99, 4.98 chain; 1e-5 ≤ 1e-5 · σ_1 and
    # below: one null block whatever their own gaps.
    assert blocks.block.tolist() == [0, 0, 1, 2, 2, 2, 3, 3, 3]
    assert int(blocks.numerical_rank) == 6
    assert blocks.block_size.tolist() == [2, 2, 1, 3, 3, 3, 3, 3, 3]
    assert blocks.resolved.tolist() == [True] * 6 + [False] * 3


def test_a_chain_of_close_neighbours_is_one_block_and_the_gap_is_strict():
    # each step is 0.9 % (< 1 %) though the ends differ by 2.7 %: only the span of the chain is defined
    chain = 10.0 * 0.991 ** np.arange(4)
    assert spectrum_blocks(chain, GAP, RTOL).block.tolist() == [0, 0, 0, 0]
    exact = np.array([1.0, 0.99])  # relative gap exactly 0.01: not below the gap
    assert spectrum_blocks(exact, 0.01 + 1e-12, RTOL).block.tolist() == [0, 0]
    assert spectrum_blocks(np.array([1.0, 0.98]), GAP, RTOL).block.tolist() == [0, 1]


def test_blocks_are_vectorised_over_heads_and_offsets():
    rng = np.random.default_rng(0)
    sigma = -np.sort(-rng.uniform(0, 1, size=(3, 4, 16)), axis=-1)
    sigma[1, 2, 10:] = 0.0  # a rank-deficient head
    batched = spectrum_blocks(sigma, 0.05, RTOL)
    for index in np.ndindex(3, 4):
        single = spectrum_blocks(sigma[index], 0.05, RTOL)
        assert np.array_equal(batched.block[index], single.block)
        assert batched.numerical_rank[index] == single.numerical_rank
    assert batched.numerical_rank[1, 2] == 10


def test_degenerate_within_counts_blocks_that_reach_into_the_top():
    sigma = np.array(
        [
            [8.0, 6.0, 4.0, 3.99, 1.0],  # block at 2–3: inside the top 3
            [8.0, 6.0, 4.0, 2.0, 1.99],  # block at 3–4: beyond the top 3
            [8.0, 6.0, 4.0, 3.99, 3.98],  # block starting at k = 2 and ending beyond: counts
            [8.0, 6.0, 4.0, 0.0, 0.0],  # below-rank block: not a degenerate block
        ]
    )
    blocks = spectrum_blocks(sigma, GAP, RTOL)
    assert degenerate_within(blocks, 3).tolist() == [True, False, True, False]
    columns = degeneracy.spectra_columns(_svd_columns(sigma), GAP, RTOL, top=3)
    assert columns["first_degenerate"].tolist() == [2, 3, 2, -1]
    assert columns["numerical_rank"].tolist() == [5, 5, 5, 3]
    assert columns["n_blocks"].tolist() == [4, 4, 3, 4]
    np.testing.assert_allclose(columns["min_gap_top"], [0.0025, 0.25, 0.0025, 0.25])  # gaps of k < 3 to k + 1


def test_unsorted_spectra_are_refused():
    with pytest.raises(ValueError, match="descending"):
        spectrum_blocks(np.array([1.0, 2.0]), GAP, RTOL)


def _svd_columns(sigma: np.ndarray, offsets: int = 1) -> dict:
    rows = len(sigma)
    return {
        "model": ["m"] * rows,
        "variant": ["trained"] * rows,
        "layer": np.arange(rows) // (2 * offsets),
        "head": (np.arange(rows) // offsets) % 2,
        "offset": np.arange(rows) % offsets,
        "sigma": sigma,
    }


def test_spectra_table_round_trips_through_its_schema(tmp_path):
    sigma = np.array([[3.0, 2.0, 1.99, 0.5], [3.0, 1.0, 0.5, 0.0]], dtype=np.float32)
    columns = degeneracy.spectra_columns(_svd_columns(sigma), GAP, RTOL, top=2)
    path = io.write_table(tmp_path / "spectra.parquet", tables.HEAD_DEGENERACY_BLOCKS, columns, io.provenance("t"))
    frame = io.to_frame(io.read_table(path, tables.HEAD_DEGENERACY_BLOCKS))
    assert frame["block"][0].tolist() == [0, 1, 1, 2] and frame["block"][1].tolist() == [0, 1, 2, 3]
    assert frame["degenerate_top"].tolist() == [True, False]


# --------------------------------------------------------------------------------------------------
# Terms per block
# --------------------------------------------------------------------------------------------------


def test_block_terms_sum_degenerate_directions_and_keep_singletons_as_sad_shares():
    c = np.array([[4.0, -1.0, 2.0, 1.0, 0.5], [1.0, 1.0, 1.0, 1.0, 0.0]])
    singletons = np.tile(np.arange(5), (2, 1))
    merged = np.array([[0, 1, 1, 2, 3], [0, 1, 1, 2, 3]])
    np.testing.assert_allclose(block_sums(c, merged)[:, :4].sum(-1), c.sum(-1))
    alone = block_terms(c, singletons, 5)
    np.testing.assert_allclose(alone[0, :, 3], np.sort(np.abs(c[0]))[::-1] / np.abs(c[0]).sum())
    assert alone[0, 0, :3].tolist() == [0, 0, 4.0]
    terms = block_terms(c, merged, 2)
    assert terms.shape == (2, 2, 4)
    assert terms[0].tolist()[0][:3] == [0, 0, 4.0]  # then the block 1–2: −1 + 2 = 1, tied with k = 3 (first wins)
    assert terms[0, 1, :3].tolist() == [1, 2, 1.0]
    assert terms[1, 0, :3].tolist() == [1, 2, 2.0]  # the merged block outweighs every single direction


# --------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------

R = 4


def synthetic_frames(n_layers: int = 2, n_heads: int = 3, offsets: int = 2) -> dict[str, pd.DataFrame]:
    """Small explorer tables with the columns of their schemas (one head without examples, hostile token text)."""
    rng = np.random.default_rng(1)
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    sigma = np.array([[4.0, 2.0, 1.99, 0.0]] * (len(heads) * offsets), dtype=np.float32)
    svd = _svd_columns(sigma, offsets)
    svd["layer"], svd["head"] = (np.repeat([h[i] for h in heads], offsets) for i in (0, 1))
    columns = degeneracy.spectra_columns(svd, GAP, RTOL, top=3)
    spectra = pd.DataFrame({k: list(v) if np.ndim(v) > 1 else v for k, v in columns.items()})
    tokens = pd.DataFrame(
        {
            "model": "m",
            "variant": "trained",
            "prompt_set": ["ioi", "ioi", "plain"],
            "prompt": [0, 2, 0],
            "tokens": [[" When", " Mary", "</script>", " to"], [" A", " B"], ["<!--", " x", " y"]],
            "token_ids": [[5, 6, 7, 8], [9, 10], [11, 12, 13]],
        }
    )
    summary = pd.DataFrame(
        {
            "layer": [h[0] for h in heads],
            "head": [h[1] for h in heads],
            "prompt_set": "ioi",
            "n_recon_order": "signed",
            "n_pairs": 10,
            "median_sparseness": rng.uniform(0.2, 0.5, len(heads)),
            "null_median_sparseness": 0.45,
            "median_n_recon": [np.nan, *rng.integers(1, 9, len(heads) - 1)],
            "null_median_n_recon": 2.0,
            "share_by_rank": [rng.dirichlet(np.ones(R)) for _ in heads],
            "null_share_by_rank": [np.full(R, 1 / R) for _ in heads],
            "subspace_null_median_sparseness": 0.44,
            "covariance_null_median_sparseness": 0.43,
            "softcap_max_distortion": 0.0,
            **{f"{p}{tail}_bh": False for p in NULL_PREFIXES.values() for tail in ("sparser", "denser")},
            "null_sparser_bh": [True] + [False] * (len(heads) - 1),
        }
    )
    readouts = pd.DataFrame(
        [
            {"layer": layer, "head": head, "rank": k, "side": side, "pole": pole, "source": source, "order": order,
             "value": (1.0 if pole == "high" else -1.0) / (order + 1),
             "token": "</script>" if source == "embedding" else " Mary",
             "prompt_set": "ioi" if source == "context" else "", "prompt": 0 if source == "context" else -1,
             "position": 2 if source == "context" else -1}
            for layer, head in heads for k in range(2) for side in ("query", "key") for pole in ("high", "low")
            for source in ("context", "embedding") for order in range(2)
        ]
    )  # fmt: skip
    examples = pd.DataFrame(
        [
            {"layer": layer, "head": head, "example": e, "prompt_set": "ioi", "prompt": 0, "t": 3, "j": 3 - e,
             "offset": e,
             "attention": 0.9 - e / 10, "ltilde": 2.0, "n_recon": 2, "sparseness": 0.3, "top_rank": 1,
             "null_n_recon": np.nan if e else 3.0, "null_sparseness": 0.4, "subspace_null_sparseness": 0.41,
             "covariance_null_sparseness": np.nan,
             "contributions": np.array([0.5, 1.0, 0.4, 0.1], dtype=np.float32)}
            for layer, head in heads[1:] for e in range(2)
        ]
    )  # fmt: skip
    return {"spectra": spectra, "summary": summary, "readouts": readouts, "examples": examples, "tokens": tokens}


META = {
    "model": "m",
    "variant": "trained",
    "degeneracy_gap": GAP,
    "rank_rtol": RTOL,
    "top_directions": 3,
    "prompt_sets": ["ioi", "plain"],
    "summary_prompt_set": "ioi",
    "n_recon_order": "signed",
}
OPTIONS = {"example_terms": 3, "context_tokens": 2}


def page_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', html, re.S)
    assert match, "no inline JSON in the page"
    return json.loads(match.group(1))


def test_page_holds_every_head_with_blocks_readouts_and_examples():
    data = explorer_data(synthetic_frames(), OPTIONS, META)
    page = explorer_page.render_page(data)
    assert page_data(page) == json.loads(json.dumps(data))  # the inline JSON is the data, whole
    assert page.count("</script>") == 2  # the tokens' "</script>" and "<!--" are escaped
    assert data["nL"] == 2 and data["nH"] == 3 and data["r"] == R and data["offsets"] == 2
    assert data["meta"]["degenerate_spectra"] == 12 and data["meta"]["spectra"] == 12
    assert data["sets"] == ["ioi", "plain"] and data["prompts"][1] == [0, 2, [" A", " B"]]
    assert data["vocab"] == ["</script>"] and data["scale"] == explorer.SCALE == 10_000
    first, second = data["heads"][0], data["heads"][1]
    assert first["ex"] == [] and first["N"] is None  # no firing pair: NaN median → null
    assert first["sig"] == [1, 0, 0] and first["sS"] == 0.44 and first["cap"] == 0.0
    assert first["blocks"] == [[1, 2]] and first["nr"] == 3 and first["fd"] == 1 and first["deg"] == 2
    assert first["s"] == [10_000, 5000, 4975, 0]  # σ_k/σ_1 in units of 1/SCALE
    assert [d["k"] for d in first["ro"]] == [0, 1]
    # cells (query, high), (query, low), (key, high), (key, low), flat
    assert first["ro"][0]["c"][0] == [0, 2, 1.0, 0, 2, 0.5]  # prompt index, position, value, …
    assert first["ro"][0]["e"][3] == [0, -1.0, 0, -0.5]  # vocabulary index, value, …
    example = second["ex"][0]
    assert example[:11] == [0, 3, 3, 0.9, 2.0, 2, 3.0, 0.3, [0.4, 0.41, None], 1, 0]  # S: haar, subspace, covariance
    # terms by block: k = 1–2 (1.0 + 0.4) first, then k = 0, then k = 3; shares by block
    assert example[11] == [[1, 2, 1.4, 0.7], [0, 0, 0.5, 0.25], [3, 3, 0.1, 0.05]]
    assert second["ex"][1][6] is None  # null N_recon: no draw with ℓ̃ > 0


def test_page_marks_the_sae_hook_when_no_sae_stage_ran_and_lists_matches_when_one_did():
    frames = synthetic_frames()
    assert "No SAE stage ran" in explorer_page.render_page(explorer_data(frames, OPTIONS, META))
    sae = pd.DataFrame({"layer": [0], "head": [0], "rank": [1], "side": ["query"], "latent": [17], "cos": [0.8]})
    data = explorer_data(frames, OPTIONS, META, sae=sae)
    assert data["meta"]["sae"] and data["heads"][0]["ro"][1]["sae"] == [["query", 17, 0.8, "17"]]
    assert data["heads"][0]["ro"][0]["sae"] == [] and data["heads"][1]["ro"][0]["sae"] == []


def test_page_too_large_for_the_report_fails_naming_the_keys():
    assert explorer_page.check_report_size("x" * 1000, "p.html") == 1000
    with pytest.raises(ValueError, match=r"explorer\.n_tokens"):
        explorer_page.check_report_size("x" * (3 * 2**19), "p.html")  # 1.5 MiB: its data: URL exceeds 2 MiB


def test_page_builds_from_tables_on_disk(tmp_path):
    frames = synthetic_frames()
    schemas = {
        "spectra": tables.HEAD_DEGENERACY_BLOCKS,
        "readouts": tables.EXPLORER_READOUTS,
        "examples": tables.EXPLORER_EXAMPLES,
        "tokens": tables.EXPLORER_TOKENS,
    }
    paths = {}
    for name, schema in schemas.items():
        frame = frames[name].assign(model="m", variant="trained")
        for column in schema.column_names:
            if column not in frame:  # columns the page does not read
                frame[column] = {"token_id": 0, "context": "", "query_token": "", "key_token": ""}[column]
        record = io.provenance(
            f"explorer_{name}", {k: META[k] for k in ("degeneracy_gap", "rank_rtol", "top_directions")}
        )
        paths[name] = io.write_table(tmp_path / f"{name}.parquet", schema, _columns(frame, schema), record)
    summary = _summary_table(frames["summary"])
    paths["summary"] = io.write_table(tmp_path / "summary.parquet", tables.SAD_SUMMARY, summary, io.provenance("sad"))
    data = page_data(explorer_page.build_page(paths, "m", OPTIONS))
    assert data["meta"]["top_directions"] == 3 and data["meta"]["summary_prompt_set"] == "ioi"
    assert data["meta"]["prompt_sets"] == ["ioi", "plain"] and len(data["heads"]) == 6


def _columns(frame: pd.DataFrame, schema) -> dict:
    out = {}
    for column in schema.columns:
        values = frame[column.name].tolist()
        out[column.name] = np.stack(values) if column.is_tensor else values
    return out


def _summary_table(summary: pd.DataFrame) -> dict:
    n = len(summary)
    data = {c.name: summary[c.name].tolist() if c.name in summary else None for c in tables.SAD_SUMMARY.columns}
    for column in tables.SAD_SUMMARY.columns:
        if data[column.name] is None:
            data[column.name] = np.zeros((n, R), dtype=np.int64) if column.is_tensor else [0] * n
            if column.dtype == pa.float64() and not column.is_tensor:
                data[column.name] = [0.5] * n
    data["model"], data["variant"] = ["m"] * n, ["trained"] * n
    data["rank"] = [R] * n
    for name in ("share_by_rank", "null_share_by_rank"):
        data[name] = np.stack(summary[name].to_numpy())
    return data


def test_explorer_modules_import_without_torch():
    modules = "svalign.explorer.data, svalign.explorer.page, svalign.degeneracy"
    code = f"import sys, {modules}; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (the browser test runs the script)")
def test_page_script_parses():
    script = explorer_page._asset("explorer.js")
    result = subprocess.run(["node", "--check", "-"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sae_hook_columns_are_documented():
    assert set(explorer.SAE_COLUMNS) <= set(explorer.__doc__.replace("``", " ").split())


def test_explorer_config_defaults_are_documented_and_shipped(repo):
    """Every explorer key has a schema default and description, config.yaml sets each to it, and an omitted section
    is filled in."""
    import yaml
    from snakemake.utils import validate

    schema_path = repo / "workflow" / "schemas" / "config.schema.yaml"
    properties = yaml.safe_load(schema_path.read_text())["properties"]["explorer"]["properties"]
    shipped = yaml.safe_load((repo / "config.yaml").read_text())["explorer"]
    assert shipped == {name: spec["default"] for name, spec in properties.items()}
    assert all(spec.get("description") for spec in properties.values())
    config = {"toy": {"experiments": {"tiny": {"n_features": 4}}}}
    validate(config, str(schema_path))
    assert config["explorer"]["degeneracy_gap"] == 0.01 and config["explorer"]["prompt_sets"] == ["ioi", "plain"]


def test_sae_matches_read_the_sae_stages_alignment_table(tmp_path):
    """The SAE stage fills the hook: trained rows only, u/v named query/key, best |cos| as cos."""
    from svalign import io
    from svalign.explorer.data import SAE_COLUMNS, sae_matches
    from svalign.tables import SAE_ALIGNMENT

    rows = {
        "model": ["m"] * 3,
        "variant": ["trained", "trained", "random"],
        "layer": [1, 1, 1],
        "head": [0, 0, 0],
        "side": ["u", "v", "u"],
        "rank": [0, 0, 0],
        "sigma": [2.0, 2.0, 1.0],
        "best_cos": [0.9, 0.4, 0.2],
        "latent": [7, 3, 5],
        "frequency": [0.25, 0.01, 0.5],
        "null_mean": [0.2] * 3,
        "null_upper": [0.3] * 3,
    }
    io.write_table(tmp_path / "alignment.parquet", SAE_ALIGNMENT, rows, io.provenance("test"))
    matches = sae_matches(tmp_path / "alignment.parquet")
    assert matches[list(SAE_COLUMNS)].values.tolist() == [[1, 0, 0, "query", 7, 0.9], [1, 0, 0, "key", 3, 0.4]]
    assert matches["label"].tolist() == ["(active on 25.0% of corpus tokens)", "(active on 1.0% of corpus tokens)"]
