"""Rule sad: sparse attention decomposition of every head on one prompt set, real and under the rotation null."""

from svalign import io, models, prompts, sad, svd
from svalign.runtime import configure_torch, rule_logging

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    config, wildcards = snakemake.params.sad, snakemake.wildcards
    weights = models.read_head_weights(io.read_table(snakemake.input.weights, models.HEAD_WEIGHTS))
    model_svd = svd.read_model_svd(
        io.read_table(snakemake.input.svd, svd.HEAD_SVD), io.read_table(snakemake.input.bases, svd.HEAD_SVD_BASES)
    )
    bridge, _ = models.load_model(
        snakemake.params.model, wildcards.variant, snakemake.params.seed, snakemake.input.get("model_dir")
    )
    texts, answers = prompts.prompt_set(
        wildcards.prompt_set, config["n_ioi_prompts"], config["prompt_seed"], snakemake.params.repeated
    )
    batches, kept = sad.tokenize_prompts(bridge.tokenizer, texts, weights.causal, bridge.cfg.n_ctx, answers)
    options = sad.SADConfig(
        **{k: config[k] for k in ("threshold", "skip_first_key", "null_draws", "null_seed", "chunk_prompts")}
    )
    pairs, diagnostics = sad.run_sad(bridge, weights, model_svd, batches, options)
    keys = {"model": wildcards.model, "variant": wildcards.variant, "prompt_set": wildcards.prompt_set}
    record = io.provenance(
        "sad",
        {**keys, **config, "prompts_kept": len(kept), "prepend_bos": False, **diagnostics},
        seed=config["null_seed"],
    )
    io.write_table(snakemake.output.pairs, sad.SAD_PAIRS, sad.pairs_table(pairs, keys), record, row_groups_by="layer")
    rank = model_svd.svd.S.shape[-1]
    io.write_table(snakemake.output.summary, sad.SAD_SUMMARY, sad.summarize(pairs, rank, keys), record)
    prompt_data = sad.prompts_table(texts, answers, batches, pairs["logit_diff"], keys)
    io.write_table(snakemake.output.prompts, sad.SAD_PROMPTS, prompt_data, record)
