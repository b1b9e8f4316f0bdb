"""Runtime plumbing shared by every stage: devices, seeds, threads, determinism, rule logging, shared errors.

Torch is imported inside the functions that need it: figure, table and report scripts log through
:func:`rule_logging` without paying for a torch import.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np
import psutil

if TYPE_CHECKING:
    import torch

__all__ = ["TrainingDivergedError", "configure_torch", "derive_seed", "resolve_device", "rule_logging"]

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """Training produced a non-finite or exploding loss (toy and dynamics training alike)."""


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` -> the first visible CUDA device if there is one, else CPU; ``cpu``/``cuda`` as asked.

    Honours ``CUDA_VISIBLE_DEVICES`` (set by SLURM for ``--gpus``): "cuda" is the first *visible* device.
    """
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but torch sees no CUDA device (use device: auto or cpu)")
    # Deterministic cuBLAS needs a fixed workspace; it must be set before the first cuBLAS call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.device("cuda", torch.cuda.current_device())


def configure_torch(threads: int | None = None) -> None:
    """Deterministic kernels, a thread count matching the rule's ``threads:``, no denormals.

    CPU denormals slow the toy's training about 8× near convergence without changing results.
    """
    import torch

    if threads:
        torch.set_num_threads(max(1, int(threads)))
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        # The public call imports torch._inductor only to set inductor's own flag: 1.2 s of CPU per job, for a
        # compiler no rule uses. The switch the eager kernels read is this one (torch.are_deterministic_algorithms_
        # enabled() reads it back); a job that compiles sets inductor's flag through the public call above.
        torch._C._set_deterministic_algorithms(True, warn_only=True)
    torch.set_flush_denormal(True)
    # Stated in every rule log, so a run can show that no job used more threads than its rule asked for.
    log.info("threads: torch %d, OMP_NUM_THREADS=%s", torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one random stream (``purpose``) of one run seed.

    Streams for different purposes (init, training data, evaluation data) never overlap, and a
    stream depends only on ``(seed, purpose)``.
    """
    entropy = [int(seed), *purpose.encode()]
    return int(np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


def process_usage() -> str:
    """This process's CPU time (user + system, every thread, imports included), wall time since it started and peak
    RSS: exact per job, where Snakemake's benchmark files sample CPU time (every 30 s after the first 15 s, so a
    longer job's last stretch is missed)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = psutil.Process().create_time()
    return (
        f"usage: cpu {usage.ru_utime + usage.ru_stime:.1f} s, wall {time.time() - started:.1f} s, "
        f"peak rss {usage.ru_maxrss / 1024:.0f} MB"
    )


@contextmanager
def rule_logging(log_path: str | os.PathLike[str] | None, level: int = logging.INFO) -> Iterator[TextIO]:
    """Send logging (and the returned stream, for tqdm) to a rule's ``log:`` file, else to stderr."""
    handle: TextIO
    if log_path is None:
        handle = sys.stderr
    else:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_path, "w", buffering=1)  # noqa: SIM115 - closed below
    handler = logging.StreamHandler(handle)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield handle
    except BaseException:
        log.exception("rule failed")
        raise
    else:
        log.info("%s", process_usage())
    finally:
        root.removeHandler(handler)
        if handle is not sys.stderr:
            handle.close()
