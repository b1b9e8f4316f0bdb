"""Rule toy_sweep: gather every sweep point's table into one."""

import pyarrow as pa

from svalign import io
from svalign.runtime import rule_logging
from svalign.tables import TOY_SWEEP

with rule_logging(snakemake.log[0]):
    tables = [io.read_table(path, TOY_SWEEP) for path in snakemake.input]
    merged = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    record = io.provenance("toy_sweep", {"points": len(tables)})
    io.write_table(snakemake.output[0], TOY_SWEEP, merged, record)
