"""SLURM for real: a single-node cluster on this machine runs a small pipeline through ``profiles/slurm``.

``tests/slurm/cluster.sh`` installs SLURM with apt-get when missing and starts munged, slurmctld and
slurmd on 127.0.0.1 (root needed; otherwise the tests skip and say why). One Snakemake run submits a toy
experiment, one of its figures and a rule that fails on purpose (``tests/slurm/Snakefile``) with
``--keep-going``; a local ``--cores 2`` run of the same targets, beside it, is the reference. The daemons the
fixture started are stopped by PID afterwards, also when a test fails.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from workflow_helpers import SNAKEMAKE, copy_workflow, parquet_contents

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
LOCK = Path("/tmp/svalign-slurm-test.lock")  # one SLURM test at a time per machine
COPIED = ("profiles", "tests/slurm")  # besides the workflow itself
# `--configfile` takes every argument after it: it goes last.
CONFIGS = ["--configfile", ".test/config.yaml", "tests/slurm/config.yaml"]
TOY = "results/toy/single_pair"
TARGETS = [f"{TOY}/metrics.parquet", "results/figures/toy/geometry_single_pair.png"]
FAILING = "results/slurm_test/fails.txt"
JOB_PREFIX = "svalign_test"
# No slurmdbd on the test cluster: poll with squeue (MinJobAge=300 in slurm.conf keeps finished jobs
# visible). The plugin checks `init` seconds after a submission, then waits 10 s longer each time no job
# has finished (a failed one does not count): checks at init, 2 init + 10, 3 init + 30 s, and Snakemake
# exits one interval after the last job. A job here takes 12-30 s (two Snakemake start-ups and torch imports
# on 2 shared cores) and the run is two rounds (toy_train, then its figure): init 12 sees a job after 12 or
# 34 s; init 2 (the smallest) only after 14, 36 or 68 s.
SLURM_OPTIONS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "12",
    "--slurm-keep-successful-logs",
    "--slurm-jobname-prefix",
    JOB_PREFIX,
]
# The figure rule is a `localrules` entry: it runs in the Snakemake process, not as a SLURM job.
SUBMITTED_RULES = ("toy_train", "slurm_test_fails")
LOCAL_RULE = "toy_figures"
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
TIMEOUT = 300


def cluster(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def scontrol(*args: str) -> dict[str, str]:
    """``scontrol show … -o`` as a dict of its ``Key=Value`` fields."""
    out = subprocess.run(["scontrol", "show", *args, "-o"], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", out))


def daemon_logs() -> str:
    state = Path(os.environ.get("SVALIGN_SLURM_STATE", "/var/lib/svalign-slurm"))
    tails = []
    for name in ("slurmctld.log", "slurmd.log"):
        path = state / name
        if path.exists():
            tails.append(f"--- {path} (tail) ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(tails)


@pytest.fixture(scope="module")
def slurm_node() -> dict[str, str]:
    """A running single-node cluster (installed and started when needed); yields ``scontrol show node``."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the SLURM test cluster needs Linux (apt-get, munged, slurmctld, slurmd)")
    if os.geteuid() != 0:
        pytest.skip("the SLURM test needs root: it installs slurmctld/slurmd/munge with apt-get and starts them")
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        install = cluster("install", timeout=600)
        if install.returncode == 3:
            pytest.skip(f"cannot install SLURM on this machine: {install.stdout.strip()[-1500:]}")
        assert install.returncode == 0, install.stdout
        started, running = [], False  # PIDs this fixture starts (a cluster already up is reused, left up)
        try:
            up = cluster("up")
            started = re.findall(r"^started \S+ (\d+)$", up.stdout, flags=re.MULTILINE)
            if up.returncode == 3:
                pytest.skip(f"cannot start a SLURM test cluster here: {up.stdout.strip()[-1500:]}")
            assert up.returncode == 0, f"{up.stdout}\n{daemon_logs()}"
            running = True
            yield scontrol("node", "localhost")
        finally:
            if running:  # jobs an interrupted run left behind: ours only, by name
                queue = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=60)
                ours = [job.split()[0] for job in queue.stdout.splitlines() if f" {JOB_PREFIX}" in job]
                if ours:
                    subprocess.run(["scancel", *ours], check=False, timeout=60)
            if started:
                down = cluster("down", *started)
                assert down.returncode == 0, down.stdout


