"""Scale: the paper's 154-checkpoint Pythia-160M series, planned (dry run), one checkpoint measured, projected.

    python benchmarks/scale.py [--threads 2] [--repeats 3] [--prompts 128] [--method qr] [--nodes 1 4 16]
                               [--node-cores 32] [--node-mem-gb 128] [--skip-chain] [--keep DIR] [--json PATH]

1. **Plan.** Writes a config file that sets `dynamics.checkpoints` to Pythia's 154 revisions
   (`EleutherAI/pythia-160m@step0`, `@step1`, `@step2`, `@step4`, …, `@step143000`: exactly
   `svalign.dynamics.config.checkpoint_steps(143000, 154)`), `dynamics.prompt_set: ioi` and a head to track,
   then times `snakemake -n --configfile THAT dynamics` (the series) and `snakemake -n --configfile THAT` (everything)
   --repeats times in the repository root. Hub names are only strings at DAG time; to prove that the plan never
   touches the network, every Snakemake process runs with HF_HUB_OFFLINE=1 and a `sitecustomize` that refuses and
   counts every internet socket connection and name lookup. Reports the jobs per rule, and the cluster submissions:
   one per job that is not a `localrules` rule, as the workflow stands, and for the two layouts of a checkpoint
   (three jobs extract_weights -> svd -> sad, or one chained job / group).
2. **One checkpoint.** Saves a randomly initialised Pythia-160M-shaped GPT-NeoX (12 layers x 12 heads, d_model 768,
   rotary_pct 0.25, vocab 50304; `save_pretrained`) and a word-level tokenizer of the IOI prompts' words (a BPE
   tokenizer is not available offline; IOI names are single tokens either way) into a temporary directory, then runs
   the checkpoint's whole chain in a fresh process, as one cluster job would: the library steps that rule
   `dynamics_checkpoint` calls (`svalign.pipeline`: weights -> SVD with 32 RoPE offsets -> SAD on --prompts IOI
   prompts with 5 null draws), writing the same six Parquet tables. Reports the job's wall time (start-up included),
   each step's time, peak memory (`getrusage` max RSS of the job process) and the size of every output.
3. **Projection.** 154 checkpoints on N nodes of --node-cores cores and --node-mem-gb GB: jobs per node =
   min(cores / threads, memory / peak RSS), waves = ceil(154 / (N x jobs per node)), wall = dry run + waves x job
   time. Not included: downloading the checkpoints (offline here), queue waits, and slower cores than this machine's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import add_json_option, write_record

ROOT = Path(__file__).resolve().parents[1]
N_CHECKPOINTS = 154
PYTHIA = "EleutherAI/pythia-160m"
CHAIN_RULES = ("extract_weights", "svd", "sad")  # one checkpoint as separate jobs
CHAINED_RULE = "dynamics_checkpoint"  # one checkpoint as one job
GUARD = """import os, socket
_log = os.environ["SVALIGN_NETWORK_LOG"]
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo
def _refuse(what):
    with open(_log, "a") as f:
        f.write(what + "\\n")
    raise OSError("network refused by benchmarks/scale.py: " + what)
