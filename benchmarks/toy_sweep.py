"""Sweep points that share shapes: one batched run vs one run per point, side by side.

    python benchmarks/toy_sweep.py [--steps 300] [--threads 1] [--json PATH]

Takes the default `toy.sweeps` of config.yaml and its points that share the base shapes (N, m, H equal; λ and S
vary), i.e. the points a batched run could merge. Arm 1 trains them one run per point (each run batching the
point's seeds, as `toy_sweep_point` jobs do); arm 2 trains all of them as one batched run (λ and S are
per-instance values, as `toy_sweep_group` jobs do). Same instances, same steps, same device; prints both times
and the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import yaml
from _record import add_json_option, write_record

from svalign.runtime import configure_torch, resolve_device
from svalign.toy.config import points_of_shape, sweep_config, sweep_points
from svalign.toy.train import train_toy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    add_json_option(parser)
    args = parser.parse_args()
    configure_torch(args.threads)
    device = resolve_device(args.device)
    with open("config.yaml") as handle:
        sweeps = yaml.safe_load(handle)["toy"]["sweeps"]
    base, seeds = sweeps["base"], sweeps["seeds"]
    points = sweep_points(base, sweeps["grid"])
    center = points[0]
    shared = points_of_shape(points, center)

    start = time.perf_counter()
    for point in shared:
        config = dataclasses.replace(sweep_config(base, [point], seeds), steps=args.steps, log_every=args.steps)
        train_toy(config, device, progress=False)
    per_point_s = time.perf_counter() - start

    # One run: (λ, S) of each point zipped with the seeds, exactly the instances of arm 1.
    merged = dataclasses.replace(sweep_config(base, shared, seeds), steps=args.steps, log_every=args.steps)
    start = time.perf_counter()
    train_toy(merged, device, progress=False)
    merged_s = time.perf_counter() - start
    n_instances = len(merged.instances())

    print(f"{len(shared)} sweep points sharing shapes x {len(seeds)} seeds, {args.steps} steps, {device}")
    print(f"  one run per point ({n_instances} instances in {len(shared)} runs): {per_point_s:7.2f} s")
    print(f"  one batched run   ({n_instances} instances in 1 run)  : {merged_s:7.2f} s")
    print(f"  speed-up of the batched run: {per_point_s / merged_s:.2f}x")
    write_record(
        args.json,
        "toy_sweep",
        "Sweep points sharing shapes: one run per point vs one batched run (`benchmarks/toy_sweep.py`)",
        ["arm", "points", "instances", "runs", "time s", "speed-up of the batched run"],
        [
            ["one run per point", len(shared), n_instances, len(shared), per_point_s, None],
            ["one batched run", len(shared), n_instances, 1, merged_s, per_point_s / merged_s],
        ],
        torch.get_num_threads(),
        str(device),
        [f"Default `toy.sweeps` of config.yaml, {len(seeds)} seeds per point, {args.steps} steps."],
    )


if __name__ == "__main__":
    main()