def expected_resources(real_memory: int) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Per rule of the run: threads, mem_mb and runtime (minutes) from the SLURM profile, and the
    ``--set-resources`` options that cap mem_mb on a node with less memory than the profile asks for."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    expected, caps = {}, {}
    for rule in SUBMITTED_RULES:
        resources = {**profile["default-resources"], **profile["set-resources"].get(rule, {})}
        mem_mb = int(resources["mem_mb"])
        if mem_mb > real_memory:
            mem_mb = caps[rule] = real_memory
        threads = int(profile["set-threads"].get(rule, 1))
        expected[rule] = {"threads": threads, "mem_mb": mem_mb, "runtime": int(resources["runtime"])}
    if not caps:
        return expected, []
    # --set-resources on the command line replaces the profile's whole list: repeat it, capped.
    capped = {rule: dict(values) for rule, values in profile["set-resources"].items()}
    for rule, mem_mb in caps.items():
        capped.setdefault(rule, {})["mem_mb"] = mem_mb
    options = [f"{rule}:{key}={value}" for rule, values in capped.items() for key, value in values.items()]
    return expected, ["--set-resources", *options]


@pytest.fixture(scope="module")
def runs(slurm_node, tmp_path_factory):
    """The SLURM run and, at the same time (the executor mostly sleeps between status checks), the local
    reference run of the same targets and config."""
    expected, caps = expected_resources(int(slurm_node["RealMemory"]))
    slurm_dir = copy_workflow(REPO, tmp_path_factory.mktemp("slurm"), COPIED)
    local_dir = copy_workflow(REPO, tmp_path_factory.mktemp("local"), COPIED)
    local = subprocess.Popen(
        [*SNAKEMAKE, "--cores", "2", *TARGETS, *CONFIGS],
        cwd=local_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        slurm = subprocess.run(
            [
                *SNAKEMAKE,
                *["--snakefile", "tests/slurm/Snakefile", "--profile", "profiles/slurm"],
                "--keep-going",  # the profile sets it too; the failing job below depends on it
                *caps,
                *SLURM_OPTIONS,
                *TARGETS,
                FAILING,
                *CONFIGS,
            ],
            cwd=slurm_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
        )
        local_out = local.communicate(timeout=TIMEOUT)[0]
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
    assert local.returncode == 0, f"local reference run failed:\n{local_out}"
    submitted = {}
    for jobid, slurm_jobid, log in SUBMITTED.findall(slurm.stdout):
        rule = Path(log).relative_to(slurm_dir / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_")
        submitted[rule] = {"jobid": jobid, "slurm_jobid": slurm_jobid, "log": Path(log)}
    return {
        "slurm_dir": slurm_dir,
        "local_dir": local_dir,
        "out": slurm.stdout,
        "returncode": slurm.returncode,
        "submitted": submitted,
        "expected": expected,
    }


RULE_BLOCK = re.compile(r"^(?:local)?rule (\w+):$")


def planned_resources(workdir: Path, *args: str) -> dict[str, dict[str, int]]:
    """Threads, mem_mb and runtime of every rule in a dry run of the default config (plus ``args``), no profile."""
    out = subprocess.run(
        [*SNAKEMAKE, "-n", "--forceall", "--cores", "64", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
    ).stdout
    rules, current = {}, None
    for line in out.splitlines():
        if match := RULE_BLOCK.match(line):
            current = rules.setdefault(match.group(1), {"threads": 1})
        elif current is not None and line.strip().startswith("threads:"):
            current["threads"] = int(line.split(":")[1])
        elif current is not None and line.strip().startswith("resources:"):
            fields = dict(item.split("=", 1) for item in line.split(":", 1)[1].strip().split(", "))
            current.update({key: int(fields[key]) for key in ("mem_mb", "runtime") if key in fields})
            current = None
    assert rules, out
    return rules


def test_slurm_profile_mirrors_the_rules(tmp_path):
    """Needs no cluster: the profile parses, names only real rules, and its per-rule threads, mem_mb and
    runtime equal the rules' own (the profile is where a cluster user edits them)."""
    workdir = copy_workflow(REPO, tmp_path, COPIED)
    dry = subprocess.run(
        [*SNAKEMAKE, "--profile", "profiles/slurm", "-n"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
    )
    assert dry.returncode == 0, dry.stdout
    profile = yaml.safe_load((workdir / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    # The default runs our dynamics series in one job (dynamics_series); one job per checkpoint is the other rule.
    (workdir / "each.yaml").write_text("dynamics:\n  checkpoint_jobs: each\n")
    each = planned_resources(workdir, "--configfile", "config.yaml", "each.yaml")
    assert "dynamics_checkpoint" in each and "dynamics_series" not in each
    rules = {**planned_resources(workdir), **each}
    aggregates = {"all"}  # no job of their own
    missing = sorted(set(rules) - aggregates - set(profile["set-resources"]))
    assert not missing, f"rules without an entry in profiles/slurm/config.yaml set-resources: {missing}"
    unknown = sorted((set(profile["set-resources"]) | set(profile["set-threads"])) - set(rules))
    assert not unknown, f"profiles/slurm/config.yaml names rules the workflow does not have: {unknown}"
    for rule, own in rules.items():
        if rule in aggregates:
            continue
        in_profile = {
            "threads": profile["set-threads"].get(rule, 1),
            "mem_mb": profile["set-resources"][rule]["mem_mb"],
            "runtime": profile["set-resources"][rule]["runtime"],
        }
        assert in_profile == own, f"profiles/slurm/config.yaml {rule}: {in_profile}, the rule itself: {own}"


def slurm_time(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


@pytest.mark.slow
def test_every_job_ran_as_a_slurm_job_with_the_profiles_resources(runs):
    out, submitted, expected = runs["out"], runs["submitted"], runs["expected"]
    assert sorted(submitted) == sorted(expected), out
    assert LOCAL_RULE not in submitted and f"rule {LOCAL_RULE}:" in out, out  # localrules: no submission
    assert len({job["slurm_jobid"] for job in submitted.values()}) == len(expected), out
    for rule, job in submitted.items():
        info = scontrol("job", job["slurm_jobid"])  # finished jobs stay for MinJobAge = 300 s
        want = expected[rule]
        assert info["Comment"].startswith(f"rule_{rule}"), info
        assert info["JobName"].startswith(JOB_PREFIX), info
        assert info["NodeList"] == "localhost" and info["Partition"] == "debug", info
        assert Path(info["WorkDir"]) == runs["slurm_dir"], info
        state = "FAILED" if rule == "slurm_test_fails" else "COMPLETED"
        assert info["JobState"] == state, (rule, info, out)
        assert (info["ExitCode"] == "0:0") == (state == "COMPLETED"), info
        # The profile's set-threads / set-resources reached sbatch.
        assert int(info["NumCPUs"]) == want["threads"], (rule, info)
        assert info["MinMemoryNode"] == f"{want['mem_mb']}M", (rule, info)
        assert info["TimeLimit"] == slurm_time(want["runtime"]), (rule, info)
        # The job's own log (kept by --slurm-keep-successful-logs) shows the job step running the rule.
        log = job["log"].read_text(errors="replace")
        assert f"rule {rule}:" in log, log
        if state == "COMPLETED":
            assert f"Finished jobid: 0 (Rule: {rule})" in log, log


@pytest.mark.slow
def test_slurm_outputs_match_a_local_run(runs):
    # Provenance metadata holds paths: compare schema and contents without it (NaN equal to NaN, as bytes).
    on_slurm, local = (parquet_contents(runs[run] / TOY) for run in ("slurm_dir", "local_dir"))
    assert sorted(on_slurm) == sorted(local) == [f"{name}.parquet" for name in ("metrics", "trajectory", "weights")]
    for name, content in on_slurm.items():
        assert content == local[name], name
        assert pq.read_metadata(runs["local_dir"] / TOY / name).num_rows > 0, name
    for workdir in (runs["slurm_dir"], runs["local_dir"]):
        png = workdir / "results" / "figures" / "toy" / "geometry_single_pair.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


@pytest.mark.slow
def test_failed_job_is_reported_and_finished_jobs_keep_their_outputs(runs):
    out, slurm_dir = runs["out"], runs["slurm_dir"]
    failed = runs["submitted"]["slurm_test_fails"]
    assert runs["returncode"] != 0, out
    assert "Error in rule slurm_test_fails:" in out, out
    assert f"SLURM-job '{failed['slurm_jobid']}' failed, SLURM status is: 'FAILED'" in out, out
    assert "At least one job did not complete successfully." in out, out
    # Snakemake removed the failed job's partial output; its SLURM log is kept with the reason.
    assert not (slurm_dir / FAILING).exists()
    assert "slurm_test_fails: failing on purpose" in failed["log"].read_text(errors="replace")
    # --keep-going: the other jobs finished (the figure needs toy_train) and their outputs are all there.
    for name in ("weights", "metrics", "trajectory"):
        assert (slurm_dir / TOY / f"{name}.parquet").stat().st_size > 0, name
    for target in TARGETS:
        assert (slurm_dir / target).stat().st_size > 0, target
    assert "2 of 3 steps (67%) done" in out, out
