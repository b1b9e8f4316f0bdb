"""The HTML report in a real browser: headless Chromium renders it without JavaScript errors and shows every figure.

``snakemake --report`` writes one self-contained HTML file whose React app draws everything from embedded data,
so a report can be written without error and still be blank or broken. Here Chromium (from Debian's packages,
installed by tests/browser/render_report.sh when missing; the test skips, saying why, when it cannot be) opens
the small run's report (both from tests/workflow/conftest.py) and tests/browser/report_browser.py clicks through it
like a reader: every category of the "Results" menu, every subcategory, and in each results table every row's
view (eye) and info buttons.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from report_browser import png_size, render_report

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def test_report_renders_every_figure_without_js_errors(small_run, small_report, chromium, tmp_path, capsys):
    # Expected: every PNG figure the run produced (each figure rule registers its PNG with report(); the PDF
    # twins are not registered).
    figures = sorted(p.relative_to(small_run).as_posix() for p in (small_run / "results" / "figures").rglob("*.png"))
    assert figures, "the small run produced no PNG figure under results/figures"

    rendered = render_report(small_report, tmp_path / "browser", chromium=chromium)
    summary = tmp_path / "browser" / "render.json"
    summary.write_text(json.dumps(asdict(rendered), indent=2))
    with capsys.disabled():
        print(
            f"\nreport in Chromium ({rendered.seconds:.1f} s): {len(rendered.entries)} results shown, "
            f"{len(figures)} figures on disk; walk: {summary}"
        )
        for name, path in rendered.screenshots.items():
            print(f"  screenshot ({name}): {path}")

    assert rendered.errors == [], "JavaScript errors while rendering the report:\n" + "\n".join(rendered.errors)

    # The report embeds exactly the registered outputs; its figures are the PNGs on disk.
    embedded_figures = sorted(p for p in rendered.embedded_results if p.startswith("results/figures/"))
    assert embedded_figures == figures, "the report's embedded results differ from the figures on disk"

    # What the reader sees: one row per result in the results tables reached from the menu, each naming
    # (in its info view) a distinct path; together exactly the embedded results.
    shown = rendered.shown_paths
    assert sum(view["rows"] for view in rendered.views) == len(shown)
    assert len(shown) == len(set(shown)), f"a result is listed twice: {shown}"
    assert sorted(shown) == sorted(rendered.embedded_results), "the menu does not lead to every embedded result"
    shown_figures = sorted(p for p in shown if p.startswith("results/figures/"))
    assert len(shown_figures) == len(figures) > 0
    assert shown_figures == figures
    assert sorted(rendered.categories) == sorted(rendered.embedded_categories)

    # Each figure shows as a decoded image of the file's own size, with its caption.
    for entry in rendered.entries:
        path, view = entry["path"], entry["view"]
        if path not in figures:  # e.g. the results table (CSV): a download link to its embedded data
            assert view["src_prefix"].startswith("data:"), entry
            continue
        assert view["kind"] == "img" and view["src_prefix"].startswith("data:image/png"), entry
        assert (view["width"], view["height"]) == png_size(small_run / path), f"{path} shows at the wrong size"
        assert entry["caption_chars"] > 0, f"{path} has no caption in the report"

    for path in rendered.screenshots.values():
        assert Path(path).stat().st_size > 10_000, f"{path} looks blank"
