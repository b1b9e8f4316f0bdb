"""The `--json PATH` option of every benchmark: one table and the machine it was measured on.

The file is what `python -m svalign.docgen performance --benchmarks DIR` renders into docs/performance.md: keys
`benchmark`, `title`, `command` (as typed, without `--json`), `machine` (CPUs, torch threads, device, torch
version, load average at the start and the end), `columns`, `rows` (numbers stay numbers; the page formats them),
`notes` and, optionally, `more_tables` (each with `caption`, `columns`, `rows`). The printed output of each
benchmark is unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["LOAD_AT_START", "add_json_option", "write_record"]

LOAD_AT_START = os.getloadavg()[0]  # this module is imported before any benchmark starts working


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--json PATH``: also write the result table there (for docs/performance.md)."""
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the result table as JSON here")


def _command() -> str:
    argv, kept, skip = sys.argv[1:], [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            kept.append(arg)
    script = Path(sys.argv[0])
    shown = f"benchmarks/{script.name}" if script.parent.name == "benchmarks" else str(script)
    return shlex.join(["python", shown, *kept])


def write_record(
    path: Path | None,
    benchmark: str,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    threads: int | None = None,
    device: str | None = None,
    notes: Sequence[str] = (),
    more_tables: Sequence[dict[str, Any]] = (),
) -> None:
    """Write the benchmark's table to ``path`` (nothing when ``path`` is None).

    ``more_tables``: further tables of the same run, each ``{"caption", "columns", "rows"}``.
    """
    if path is None:
        return
    machine: dict[str, Any] = {"cpus": os.cpu_count()}
    if threads is not None:
        machine["threads"] = threads
    if device is not None:
        machine["device"] = device
    if "torch" in sys.modules:
        machine["torch"] = sys.modules["torch"].__version__
    machine["load_average_start"] = LOAD_AT_START
    machine["load_average_end"] = os.getloadavg()[0]
    record = {
        "benchmark": benchmark,
        "title": title,
        "command": _command(),
        "machine": machine,
        "columns": list(columns),
        "rows": [list(row) for row in rows],
        "notes": list(notes),
    }
    if more_tables:
        record["more_tables"] = [dict(table) for table in more_tables]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
