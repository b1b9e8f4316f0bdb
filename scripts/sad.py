"""Rule sad: sparse attention decomposition of every head on one prompt set, real and under the rotation null."""

from svalign import io, models, svd, tables
from svalign.runtime import configure_torch, rule_logging
from svalign.sad import prompts, run
from svalign.sad.config import SADConfig

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    params, wildcards = snakemake.params, snakemake.wildcards
    options = SADConfig.from_mapping(params.sad)
    weights = models.read_head_weights(io.read_table(snakemake.input.weights, tables.HEAD_WEIGHTS))
    model_svd = svd.read_model_svd(
        io.read_table(snakemake.input.svd, tables.HEAD_SVD), io.read_table(snakemake.input.bases, tables.HEAD_SVD_BASES)
    )
    bridge, _ = models.load_model(params.model, wildcards.variant, params.seed, snakemake.input.get("model_dir"))
    repeated = None
    if wildcards.prompt_set == "repeated":  # written by the dynamics stage (rule dynamics_prompts)
        repeated = io.read_table(snakemake.input.prompts, tables.DYNAMICS_PROMPTS).column("text").to_pylist()
    texts, answers = prompts.prompt_set(wildcards.prompt_set, **params.prompts, repeated=repeated)
    batches, kept = run.tokenize_prompts(bridge.tokenizer, texts, weights.causal, bridge.cfg.n_ctx, answers)
    pairs, diagnostics = run.run_sad(bridge, weights, model_svd, batches, options)  # checks the offsets first
    keys = {"model": wildcards.model, "variant": wildcards.variant, "prompt_set": wildcards.prompt_set}
    record = io.provenance(
        "sad",
        {**keys, **params.sad, **params.prompts, "prompts_kept": len(kept), "prepend_bos": False, **diagnostics},
        seed=params.sad["null_seed"],
    )
    io.write_table(
        snakemake.output.pairs, tables.SAD_PAIRS, run.pairs_table(pairs, keys), record, row_groups_by="layer"
    )
    rank = model_svd.svd.S.shape[-1]
    io.write_table(snakemake.output.summary, tables.SAD_SUMMARY, run.summarize(pairs, rank, keys), record)
    prompt_data = run.prompts_table(texts, answers, batches, pairs["logit_diff"], keys)
    io.write_table(snakemake.output.prompts, tables.SAD_PROMPTS, prompt_data, record)
