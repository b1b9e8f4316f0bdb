"""The documentation: links and anchors resolve, generated pages are current, the README stays short."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from svalign import docgen

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "profiles" / "README.md"]
README_MAX_LINES = 220

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, CODE_SPAN.sub("", line)))
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup dropped, lower case, punctuation stripped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated slugs get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    text = path.read_text()
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        match = HEADING.match(line) if not fenced else None
        if match:
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Relative links of a page whose file or #anchor does not exist (http(s) and mailto links are not checked)."""
    problems = []
    for number, line in _prose_lines(page.read_text()):
        for match in LINK.finditer(line):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(root)}:{number}: {target}"
            if not resolved.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where} (no heading with anchor #{anchor} in {resolved.relative_to(root)})")
    return problems


def test_slugs_follow_github() -> None:
    assert github_slug("Toy model (paper Theorem 1)") == "toy-model-paper-theorem-1"
    assert github_slug("`svd.method`: qr or cholesky_qr2") == "svdmethod-qr-or-cholesky_qr2"
    assert github_slug("Run it — on SLURM") == "run-it--on-slurm"


def test_every_relative_link_and_anchor_resolves() -> None:
    problems = [problem for page in PAGES if page.exists() for problem in broken_links(page)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_check_finds_a_broken_link_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Title\n\n## Same\n\n## Same\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#same-1) [ok](#here) `[code](missing.md)`\n"
        "# Here\n[gone](missing.md) [bad](other.md#same-2) [web](https://example.org/x)\n"
        "```\n[fenced](missing.md)\n```\n"
    )
    problems = broken_links(page, tmp_path)
    assert len(problems) == 2, problems
    assert "missing.md (no such file)" in problems[0]
    assert "#same-2" in problems[1]


def test_configuration_page_is_generated_from_the_schema() -> None:
    expected = docgen.configuration_markdown(yaml.safe_load(docgen.SCHEMA_PATH.read_text()))
    actual = (ROOT / "docs" / "configuration.md").read_text()
    assert actual == expected, (
        "docs/configuration.md is stale: regenerate it with "
        "`python -m svalign.docgen configuration > docs/configuration.md` (or `make docs`)"
    )


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it at most {README_MAX_LINES}"


def test_no_tracked_file_mentions_the_unshipped_document() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    word = "S" + "PEC"  # spelled apart so that this file does not match itself
    result = subprocess.run(
        [git, "grep", "-n", "-I", word], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode in (0, 1), result.stderr
    assert result.stdout == "", f"tracked files mention {word}:\n{result.stdout}"


SCHEMA = {
    "type": "object",
    "properties": {
        "stage": {
            "type": "object",
            "default": {},
            "description": "A stage.",
            "properties": {
                "depth": {"$ref": "#/$defs/positive_int", "default": 3, "description": "Nested | key."},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a", "description": "Mode."},
            },
        },
        "models": {
            "type": "object",
            "description": "Models by name.",
            "additionalProperties": {
                "type": "object",
                "required": ["source"],
                "properties": {"source": {"type": "string", "description": "Where from."}},
            },
        },
        "seeds": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "default": [0, 1],
            "description": "Seeds.",
        },
        "rate": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": 1.0e-5, "description": "Rate."},
        "first": {"$ref": "#/$defs/shape"},
        "second": {"$ref": "#/$defs/shape", "default": {"width": 4}},
    },
    "$defs": {
        "positive_int": {"type": "integer", "minimum": 1},
        "shape": {"type": "object", "properties": {"width": {"type": "integer", "default": 2, "description": "W."}}},
    },
}


def test_configuration_generator_on_a_small_schema() -> None:
    keys = {key.path: key for section in docgen.config_keys(SCHEMA).values() for key in section}
    assert keys["stage.depth"].type == "integer ≥ 1"
    assert keys["stage.depth"].default == "`3`"
    assert keys["stage.depth"].description == "Nested \\| key."
    assert keys["stage.mode"].type == "string: `a` \\| `b`"
    assert keys["models"].type == "map of `<name>` → object"
    assert keys["models.<name>.source"].description == "**Required.** Where from."
    assert keys["seeds"].type == "array of integer ≥ 0"
    assert keys["seeds"].default == "`[0, 1]`"
    assert keys["rate"].type == "number > 0, or null"
    assert keys["rate"].default == "`1e-5`"
    assert "(#shape-shared)" in keys["first"].type
    assert keys["second"].default == "`{width: 4}`"
    assert keys["width"].default == "`2`"  # the shared object, listed once in its own section
    page = docgen.configuration_markdown(SCHEMA)
    assert "## shape (shared)" in page and "The keys under `first`, `second`:" in page
    assert "| `stage.depth` | integer ≥ 1 | `3` | Nested \\| key. |" in page
    assert "shape-shared" in anchors_of_text(page)


def anchors_of_text(text: str) -> set[str]:
    return {github_slug(match.group(2)) for match in map(HEADING.match, text.splitlines()) if match}


def test_performance_page_reads_usage_lines_and_benchmark_records(tmp_path: Path) -> None:
    logs = tmp_path / "results" / "logs"
    (logs / "sad").mkdir(parents=True)
    (logs / "sad" / "m_trained_ioi.log").write_text(
        "x threads: torch 1, OMP_NUM_THREADS=1\nx trained on cpu\nx usage: cpu 10.0 s, wall 12.5 s, peak rss 700 MB\n"
    )
    (logs / "toy_train.log").write_text("x usage: cpu 1.0 s, wall 2.0 s, peak rss 100 MB\n")
    (logs / "figure.log").write_text("no usage line\n")
    bench = tmp_path / "perf"
    bench.mkdir()
    record = {
        "benchmark": "b",
        "title": "Bench",
        "command": "python benchmarks/b.py",
        "machine": {"cpus": 2, "threads": 1, "load_average_start": 1.0, "load_average_end": 2.0},
        "columns": ["arm", "time s"],
        "rows": [["fast", 0.1234], ["slow", None], ["cos", 0.99999946]],
        "notes": ["A note."],
    }
    (bench / "b.json").write_text(json.dumps(record))
    page = docgen.performance_markdown(bench, logs)
    assert "| sad | 1 | 10.0 | 12.5 | 12.5 | 700 |" in page
    assert "| **all** | 2 | 11.0 | 14.5 | 12.5 | 700 |" in page
    assert "torch threads per job 1, devices named in the logs `cpu`" in page
    assert "| figure |" not in page
    assert "`python benchmarks/b.py` on 2 CPUs, torch threads 1" in page
    assert "| fast | 0.123 |" in page and "| slow | – |" in page and "| cos | 0.9999995 |" in page
    assert "- A note." in page


def _job_log(path: Path, end: str, cpu: float, wall: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{end},000 INFO svalign.runtime: usage: cpu {cpu} s, wall {wall} s, peak rss 100 MB\n")


def test_stage_table_sums_job_cpu_per_stage_beside_a_baseline_run(tmp_path: Path) -> None:
    now, before = tmp_path / "now", tmp_path / "before"
    _job_log(now / "toy_train" / "a.log", "2026-12-08 10:00:10", 4.0, 10.0)
    _job_log(now / "toy_figures" / "a.log", "2026-12-08 10:00:20", 1.0, 2.0)
    _job_log(now / "sad" / "m.log", "2026-12-08 10:01:00", 30.0, 40.0)
    _job_log(now / "sae_train" / "m.log", "2026-12-08 10:00:30", 5.0, 6.0)
    _job_log(before / "toy_train" / "a.log", "2026-12-07 09:00:10", 10.0, 10.0)
    _job_log(before / "sad" / "m.log", "2026-12-07 09:02:00", 60.0, 70.0)
    assert [docgen.stage_of(rule) for rule in ("toy_sweep_point", "sad_figures", "sae_align", "svd", "x")] == [
        "toy",
        "SAD",
        "SAE",
        "weights + SVD",
        "other",
    ]
    jobs = docgen.read_usage(now)
    assert docgen.jobs_span_s(jobs) == 60.0  # toy_train starts at 10:00:00, sad ends at 10:01:00
    page = "\n".join(docgen.stage_section(jobs, docgen.read_usage(before), "yesterday"))
    assert "| toy | 2 | 5.0 | 10.0 | 0.50 | `toy_train` a 4 s, `toy_figures` a 1 s |" in page
    assert "| SAD | 1 | 30.0 | 60.0 | 0.50 |" in page
    assert "| SAE | 1 | 5.0 | 0.0 | – |" in page
    assert "| **all** | 4 | 40.0 | 70.0 | 0.57 |  |" in page
    assert "- yesterday: 2 jobs, 70.0 s of job CPU, 2.0 min" in page
