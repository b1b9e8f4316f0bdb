"""The head explorer in a real browser: headless Chromium opens MiniLM's page from the small run, picks three heads
(one of them with a degenerate block among its leading directions) and finds each one's spectrum, token read-outs
and SAD examples drawn, with no JavaScript error; the report links the page under its own category.

Chromium and the small run with its report are the session's (tests/workflow/conftest.py: Debian's package, installed
when missing; the test skips, saying why, when it cannot be); the walk is tests/browser/explorer_browser.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
from explorer_browser import render_explorer, spread_heads
from workflow_helpers import SMALL_CONFIG, SMALL_TARGETS, run_snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

PAGE = "results/explorer/minilm/explorer.html"


def page_data(path: Path) -> dict:
    match = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', path.read_text(), re.S)
    assert match, f"{path} holds no inline JSON"
    return json.loads(match.group(1))


def heads_to_pick(data: dict) -> list[str]:
    """Two heads spread over the grid and one with a degenerate block among its top directions (never the head the
    page opens on, so every pick redraws)."""
    top = data["meta"]["top_directions"]
    cells = [f"{h['l']}.{h['h']}" for h in data["heads"]]
    degenerate = [f"{h['l']}.{h['h']}" for h in data["heads"] if 0 <= h["fd"] < top]
    assert degenerate, "no MiniLM head has a degenerate block among its top directions"
    spread = [cell for cell in spread_heads(cells, "", 3) if cell not in degenerate[:1]][:2]
    return [*spread, degenerate[0]]


def test_explorer_page_draws_three_heads_without_js_errors(small_run, small_report, chromium, tmp_path, capsys):
    assert PAGE in SMALL_TARGETS
    run_snakemake(small_run, PAGE, *SMALL_CONFIG)  # made by the small run: nothing to do
    page = small_run / PAGE
    data = page_data(page)
    assert len(data["heads"]) == data["nL"] * data["nH"] == 72
    heads = {f"{h['l']}.{h['h']}": h for h in data["heads"]}
    picks = heads_to_pick(data)

    rendered = render_explorer(page, tmp_path / "browser", picks, chromium=chromium)
    (tmp_path / "browser" / "render.json").write_text(json.dumps(asdict(rendered), indent=2, ensure_ascii=False))
    with capsys.disabled():
        print(
            f"\nexplorer in Chromium ({rendered.seconds:.1f} s): {page.stat().st_size / 2**20:.2f} MiB, heads {picks}"
        )
    assert rendered.errors == [], "JavaScript errors in the explorer page:\n" + "\n".join(rendered.errors)

    assert [picked["head"] for picked in rendered.picked] == picks
    for picked in rendered.picked:
        head = heads[picked["head"]]
        layer, index = picked["head"].split(".")
        assert picked["title"] == f"Layer {layer}, head {index}" and picked["selected"] == [picked["head"]]
        assert picked["bars"] == data["r"] == 32  # one bar per singular value
        assert picked["readouts"] == len(head["ro"]) > 0
        contexts = sum(len(cell) // 3 for d in head["ro"] for cell in d["c"])  # flat: prompt, position, value
        assert len(picked["contexts"]) == contexts > 0  # every context read-out, its token highlighted
        assert len(picked["embedding_lines"]) == 4 * len(head["ro"])
        assert all(line.startswith("embedding: ") and len(line) > 12 for line in picked["embedding_lines"])
        # the SAE hook, filled by the SAE stage (MiniLM's site is layer 1): one line per direction, latents there
        assert len(picked["sae_lines"]) == len(head["ro"]) and all(
            line.startswith("SAE latents: ") for line in picked["sae_lines"]
        )
        if layer == "1":
            assert all("query #" in line and "key #" in line for line in picked["sae_lines"])
        assert picked["examples"] == len(head["ex"]) > 0
        assert picked["example_tokens"] >= 2 * picked["examples"]  # query and key highlighted in every row
        assert len(picked["example_terms"]) == sum(len(example[-1]) for example in head["ex"])
    degenerate = rendered.picked[-1]
    assert any("degenerate block" in note for note in degenerate["block_notes"])

    # The report lists the page under its own category.
    report = small_report.read_text(errors="replace")
    assert "Head explorer" in report and PAGE in report
