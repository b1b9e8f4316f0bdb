"""Generated documentation pages: the configuration keys and the performance tables (torch-free).

    python -m svalign.docgen configuration > docs/configuration.md
    python -m svalign.docgen performance --benchmarks results/perf --logs results/logs > docs/performance.md

``configuration`` walks ``workflow/schemas/config.schema.yaml`` and lists every key by its dotted path with its
type, default and description: nested objects recurse (``toy.sweeps.grid.lam``), maps whose values have a schema
(``additionalProperties`` with a schema, e.g. ``models``) recurse under a ``<name>`` placeholder
(``models.<name>.source``), arrays of objects under ``[]``. A ``$defs`` object that several keys share is listed
once in a section of its own and linked from each key.

``performance`` renders one table per benchmark JSON file (written by the scripts in ``benchmarks/`` with
``--json PATH``; the format is :data:`BENCHMARK_KEYS`) and one table of the last workflow run from the ``usage:``
line that ends every rule log (``svalign.runtime.process_usage``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "BENCHMARK_KEYS",
    "SCHEMA_PATH",
    "STAGES",
    "ConfigKey",
    "JobUsage",
    "config_keys",
    "configuration_markdown",
    "jobs_span_s",
    "main",
    "parse_usage",
    "performance_markdown",
    "read_usage",
    "stage_of",
    "stage_section",
]

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
CONFIGURATION_COMMAND = "python -m svalign.docgen configuration > docs/configuration.md"
PERFORMANCE_COMMAND = (
    "python -m svalign.docgen performance --benchmarks results/perf --logs results/logs > docs/performance.md"
)
# A benchmark JSON file: what it measured (title, command), on what (machine), and one table (columns, rows), plus
# optional `more_tables` (each with caption, columns, rows) of the same run.
BENCHMARK_KEYS = ("benchmark", "title", "command", "machine", "columns", "rows", "notes")
MAP_PLACEHOLDER = "<name>"


# --------------------------------------------------------------------------------------------------
# Configuration keys
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigKey:
    """One documented key: dotted path, rendered type, rendered default ("" if none), description."""

    path: str
    type: str
    default: str
    description: str


def _ref_name(node: Mapping[str, Any]) -> str | None:
    ref = node.get("$ref")
    if ref is None:
        return None
    if not str(ref).startswith("#/$defs/"):
        raise ValueError(f"only local #/$defs references are supported, not {ref!r}")
    return str(ref).removeprefix("#/$defs/")


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """The node with its ``$ref`` merged in (the referring node's own keys, e.g. ``default``, win)."""
    name = _ref_name(node)
    if name is None:
        return dict(node)
    if name not in defs:
        raise ValueError(f"unknown $defs entry {name!r}")
    merged = _resolve(defs[name], defs)
    merged.update({key: value for key, value in node.items() if key != "$ref"})
    return merged


def _count_refs(node: Any, counts: dict[str, int]) -> dict[str, int]:
    if isinstance(node, Mapping):
        name = _ref_name(node) if "$ref" in node else None
        if name is not None:
            counts[name] = counts.get(name, 0) + 1
        for value in node.values():
            _count_refs(value, counts)
    elif isinstance(node, list):
        for value in node:
            _count_refs(value, counts)
    return counts


def _is_object(node: Mapping[str, Any]) -> bool:
    types = node.get("type")
    types = types if isinstance(types, list) else [types]
    return "object" in types or "properties" in node


def _number(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _bounds(node: Mapping[str, Any]) -> str:
    parts = []
    for key, symbol in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in node:
            parts.append(f"{symbol} {_number(node[key])}")
    return ", ".join(parts)


def _type_text(node: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    """``integer ≥ 1``, ``string: auto | cpu``, ``array of number ≥ 0``, ``number or null``, ``map``."""
    node = _resolve(node, defs)
    types = node.get("type", "any")
    types = list(types) if isinstance(types, list) else [str(types)]
    nullable = "null" in types and len(types) > 1
    text = " or ".join(t for t in types if not (nullable and t == "null"))
    if "enum" in node:
        text += ": " + " \\| ".join(f"`{_number(value)}`" for value in node["enum"])
    bounds = _bounds(node)
    if bounds:
        text += " " + bounds
    if "array" in types and isinstance(node.get("items"), Mapping):
        text = text.replace("array", f"array of {_type_text(node['items'], defs)}", 1)
    if isinstance(node.get("additionalProperties"), Mapping) and not node.get("properties"):
        text = f"map of `{MAP_PLACEHOLDER}` → {_type_text(node['additionalProperties'], defs)}"
    return text + (", or null" if nullable else "")


def _flow(value: Any) -> str:
    """A default as compact YAML flow text (``[0, 1, 2]``, ``{n_features: 100, ...}``, ``null``)."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and (value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5)):
        return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m[1].replace("+", "") + m[2], f"{value:g}")
    return str(value)


def _description(node: Mapping[str, Any]) -> str:
    return " ".join(str(node.get("description", "")).split()).replace("|", "\\|").replace("<", "\\<")


def _walk(
    node: Mapping[str, Any], path: str, defs: Mapping[str, Any], shared: set[str], required: bool
) -> Iterator[ConfigKey]:
    ref = _ref_name(node) if "$ref" in node else None
    resolved = _resolve(node, defs)
    description = _description(resolved)
    if required:
        description = ("**Required.** " + description).strip()
    default = _flow(resolved["default"]) if "default" in resolved else ""
    if ref in shared:
        link = f"[{ref}](#{_slug(_def_heading(ref))})"
        yield ConfigKey(path, f"object: {link}", f"`{default}`" if default else "", description)
        return
    if path:
        yield ConfigKey(path, _type_text(resolved, defs), f"`{default}`" if default else "", description)
    properties = resolved.get("properties") or {}
    needed = set(resolved.get("required") or [])
    for name, child in properties.items():
        yield from _walk(child, f"{path}.{name}" if path else name, defs, shared, name in needed)
    values = resolved.get("additionalProperties")
    if isinstance(values, Mapping) and _is_object(_resolve(values, defs)):
        yield from _walk(values, f"{path}.{MAP_PLACEHOLDER}", defs, shared, False)
    items = resolved.get("items")
    if isinstance(items, Mapping) and _is_object(_resolve(items, defs)):
        yield from _walk(items, f"{path}[]", defs, shared, False)


def _shared_defs(schema: Mapping[str, Any]) -> set[str]:
    """``$defs`` objects referenced more than once: documented once, in their own section."""
    defs = schema.get("$defs") or {}
    counts = _count_refs({key: value for key, value in schema.items() if key != "$defs"}, {})
    for value in defs.values():
        _count_refs(value, counts)
    return {name for name, n in counts.items() if n > 1 and _is_object(_resolve(defs[name], defs))}


def config_keys(schema: Mapping[str, Any]) -> dict[str, list[ConfigKey]]:
    """Every key of the schema by section: each top-level key, then each shared ``$defs`` object."""
    defs = schema.get("$defs") or {}
    shared = _shared_defs(schema)
    needed = set(schema.get("required") or [])
    sections: dict[str, list[ConfigKey]] = {}
    for name, node in (schema.get("properties") or {}).items():
        sections[name] = list(_walk(node, name, defs, shared, name in needed))
    for name in sorted(shared):
        sections[_def_heading(name)] = [
            key for key in _walk({"$ref": f"#/$defs/{name}"}, "", defs, set(), False) if key.path
        ]
    return sections


def _def_heading(name: str) -> str:
    return f"{name} (shared)"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def configuration_markdown(schema: Mapping[str, Any], source: str = "workflow/schemas/config.schema.yaml") -> str:
    """The configuration page: one table per top-level key (and per shared ``$defs`` object)."""
    sections = config_keys(schema)
    lines = [
        "# Configuration keys",
        "",
        f"Generated by `{CONFIGURATION_COMMAND}` (or `make docs`) from `{source}`; do not edit by hand. "
        "Every key of `config.yaml` is validated against that schema before any job runs: an unknown key or a bad "
        "value fails with a message naming the key, and `svalign.config.check_config` adds the checks that span "
        "several keys. A key left out takes its default. "
        f"`{MAP_PLACEHOLDER}` stands for a name you choose (a map key); `[]` for each item of a list.",
        "",
    ]
    description = _description(schema)
    if description:
        lines += [description, ""]
    lines += ["Sections: " + ", ".join(f"[`{name}`](#{_slug(name)})" for name in sections) + ".", ""]
    links = {
        name: [key.path for keys in sections.values() for key in keys if f"(#{_slug(name)})" in key.type]
        for name in sections
    }
    for name, keys in sections.items():
        lines += [f"## {name}", ""]
        if links[name]:
            lines += ["The keys under " + ", ".join(f"`{path}`" for path in links[name]) + ":", ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for key in keys:
            lines.append(f"| `{key.path}` | {key.type} | {key.default} | {key.description} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Performance
# --------------------------------------------------------------------------------------------------

USAGE = re.compile(r"usage: cpu (?P<cpu>[\d.]+) s, wall (?P<wall>[\d.]+) s, peak rss (?P<rss>[\d.]+) MB")
THREADS = re.compile(r"threads: torch (?P<threads>\d+)")
DEVICE = re.compile(r"\bon (?P<device>cpu|cuda(?::\d+)?)\b")


STAGES = (
    ("toy", ("toy_",)),
    ("weights + SVD", ("convert_", "extract_weights", "svd")),
    ("SAD", ("sad",)),
    ("SAE", ("sae_",)),
    ("dynamics", ("dynamics_",)),
    ("explorer", ("explorer_",)),
    ("results table", ("results_table",)),
)
"""Pipeline stages and the rule-name prefixes of their jobs (a stage's figure rules count with it)."""
STAMP = re.compile(r"(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")  # at the start of a log line


def stage_of(rule: str) -> str:
    """The :data:`STAGES` stage of a rule (``other`` when no prefix matches)."""
    return next((stage for stage, prefixes in STAGES if rule.startswith(prefixes)), "other")


@dataclass(frozen=True)
class JobUsage:
    """One job's resource use, from the last ``usage:`` line of its log (``end``: that line's time stamp)."""

    rule: str
    job: str
    cpu_s: float
    wall_s: float
    peak_rss_mb: float
    threads: int | None
    devices: tuple[str, ...] = ()
    end: datetime | None = None


def _last_usage(text: str) -> re.Match | None:
    """The last ``usage:`` match of a log, or None."""
    matches = list(USAGE.finditer(text))
    return matches[-1] if matches else None


def _usage_values(match: re.Match) -> tuple[float, float, float]:
    return float(match["cpu"]), float(match["wall"]), float(match["rss"])


def parse_usage(text: str) -> tuple[float, float, float] | None:
    """(CPU s, wall s, peak RSS MB) of the last ``usage:`` line in a log, or None."""
    last = _last_usage(text)
    return None if last is None else _usage_values(last)


def read_usage(logs: Path) -> list[JobUsage]:
    """Every job log under ``logs`` with a ``usage:`` line: ``<rule>.log`` or ``<rule>/<job>.log``."""
    jobs = []
    for path in sorted(logs.rglob("*.log")):
        text = path.read_text(errors="replace")
        last = _last_usage(text)
        if last is None:
            continue
        relative = path.relative_to(logs)
        rule = relative.parts[0].removesuffix(".log")
        job = "/".join(relative.parts[1:]).removesuffix(".log")
        threads = THREADS.search(text)
        devices = tuple(sorted({match["device"] for match in DEVICE.finditer(text)}))
        stamp = STAMP.match(text, text.rfind("\n", 0, last.start()) + 1)  # the start of the usage line
        end = datetime.strptime(stamp["stamp"], "%Y-%m-%d %H:%M:%S") if stamp else None
        jobs.append(
            JobUsage(rule, job, *_usage_values(last), int(threads["threads"]) if threads else None, devices, end)
        )
    return jobs


def jobs_span_s(jobs: Sequence[JobUsage]) -> float | None:
    """Seconds from the first job's start (its end minus its wall time) to the last job's end, from the time stamps
    of the ``usage:`` lines: the run's wall time without Snakemake's start-up and the report."""
    timed = [job for job in jobs if job.end is not None]
    if not timed:
        return None
    start = min(job.end.timestamp() - job.wall_s for job in timed)
    return max(job.end.timestamp() for job in timed) - start


def _stage_cpu(jobs: Sequence[JobUsage]) -> dict[str, list[JobUsage]]:
    by_stage: dict[str, list[JobUsage]] = {stage: [] for stage, _ in STAGES}
    for job in jobs:
        by_stage.setdefault(stage_of(job.rule), []).append(job)
    return {stage: group for stage, group in by_stage.items() if group}


def _largest(group: Sequence[JobUsage], count: int = 3) -> str:
    top = sorted(group, key=lambda job: -job.cpu_s)[:count]
    return ", ".join(f"`{job.rule}`{' ' + job.job if job.job else ''} {job.cpu_s:.0f} s" for job in top)


def stage_section(jobs: Sequence[JobUsage], baseline: Sequence[JobUsage] = (), label: str = "baseline") -> list[str]:
    """The stage table: job CPU per :data:`STAGES` stage, its largest jobs and, given a ``baseline`` run's jobs, that
    run's CPU beside it and the ratio; then both runs' total CPU and job span (:func:`jobs_span_s`)."""
    now, before = _stage_cpu(jobs), _stage_cpu(baseline)
    columns = ["stage", "jobs", "job CPU s", *([f"{label}: job CPU s", "÷ " + label] if baseline else []), "largest"]
    rows = []
    for stage in [*now, *(stage for stage in before if stage not in now)]:
        group, old = now.get(stage, []), before.get(stage, [])
        cpu, old_cpu = sum(job.cpu_s for job in group), sum(job.cpu_s for job in old)
        ratio = [f"{old_cpu:.1f}", f"{cpu / old_cpu:.2f}" if old_cpu else "–"] if baseline else []
        rows.append([stage, len(group), f"{cpu:.1f}", *ratio, _largest(group)])
    total, old_total = sum(job.cpu_s for job in jobs), sum(job.cpu_s for job in baseline)
    ratio = [f"{old_total:.1f}", f"{total / old_total:.2f}"] if baseline else []
    rows.append(["**all**", len(jobs), f"{total:.1f}", *ratio, ""])
    lines = ["## Stages", ""]
    if baseline:
        lines += [f"This run beside {label} (another run's rule logs), job CPU per stage.", ""]
    lines += [*_table(columns, rows), ""]
    for name, group in (("this run", jobs), (label, baseline)):
        span = jobs_span_s(group) if group else None
        if span is not None:
            lines.append(
                f"- {name}: {len(group)} jobs, {sum(job.cpu_s for job in group):.1f} s of job CPU, "
                f"{span / 60:.1f} min from the first job's start to the last job's end."
            )
    return [*lines, ""]


def _provided_cores(logs: Path) -> str | None:
    """``Provided cores: N`` of the newest Snakemake log of the run that wrote ``logs`` (``<dir>/.snakemake/log``)."""
    for base in (logs.parent.parent, logs.parent):
        found = sorted((base / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
        for path in reversed(found):
            match = re.search(r"Provided cores: (\d+)", path.read_text(errors="replace"))
            if match:
                return match.group(1)
    return None


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return _flow(value)
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ") if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) < 1e-3:
            return f"{value:.1e}"
        if 0.999 <= abs(value) < 1:  # |cos| near 1: the digits that matter are the nines
            return f"{value:.7f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_format(value) for value in row) + " |" for row in rows]
    return lines


def _machine_text(machine: Mapping[str, Any]) -> str:
    parts = []
    if "cpus" in machine:
        parts.append(f"{machine['cpus']} CPUs")
    if "threads" in machine:
        parts.append(f"torch threads {machine['threads']}")
    if "device" in machine:
        parts.append(f"device `{machine['device']}`")
    if "torch" in machine:
        parts.append(f"torch {machine['torch']}")
    loads = [machine.get("load_average_start"), machine.get("load_average_end")]
    if all(load is not None for load in loads):
        parts.append(f"load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end")
    return ", ".join(parts)


def _benchmark_section(record: Mapping[str, Any], source: str) -> list[str]:
    missing = [key for key in BENCHMARK_KEYS if key not in record and key != "notes"]
    if missing:
        raise ValueError(f"{source}: benchmark record lacks {missing}")
    lines = [
        f"## {record['title']}",
        "",
        f"`{record['command']}` on {_machine_text(record['machine'])}.",
        "",
        *_table(record["columns"], record["rows"]),
        "",
    ]
    for table in record.get("more_tables") or []:
        lines += [f"{table['caption']}:", "", *_table(table["columns"], table["rows"]), ""]
    lines += [f"- {note}" for note in record.get("notes") or []]
    return [*lines, ""] if record.get("notes") else lines


def _usage_row(label: str, group: Sequence[JobUsage]) -> list[Any]:
    """Jobs, CPU s and wall s summed, the longest job's wall s, the largest peak RSS (seconds to 0.1 s, MB)."""
    return [
        label,
        len(group),
        f"{sum(job.cpu_s for job in group):.1f}",
        f"{sum(job.wall_s for job in group):.1f}",
        f"{max(job.wall_s for job in group):.1f}",
        f"{max(job.peak_rss_mb for job in group):.0f}",
    ]


def _usage_section(jobs: Sequence[JobUsage], logs: Path, slowest: int = 10) -> list[str]:
    cores = _provided_cores(logs)
    threads = sorted({job.threads for job in jobs if job.threads is not None})
    devices = sorted({device for job in jobs for device in job.devices})
    lines = [
        "## Workflow run: time and memory per rule",
        "",
        f"The last `usage:` line of each of the {len(jobs)} rule logs under `{logs}` (every compute job writes one: "
        "CPU time of all its threads, wall time since its process started, peak RSS; `svalign.runtime.process_usage`)"
        + (f"; Snakemake ran with {cores} cores" if cores else "")
        + (f", torch threads per job {', '.join(map(str, threads))}" if threads else "")
        + (f", devices named in the logs {', '.join(f'`{d}`' for d in devices)}" if devices else "")
        + f"; {os.cpu_count()} CPUs where this page was generated. Jobs whose log has no `usage:` line are not "
        "listed. Wall time includes waiting for a free CPU, so on a shared machine CPU time is the steadier "
        "number. Snakemake's own per-job numbers are under `results/benchmarks/`.",
        "",
    ]
    by_rule: dict[str, list[JobUsage]] = {}
    for job in jobs:
        by_rule.setdefault(job.rule, []).append(job)
    groups = sorted(by_rule.items(), key=lambda item: -sum(job.wall_s for job in item[1]))
    rows = [_usage_row(rule, group) for rule, group in groups] + [_usage_row("**all**", jobs)]
    columns = ["rule", "jobs", "CPU s (sum)", "wall s (sum)", "wall s (longest job)", "peak RSS MB (largest)"]
    lines += [*_table(columns, rows), ""]
    longest = sorted(jobs, key=lambda job: -job.wall_s)[:slowest]
    lines += [f"The {len(longest)} longest jobs:", ""]
    columns = ["rule", "job", "CPU s", "wall s", "peak RSS MB"]
    lines += _table(
        columns, [[j.rule, j.job or "–", f"{j.cpu_s:.1f}", f"{j.wall_s:.1f}", f"{j.peak_rss_mb:.0f}"] for j in longest]
    )
    return [*lines, ""]


def performance_markdown(
    benchmarks: Path | None, logs: Path | None, baseline: Path | None = None, label: str = "baseline"
) -> str:
    """The performance page: the workflow run's stage and usage tables (beside a ``baseline`` run's logs, labelled
    ``label``, when given), then one table per benchmark JSON file."""
    lines = [
        "# Performance",
        "",
        f"Generated by `{PERFORMANCE_COMMAND}` (`make perf-docs` runs the benchmarks with `--json` first); do not "
        "edit by hand. Each table states the command and the machine that produced it. Timings on shared or "
        "loaded machines vary; compare numbers only within one table.",
        "",
    ]
    if logs is not None:
        jobs = read_usage(logs)
        if jobs:
            lines += stage_section(jobs, read_usage(baseline) if baseline else (), label)
        lines += _usage_section(jobs, logs) if jobs else [f"No `usage:` lines under `{logs}`.", ""]
    if benchmarks is not None:
        files = sorted(benchmarks.glob("*.json"))
        if files:
            lines += ["Benchmarks: " + ", ".join(f"`{path.stem}`" for path in files) + ".", ""]
        for path in files:
            lines += _benchmark_section(json.loads(path.read_text()), str(path))
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """``configuration`` or ``performance``, written to standard output."""
    parser = argparse.ArgumentParser(prog="python -m svalign.docgen", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="page", required=True)
    configuration = commands.add_parser("configuration", help="docs/configuration.md from the config schema")
    configuration.add_argument("--schema", type=Path, default=SCHEMA_PATH)
    performance = commands.add_parser("performance", help="docs/performance.md from benchmark JSON and rule logs")
    performance.add_argument("--benchmarks", type=Path, help="folder of benchmark JSON files (benchmarks/*.py --json)")
    performance.add_argument("--logs", type=Path, help="a finished run's results/logs")
    performance.add_argument("--baseline", type=Path, help="another run's results/logs, shown beside it per stage")
    performance.add_argument("--baseline-label", default="baseline", help="what the baseline run was")
    args = parser.parse_args(argv)
    if args.page == "configuration":
        schema = yaml.safe_load(args.schema.read_text())
        source = os.path.relpath(args.schema, ROOT) if args.schema.is_absolute() else str(args.schema)
        sys.stdout.write(configuration_markdown(schema, source))
    else:
        sys.stdout.write(performance_markdown(args.benchmarks, args.logs, args.baseline, args.baseline_label))


if __name__ == "__main__":
    main()
