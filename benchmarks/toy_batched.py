"""Batched toy training of 16 instances vs 16 sequential one-instance runs, side by side.

    python benchmarks/toy_batched.py [--steps 300] [--instances 16] [--experiment single_pair] [--threads 2]
                                    [--json PATH]

Both arms train exactly the same instances (seeds 0..n-1, same config, same data streams) for the same number
of steps on the same device; the script checks that their final weights agree and prints the speed ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import yaml
from _record import add_json_option, write_record

from svalign.runtime import configure_torch, resolve_device
from svalign.toy.config import ToyConfig
from svalign.toy.train import train_toy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--instances", type=int, default=16)
    parser.add_argument("--experiment", default="single_pair", help="experiment of config.yaml to take shapes from")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    add_json_option(parser)
    args = parser.parse_args()

    configure_torch(args.threads)
    device = resolve_device(args.device)
    with open("config.yaml") as handle:
        experiment = yaml.safe_load(handle)["toy"]["experiments"][args.experiment]
    base = dataclasses.replace(
        ToyConfig.from_mapping(experiment),
        steps=args.steps,
        lambdas=(experiment.get("lambdas", [1.0])[0],),
        log_every=args.steps,
    )
    seeds = tuple(range(args.instances))

    start = time.perf_counter()
    batched = train_toy(dataclasses.replace(base, seeds=seeds), device, progress=False)
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    sequential = [train_toy(dataclasses.replace(base, seeds=(seed,)), device, progress=False) for seed in seeds]
    sequential_s = time.perf_counter() - start

    max_diff = max((batched.params.W_Q[i] - run.params.W_Q[0]).abs().max().item() for i, run in enumerate(sequential))
    print(f"device: {device} ({torch.get_num_threads()} threads), experiment {args.experiment}, {args.steps} steps")
    print(f"batched    {args.instances:>3} instances in one run : {batched_s:8.2f} s")
    print(f"sequential {args.instances:>3} one-instance runs    : {sequential_s:8.2f} s")
    print(f"speed-up batched vs sequential: {sequential_s / batched_s:.1f}x")
    print(f"max |W_Q batched - W_Q sequential|: {max_diff:.2e}")
    write_record(
        args.json,
        "toy_batched",
        "Batched toy training vs one run per instance (`benchmarks/toy_batched.py`)",
        ["arm", "instances", "runs", "time s", "speed-up"],
        [
            ["batched", args.instances, 1, batched_s, sequential_s / batched_s],
            ["sequential", args.instances, args.instances, sequential_s, 1.0],
        ],
        torch.get_num_threads(),
        str(device),
        [
            f"Experiment `{args.experiment}` of config.yaml, {args.steps} steps; final W_Q of the two arms agree "
            f"to {max_diff:.1e}."
        ],
    )


if __name__ == "__main__":
    main()
