"""How long `snakemake -n` takes on this checkout (target: under 5 s on a finished workflow, so that checking a
plan, which users do before every run, stays interactive).

    python benchmarks/dry_run.py [--repeats 3] [--json PATH] [-- extra snakemake arguments]

Runs `snakemake -n --cores 8` (the default target, every job of config.yaml) --repeats times in the repository
root and prints each wall time, the median, and whether the workflow was finished ("Nothing to be done") or how
many jobs the plan holds. The first repeat pays the cold file cache; the median is the number to report.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _record import add_json_option, write_record

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("snakemake_args", nargs="*", help="extra arguments for snakemake (after --)")
    add_json_option(parser)
    args = parser.parse_args()
    command = [sys.executable, "-m", "snakemake", "-n", "--cores", "8", *args.snakemake_args]
    times, output = [], ""
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        output = result.stdout + result.stderr
        if result.returncode != 0:
            sys.exit(f"snakemake -n failed:\n{output}")
    if "Nothing to be done" in output:
        state = "finished workflow (nothing to be done)"
    else:
        total = [line.split()[1] for line in output.splitlines() if line.startswith("total")]
        state = f"unfinished workflow ({total[-1] if total else '?'} jobs planned)"
    print(f"snakemake -n on {state}")
    print("  wall times: " + ", ".join(f"{t:.2f} s" for t in times))
    print(f"  median: {statistics.median(times):.2f} s (target < 5 s)")
    write_record(
        args.json,
        "dry_run",
        "`snakemake -n` of the default target (`benchmarks/dry_run.py`)",
        ["workflow state", "repeats", "median s", "min s", "max s"],
        [[state, args.repeats, statistics.median(times), min(times), max(times)]],
        notes=["The first repeat pays the cold file cache; the median is the number to quote."],
    )


if __name__ == "__main__":
    main()
