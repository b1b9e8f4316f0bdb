"""Fixtures of the Snakemake end-to-end tests: a fresh workflow copy, and one finished small run per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from workflow_helpers import SMALL_CONFIG, SMALL_TARGETS, copy_workflow, run_snakemake

REPO = Path(__file__).resolve().parents[2]


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
