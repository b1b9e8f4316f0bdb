"""Fixtures of the Snakemake end-to-end tests: a fresh workflow copy, one finished small run per session with its
report, and headless Chromium for the browser tests; and the hook that makes the xdist groups hold."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from workflow_helpers import SMALL_CONFIG, SMALL_TARGETS, copy_workflow, run_snakemake

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "browser"))  # the browser walks: browser_common, report_browser, ...
from browser_common import ChromiumUnavailableError, ensure_chromium  # noqa: E402 - needs the line above

SMALL_REPORT = "results/report.html"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the workflow in a fresh directory (results never touch the checkout)."""
    return copy_workflow(REPO, tmp_path / "workflow-copy")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small end-to-end run, finished once and shared (tests that rerun jobs only touch figures)."""
    workdir = copy_workflow(REPO, tmp_path_factory.mktemp("small-run"))
    run_snakemake(workdir, *SMALL_TARGETS, *SMALL_CONFIG)
    return workdir


@pytest.fixture(scope="session")
def small_report(small_run: Path) -> Path:
    """The small run's HTML report (``snakemake --report``), written once for the browser tests."""
    run_snakemake(small_run, *SMALL_TARGETS, "--report", SMALL_REPORT, *SMALL_CONFIG)
    return small_run / SMALL_REPORT


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium's binary, installed with apt-get when missing (tests/browser/render_report.sh); the test
    skips, saying why, when it cannot be."""
    try:
        binary, seconds = ensure_chromium()
    except ChromiumUnavailableError as exc:
        pytest.skip(f"headless Chromium is not available and could not be installed: {exc}")
    if seconds > 5:
        print(f"\nchromium ready after {seconds:.0f} s (apt-get install)")
    return binary