def connect(self, address, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(f"connect {address}")
    return _connect(self, address, *args)
def getaddrinfo(host, *args, **kwargs):
    if host not in (None, "localhost", "127.0.0.1", "::1"):
        _refuse(f"getaddrinfo {host}")
    return _getaddrinfo(host, *args, **kwargs)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
"""


# --------------------------------------------------------------------------------------------------
# 1. The plan
# --------------------------------------------------------------------------------------------------


def series_config(path: Path) -> list[str]:
    """Write the config override of the 154-checkpoint series; return its checkpoint names."""
    from svalign.dynamics.config import checkpoint_steps

    steps = checkpoint_steps(143000, N_CHECKPOINTS)
    assert len(steps) == N_CHECKPOINTS and steps[:4] == [0, 1, 2, 4] and steps[-1] == 143000
    names = [f"{PYTHIA}@step{step}" for step in steps]
    lines = ["dynamics:", "  prompt_set: ioi", "  head: {layer: 4, head: 6}", "  checkpoints:"]
    path.write_text("\n".join([*lines, *(f"    - {name}" for name in names)]) + "\n")
    return names


def local_rules() -> set[str]:
    """Rules declared local (`localrules:` blocks or `localrule: True`) in the Snakefile and the rules files."""
    found = set()
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        text = path.read_text()
        for block in re.finditer(r"^localrules:\s*\n((?:[ \t]+\w+,?[ \t]*\n)+)", text, re.M):
            found.update(re.findall(r"\w+", block.group(1)))
        for inline in re.finditer(r"^localrules:[ \t]*(\w[\w, \t]*)$", text, re.M):
            found.update(re.findall(r"\w+", inline.group(1)))
        for rule in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, re.M):
            if re.search(r"^[ \t]+localrule:[ \t]*True", rule.group(2), re.M):
                found.add(rule.group(1))
    return found


def dry_run(configfile: Path, targets: list[str], repeats: int, guard_dir: Path) -> dict:
    """Time `snakemake -n` (median of repeats) and read its job stats; count refused network attempts."""
    log = guard_dir / "network.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(guard_dir), "SVALIGN_NETWORK_LOG": str(log)}
    command = [sys.executable, "-m", "snakemake", "-n", "--cores", "8", *targets, "--configfile", str(configfile)]
    times, output = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        output = result.stdout + result.stderr
        if result.returncode != 0:
            sys.exit(f"snakemake -n failed:\n{output[-5000:]}")
    counts = {}
    stats = output[output.rindex("Job stats:") :]
    for line in stats.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    total = counts.pop("total")
    attempts = log.read_text().splitlines() if log.exists() else []
    return {"times": times, "median": statistics.median(times), "counts": counts, "total": total, "network": attempts}


def submissions(counts: dict[str, int], local: set[str]) -> dict[str, int]:
    """Cluster submissions: one per non-local job as planned, and for both layouts of a checkpoint's chain."""
    planned = sum(n for rule, n in counts.items() if rule not in local)
    if counts.get(CHAINED_RULE, 0):  # a checkpoint is one job already
        return {
            "planned": planned,
            "three_jobs_per_checkpoint": planned + 2 * N_CHECKPOINTS,
            "one_per_checkpoint": planned,
        }
    return {"planned": planned, "three_jobs_per_checkpoint": planned, "one_per_checkpoint": planned - 2 * N_CHECKPOINTS}


def report_plan(label: str, plan: dict, local: set[str]) -> dict[str, int]:
    counts = ", ".join(f"{rule} {n}" for rule, n in sorted(plan["counts"].items(), key=lambda item: -item[1]))
    subs = submissions(plan["counts"], local)
    print(f"\n{label}: {plan['total']} jobs ({counts})")
    print(f"  snakemake -n: median {plan['median']:.2f} s ({', '.join(f'{t:.2f}' for t in plan['times'])} s)")
    print(f"  network attempts refused during the dry runs: {len(plan['network'])}")
    print(
        f"  cluster submissions: {subs['planned']} as planned (local rules run in the main process); "
        f"{subs['three_jobs_per_checkpoint']} with each checkpoint as 3 jobs; "
        f"{subs['one_per_checkpoint']} with each checkpoint as 1 job/group"
    )
    return subs


# --------------------------------------------------------------------------------------------------
# 2. One checkpoint, end to end
# --------------------------------------------------------------------------------------------------


def save_pythia_shaped_model(model_dir: Path, seed: int = 0) -> int:
    """A randomly initialised Pythia-160M-shaped GPT-NeoX and a word-level tokenizer of the IOI prompts' words.

    Returns the model directory's size in bytes.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    from svalign.sad.prompts import NAMES, PLAIN_TEXT, ioi_prompts

    config = GPTNeoXConfig(  # EleutherAI/pythia-160m's config.json
        vocab_size=50304,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=2048,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        use_parallel_residual=True,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    GPTNeoXForCausalLM(config).save_pretrained(model_dir)
    splitter = pre_tokenizers.Whitespace()  # words and punctuation, as a BPE would split these prompts
    texts = [p.text for p in ioi_prompts(4096, 0)] + list(PLAIN_TEXT) + list(NAMES)
    words = sorted({word for text in texts for word, _ in splitter.pre_tokenize_str(text)})
    vocab = {"<|endoftext|>": 0, "<|padding|>": 1} | {word: i + 2 for i, word in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = splitter
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|padding|>",
        model_max_length=2048,
    )
    tokenizer.save_pretrained(model_dir)
    return sum(path.stat().st_size for path in model_dir.iterdir())


def run_chain(model_dir: Path, out_dir: Path, threads: int, n_prompts: int, method: str | None) -> dict:
    """One checkpoint through svalign.pipeline's steps, as rule dynamics_checkpoint runs them (in this process)."""
    start = time.perf_counter()
    import yaml

    from svalign import io, pipeline
    from svalign.runtime import configure_torch
    from svalign.sad.config import SADConfig

    configure_torch(threads)
    seconds = {"import": time.perf_counter() - start}
    peak_mb = {}
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    svd_config = {**config["svd"], "method": method or config["svd"].get("method", "qr")}
    sad_config = SADConfig(**{k: v for k, v in config["sad"].items() if k in SADConfig.__dataclass_fields__})
    name = "dyn_c000"
    model = {"name": name, "source": str(model_dir), "revision": None, "config_key": "dynamics.checkpoints[0]"}
    paths = {key: out_dir / f"{key}.parquet" for key in ("weights", "svd", "bases", "pairs", "summary", "prompts")}

    def done(step: str, since: float) -> float:
        seconds[step] = time.perf_counter() - since
        peak_mb[step] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return time.perf_counter()

    mark = time.perf_counter()
    step, bridge = pipeline.weights_step(model, "trained", 0)
    io.write_step(step, paths)
    mark = done("weights", mark)
    weights = pipeline.read_weights(paths["weights"])
    io.write_step(pipeline.svd_step(weights, name, "trained", svd_config, "cpu"), paths)
    mark = done("svd", mark)
    model_svd = pipeline.read_svd(paths["svd"], paths["bases"])
    keys = {"model": name, "variant": "trained", "prompt_set": "ioi"}
    prompts = {"n_ioi_prompts": n_prompts, "prompt_seed": config["sad"]["prompt_seed"]}
    io.write_step(pipeline.sad_step(bridge, weights, model_svd, keys, sad_config, prompts), paths)
    done("sad", mark)
    import pyarrow.parquet as pq

    return {
        "seconds": seconds,
        "peak_mb": peak_mb,
        "bytes": {key: path.stat().st_size for key, path in paths.items()},
        "pairs": pq.ParquetFile(paths["pairs"]).metadata.num_rows,
        "prompts_kept": pq.ParquetFile(paths["prompts"]).metadata.num_rows,
        "offsets": int(model_svd.offsets.numel()),
        "method": svd_config["method"],
    }


def measure_chain(args: argparse.Namespace, work: Path) -> dict:
    """Save the model, then run the chain in a fresh process (start-up included, as a cluster job pays it)."""
    model_dir, out_dir = work / "pythia-160m-random", work / "outputs"
    out_dir.mkdir()
    start = time.perf_counter()
    model_bytes = save_pythia_shaped_model(model_dir)
    print(
        f"\nPythia-160M-shaped random model saved in {time.perf_counter() - start:.1f} s ({model_bytes / 1e6:.0f} MB)"
    )
    command = [sys.executable, __file__, "--chain", str(model_dir), str(out_dir), "--threads", str(args.threads)]
    command += ["--prompts", str(args.prompts)] + (["--method", args.method] if args.method else [])
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"the checkpoint chain failed:\n{result.stderr[-5000:]}")
    chain = json.loads(result.stdout.strip().splitlines()[-1])
    chain["wall"], chain["model_bytes"] = wall, model_bytes
    steps = ", ".join(f"{step} {t:.1f} s" for step, t in chain["seconds"].items())
    peaks = ", ".join(f"{step} {mb:.0f} MB" for step, mb in chain["peak_mb"].items())
    sizes = ", ".join(f"{key} {n / 1e6:.1f} MB" for key, n in chain["bytes"].items())
    print(
        f"one checkpoint (weights -> SVD, {chain['offsets']} offsets, method {chain['method']} -> SAD on "
        f"{chain['prompts_kept']} IOI prompts, {chain['pairs']} firing pairs), {args.threads} threads:"
    )
    print(f"  wall {wall:.1f} s as one job (python start-up and imports included); steps: {steps}")
    print(f"  peak RSS after each step: {peaks}")
    print(f"  outputs {sum(chain['bytes'].values()) / 1e6:.1f} MB: {sizes}")
    return chain


