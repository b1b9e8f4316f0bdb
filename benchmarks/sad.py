"""Vectorised SAD scoring vs a per-pair Python loop vs the model's forward pass, side by side.

    python benchmarks/sad.py [--prompts 128] [--loop-pairs 3000] [--threads 2] [--json PATH]

MiniLM (offline) on IOI prompts: (1) the forward pass that caches head inputs and patterns (what SAD needs from
the model), (2) our vectorised decomposition and statistics of every firing pair of every head (real model, no
null draws), (3) the straightforward loop (tests/unit/sad_oracle.py reference_pair: one pair at a time, keys in a Python
loop, as the authors' scripts did), timed on --loop-pairs sampled pairs and scaled to all pairs. The loop's
results are checked against the vectorised ones on the sampled pairs.

Targets (what the printed ratios are held to): the vectorised scoring at least 50x faster than the per-pair loop,
and no slower than the forward pass that feeds it (ratio ≤ 1), so SAD never costs more than running the model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _record import add_json_option, write_record

from svalign import models
from svalign.runtime import configure_torch
from svalign.sad import decompose, forward, prompts
from svalign.svd import model_svd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
from sad_oracle import reference_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--loop-pairs", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    add_json_option(parser)
    args = parser.parse_args()
    configure_torch(args.threads)

    bridge = models.load_bridge(models.minilm_dir())
    weights = models.extract_head_weights(bridge)
    result = model_svd(weights)
    texts, answers = prompts.prompt_set("ioi", args.prompts, 0)
    batches, _ = forward.tokenize_prompts(bridge.tokenizer, texts, False, bridge.cfg.n_ctx, answers)

    start = time.perf_counter()
    caches = [forward.layer_activations(bridge, batch.tokens, weights)[0] for batch in batches]
    forward_s = time.perf_counter() - start

    start = time.perf_counter()
    per_batch = []
    for cache in caches:
        per_layer = []
        for layer in range(weights.n_layers):
            x = decompose.augment_inputs(cache[weights.head_input_hook.format(layer=layer)], result.augmented)
            terms = decompose.decompose(x, decompose.layer_svd(result, layer), False, False)
            per_layer.append(
                decompose.pair_statistics(terms, cache[f"blocks.{layer}.attn.hook_pattern"], False, None, False)
            )
        per_batch.append(per_layer)
    vector_s = time.perf_counter() - start
    n_pairs = sum(len(stats.head) for per_layer in per_batch for stats in per_layer)

    U, V = result.svd.U()[:, :, 0].numpy(), result.svd.V()[:, :, 0].numpy()  # [L, H, d_in, r]
    S = result.svd.S[:, :, 0].numpy()
    rng = np.random.default_rng(0)
    samples = []
    for b, per_layer in enumerate(per_batch):
        for layer, stats in enumerate(per_layer):
            for index in rng.choice(len(stats.head), size=min(len(stats.head), args.loop_pairs // 20), replace=False):
                samples.append((b, layer, int(index)))
    start = time.perf_counter()
    mismatches = 0
    for b, layer, index in samples:
        stats, cache = per_batch[b][layer], caches[b]
        x = decompose.augment_inputs(cache[weights.head_input_hook.format(layer=layer)], result.augmented)
        prompt, head, t, j = (int(getattr(stats, n)[index]) for n in ("prompt", "head", "t", "j"))
        keys = list(range(x.shape[1]))
        n, s, _ = reference_pair(x[prompt].numpy(), U[layer, head], S[layer, head], V[layer, head], t, j, keys)
        mismatches += n != int(stats.n_recon[index]) or abs(s - float(stats.sparseness[index])) > 1e-4
    loop_s = (time.perf_counter() - start) * n_pairs / len(samples)

    print(
        f"MiniLM, {sum(len(b.tokens) for b in batches)} IOI prompts, {n_pairs} firing pairs, "
        f"{torch.get_num_threads()} CPU threads"
    )
    print(f"  forward pass (run_with_cache)       : {forward_s:8.2f} s")
    print(f"  vectorised SAD, every pair          : {vector_s:8.2f} s")
    print(f"  per-pair loop (timed on {len(samples)} pairs): {loop_s:8.2f} s (scaled)")
    print(f"  speed-up vs loop: {loop_s / vector_s:7.1f}x (target >= 50x)")
    print(f"  SAD / forward pass: {vector_s / forward_s:7.2f} (target <= 1)")
    print(f"  loop vs vectorised mismatches (N_recon or S): {mismatches} of {len(samples)}")
    write_record(
        args.json,
        "sad",
        "SAD scoring: vectorised vs a per-pair loop vs the forward pass (`benchmarks/sad.py`)",
        ["step", "time s", "÷ forward pass", "speed-up of the vectorised SAD"],
        [
            ["forward pass (head inputs and patterns)", forward_s, 1.0, None],
            ["vectorised SAD, every firing pair", vector_s, vector_s / forward_s, 1.0],
            [f"per-pair loop (timed on {len(samples)} pairs, scaled)", loop_s, loop_s / forward_s, loop_s / vector_s],
        ],
        torch.get_num_threads(),
        "cpu",
        [
            f"MiniLM, {sum(len(b.tokens) for b in batches)} IOI prompts, {n_pairs} firing pairs, real model only "
            "(no null draws).",
            f"Loop against vectorised statistics: {mismatches} mismatches (N_recon or S) of {len(samples)} pairs.",
        ],
    )


if __name__ == "__main__":
    main()
