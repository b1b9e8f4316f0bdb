"""One toy training step three ways, side by side: narrow products as written (``rows @ matrix``), transposed
(what ``svalign.toy.train`` does), and the transposed step under ``torch.compile`` (compile time included).

    python benchmarks/toy_step.py [--steps 300] [--threads 1] [--no-compile] [--json PATH]

Experiments: ``single_pair`` of config.yaml (6 instances, N = 20, D = H = 10) and the sweeps' base point (3
instances, 4 pairs): their products have 10 output columns, the shapes for which the transposed form was chosen.
Each arm trains the same seeds for the same steps from the same init; the table gives CPU seconds per step, the
speed-up over the plain arm, and the largest difference of the final weights from the plain arm's.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import yaml
from _record import add_json_option, write_record

from svalign.runtime import configure_torch
from svalign.toy import train
from svalign.toy.config import ToyConfig, sweep_config, sweep_points

ARMS = ("plain products", "transposed narrow products", "transposed + torch.compile")


def _experiments(steps: int) -> dict[str, ToyConfig]:
    with open("config.yaml") as handle:
        toy = yaml.safe_load(handle)["toy"]
    sweeps = toy["sweeps"]
    configs = {
        "single_pair": ToyConfig(**toy["experiments"]["single_pair"]),
        "sweep base": sweep_config(sweeps["base"], sweep_points(sweeps["base"], sweeps["grid"])[:1], sweeps["seeds"]),
    }
    return {name: dataclasses.replace(config, steps=steps, log_every=steps) for name, config in configs.items()}


def _run(config: ToyConfig, arm: str) -> tuple[float, dict[str, torch.Tensor]]:
    """CPU seconds of :func:`train.train_toy` under ``arm`` and its final weights (module state restored after)."""
    narrow, losses = train.NARROW_COLUMNS, train.toy_losses
    try:
        if arm == ARMS[0]:
            train.NARROW_COLUMNS = 0  # every product as written
        if arm == ARMS[2]:
            train.toy_losses = torch.compile(losses)
        start = time.process_time()
        run = train.train_toy(config, progress=False)
        return time.process_time() - start, run.params.tensors()
    finally:
        train.NARROW_COLUMNS, train.toy_losses = narrow, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile arm")
    add_json_option(parser)
    args = parser.parse_args()
    configure_torch(args.threads)
    arms = ARMS[:2] if args.no_compile else ARMS
    rows = []
    for name, config in _experiments(args.steps).items():
        timings = {arm: _run(config, arm) for arm in arms}
        plain_s, plain_weights = timings[ARMS[0]]
        for arm, (seconds, weights) in timings.items():
            drift = max(float((weights[k] - plain_weights[k]).abs().max()) for k in weights)
            rows.append([name, arm, 1000 * seconds / args.steps, plain_s / seconds, drift])
            print(
                f"{name:12s} {arm:28s} {1000 * seconds / args.steps:7.2f} ms/step  x{plain_s / seconds:.2f}  "
                f"max |Δweights| {drift:.1e}"
            )
    write_record(
        args.json,
        "toy_step",
        "The toy's training step: plain vs transposed narrow products vs torch.compile (`benchmarks/toy_step.py`)",
        ["experiment", "arm", "CPU ms per step", "speed-up over plain", "max |Δ final weights| vs plain"],
        rows,
        torch.get_num_threads(),
        "cpu",
        [
            f"{args.steps} steps from the seeded init, one evaluation at the end; CPU time of the whole run "
            "(the compile arm includes compiling).",
        ],
    )


if __name__ == "__main__":
    main()