# --------------------------------------------------------------------------------------------------
# 3. Projection
# --------------------------------------------------------------------------------------------------


def project(args: argparse.Namespace, chain: dict, dag_seconds: float, submissions: int) -> list[list]:
    """Print the projection; return its rows (nodes, jobs per node, waves, wall minutes)."""
    peak_gb = max(chain["peak_mb"].values()) / 1024
    per_node = max(1, min(args.node_cores // args.threads, int(args.node_mem_gb // peak_gb)))
    outputs_gb = N_CHECKPOINTS * sum(chain["bytes"].values()) / 1e9
    cpu_hours = N_CHECKPOINTS * chain["wall"] * args.threads / 3600
    print(
        f"\nProjection, {N_CHECKPOINTS} checkpoints ({submissions} cluster submissions), nodes of "
        f"{args.node_cores} cores / {args.node_mem_gb:g} GB: {per_node} checkpoint jobs per node "
        f"({args.threads} threads, {peak_gb:.1f} GB each); {cpu_hours:.1f} CPU-hours, {outputs_gb:.1f} GB of outputs"
    )
    rows = []
    for nodes in args.nodes:
        waves = math.ceil(N_CHECKPOINTS / (nodes * per_node))
        wall = dag_seconds + waves * chain["wall"]
        print(
            f"  {nodes:3d} node(s): {waves:3d} wave(s) x {chain['wall']:.0f} s + dry run {dag_seconds:.1f} s "
            f"= {wall / 60:6.1f} min"
        )
        rows.append([nodes, per_node, waves, wall / 60])
    print("  (downloads of the checkpoints, queue waits and the final dynamics_sad/figure jobs not included)")
    return rows


def plan_row(label: str, plan: dict, subs: dict[str, int]) -> list:
    """One row of the --json plan table."""
    return [
        label,
        plan["total"],
        plan["counts"].get(CHAINED_RULE, 0),
        plan["median"],
        subs["planned"],
        subs["three_jobs_per_checkpoint"],
        len(plan["network"]),
    ]


def write_json(args: argparse.Namespace, plans: list[list], chain: dict | None, projection: list[list]) -> None:
    """The plan table, then (unless --skip-chain) the measured checkpoint and the projection."""
    columns = [
        "plan",
        "jobs",
        f"{CHAINED_RULE} jobs",
        "snakemake -n median s",
        "cluster submissions",
        "submissions with 3 jobs per checkpoint",
        "network attempts",
    ]
    more, notes = [], [f"Dry runs: median of {args.repeats}, with HF_HUB_OFFLINE=1 and network access refused."]
    if chain is not None:
        steps = [[step, seconds, chain["peak_mb"].get(step)] for step, seconds in chain["seconds"].items()]
        steps.append(["whole job (fresh process)", chain["wall"], max(chain["peak_mb"].values())])
        more.append(
            {
                "caption": (
                    f"One Pythia-160M-shaped checkpoint as one `{CHAINED_RULE}` job: weights → SVD "
                    f"({chain['offsets']} offsets, `svd.method: {chain['method']}`) → SAD on {chain['prompts_kept']} "
                    f"IOI prompts with 5 null draws ({chain['pairs']} firing pairs)"
                ),
                "columns": ["step", "time s", "peak RSS MB after it"],
                "rows": steps,
            }
        )
        more.append(
            {
                "caption": (
                    f"Projection for {N_CHECKPOINTS} checkpoints on nodes of {args.node_cores} cores and "
                    f"{args.node_mem_gb:g} GB (wall = dry run + waves × the job's wall time; downloads and queue "
                    "waits not included)"
                ),
                "columns": ["nodes", "checkpoint jobs per node", "waves", "wall min"],
                "rows": projection,
            }
        )
        sizes = ", ".join(f"{key} {n / 1e6:.0f}" for key, n in chain["bytes"].items())
        notes.append(f"Outputs of one checkpoint: {sum(chain['bytes'].values()) / 1e6:.0f} MB ({sizes} MB).")
    write_record(
        args.json,
        "scale",
        "The 154-checkpoint Pythia-160M series: plan, one checkpoint, projection (`benchmarks/scale.py`)",
        columns,
        plans,
        args.threads,
        "cpu",
        notes,
        more,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--method", help="svd.method for the checkpoint's SVD (default: config.yaml's)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--node-cores", type=int, default=32)
    parser.add_argument("--node-mem-gb", type=float, default=128)
    parser.add_argument("--skip-chain", action="store_true", help="plan only")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    parser.add_argument("--chain", nargs=2, type=Path, metavar=("MODEL_DIR", "OUT_DIR"), help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.chain:
        print(json.dumps(run_chain(*args.chain, args.threads, args.prompts, args.method)))
        return
    print(f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "sitecustomize.py").write_text(GUARD)
        names = series_config(work / "series.yaml")
        print(f"series: {len(names)} checkpoints, {names[0]} ... {names[-1]}")
        local = local_rules()
        series = dry_run(work / "series.yaml", ["dynamics"], args.repeats, work)
        subs = report_plan("DAG of the series (target dynamics)", series, local)
        everything = dry_run(work / "series.yaml", [], args.repeats, work)
        subs_everything = report_plan("DAG of everything (default target + the series)", everything, local)
        plans = [
            plan_row("the series (target `dynamics`)", series, subs),
            plan_row("everything + the series (default target)", everything, subs_everything),
        ]
        chain, projection = None, []
        if not args.skip_chain:
            chain = measure_chain(args, work)
            projection = project(args, chain, series["median"], subs["planned"])
        write_json(args, plans, chain, projection)
    print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
