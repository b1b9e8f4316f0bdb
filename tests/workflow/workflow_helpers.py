"""Helpers shared by the Snakemake end-to-end tests (importable: pytest puts this directory on sys.path)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
WORKFLOW_FILES = ["Snakefile", "config.yaml", "config", "workflow", "scripts", "envs", ".test"]
# The small end-to-end run: the whole toy stage, the dynamics stage (4 checkpoints), MiniLM weights -> SVD ->
# SAD, the results table and MiniLM's head explorer page, with the CI config (SmolLM2 disabled there).
SMALL_TARGETS = [
    "toy",
    "dynamics",
    "results/figures/svd/spectra_minilm.png",
    "results/figures/sad/heads_minilm.png",
    "results/report/claims.md",
    "results/explorer/minilm/explorer.html",
    "sae_all",
]
SMALL_CONFIG = ["--configfile", ".test/config.yaml"]  # last: --configfile takes every argument after it


def copy_workflow(repo: Path, dest: Path, extra: tuple[str, ...] = ()) -> Path:
    """Copy the workflow (not results), plus ``extra`` repository paths, into ``dest`` so runs never touch the
    checkout."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (*WORKFLOW_FILES, *extra):
        source, target = repo / name, dest / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    return dest


def run_snakemake(workdir: Path, *args: str, check: bool = True, cores: int = 2) -> subprocess.CompletedProcess:
    """Run Snakemake in ``workdir``; ``.stdout`` holds stdout and stderr together."""
    result = subprocess.run(
        [*SNAKEMAKE, "--cores", str(cores), *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout}")
    return result


def job_counts(output: str) -> dict[str, int]:
    """Rule -> job count from Snakemake's "Job stats" table (the last one printed), without the total."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Job stats:"]
    if not starts:
        return {}
    counts: dict[str, int] = {}
    for line in lines[starts[-1] + 3 :]:
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            break
        if fields[0] != "total":
            counts[fields[0]] = int(fields[1])
    return counts


def parquet_contents(results: Path) -> dict[str, bytes]:
    """Every Parquet table under ``results`` by relative path, as Arrow IPC bytes of its content.

    File metadata is dropped (provenance holds times); comparing bytes, not ``Table.equals``, makes two NaN
    with the same bits equal (unmatched pairs and BERT's logit difference are NaN by design).
    """
    contents = {}
    for path in sorted(results.rglob("*.parquet")):
        table = pq.read_table(path).replace_schema_metadata(None).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        contents[str(path.relative_to(results))] = sink.getvalue().to_pybytes()
    return contents
