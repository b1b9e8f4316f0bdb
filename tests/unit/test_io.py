import os
import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from svalign import io
from svalign.runtime import rule_logging

SCHEMA = io.TableSchema(
    "example",
    "A test table.",
    (
        io.Column("name", pa.string(), "a label"),
        io.Column("value", pa.float64(), "a number"),
        io.Column("matrix", pa.float32(), "a matrix", ("rows", "cols")),
        io.Column("ragged", pa.int64(), "a vector of any length", ("n",), ragged=True),
    ),
)


def _data(rows: int = 3) -> dict:
    rng = np.random.default_rng(0)
    return {
        "name": [f"row{i}" for i in range(rows)],
        "value": rng.normal(size=rows),
        "matrix": rng.normal(size=(rows, 4, 5)).astype(np.float32),
        "ragged": [np.arange(i + 1) for i in range(rows)],
    }


def test_roundtrip_keeps_tensor_shapes_and_provenance(tmp_path):
    data = _data()
    path = io.write_table(tmp_path / "t.parquet", SCHEMA, data, io.provenance("test", {"k": 1}, seed=7))
    table = io.read_table(path, SCHEMA)
    np.testing.assert_array_equal(io.tensor(table, "matrix"), data["matrix"])
    frame = io.to_frame(table)
    assert frame["matrix"].iloc[2].shape == (4, 5)
    np.testing.assert_array_equal(frame["matrix"].iloc[2], data["matrix"][2])
    assert frame["ragged"].iloc[2].tolist() == [0, 1, 2]
    record = io.read_provenance(path)
    assert record["stage"] == "test"
    assert record["table"] == "example"
    assert record["config"] == {"k": 1}
    assert record["seed"] == 7
    assert record["packages"]["pyarrow"] == pa.__version__
    assert "numpy" in record["packages"]


def test_same_data_gives_byte_identical_files(tmp_path):
    record = io.provenance("test", {"k": 1}, seed=0)
    first = io.write_table(tmp_path / "a.parquet", SCHEMA, _data(), record)
    second = io.write_table(tmp_path / "b.parquet", SCHEMA, _data(), record)
    assert first.read_bytes() == second.read_bytes()


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    path = io.write_table(tmp_path / "t.parquet", SCHEMA, _data(), io.provenance("test"))
    before = path.read_bytes()
    bad = _data()
    bad["matrix"] = np.zeros((3, 4), dtype=np.float32)  # wrong rank
    with pytest.raises(io.SchemaMismatchError, match="matrix"):
        io.write_table(path, SCHEMA, bad, io.provenance("test"))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["t.parquet"]


def test_build_rejects_missing_and_undeclared_columns():
    data = _data()
    data.pop("value")
    data["extra"] = [1, 2, 3]
    with pytest.raises(io.SchemaMismatchError, match=r"missing columns \['value'\].*undeclared columns \['extra'\]"):
        SCHEMA.build(data)


def test_missing_file_error_names_path_and_fix(tmp_path):
    with pytest.raises(io.ParquetReadError, match=r"no such Parquet file.*snakemake"):
        io.read_table(tmp_path / "absent.parquet", SCHEMA)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_file_gives_clear_error(tmp_path, damage):
    path = io.write_table(tmp_path / "t.parquet", SCHEMA, _data(), io.provenance("test"))
    content = path.read_bytes()
    path.write_bytes(b"not parquet at all" if damage == "garbage" else content[: len(content) // 2])
    with pytest.raises(io.ParquetReadError, match="corrupt"):
        io.read_table(path, SCHEMA)


def test_schema_mismatch_names_the_columns(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"name": ["a"], "value": pa.array([1], type=pa.int32())}), path)
    with pytest.raises(io.SchemaMismatchError) as error:
        io.read_table(path, SCHEMA)
    message = str(error.value)
    assert "missing columns ['matrix', 'ragged']" in message
    assert "column 'value' is int32, declared double" in message


def test_markdown_documents_every_column():
    text = SCHEMA.markdown()
    for column in SCHEMA.columns:
        assert f"`{column.name}`" in text
    assert "tensor<float>[rows, cols]" in text


def test_schema_docs_are_up_to_date(repo):
    from svalign.tables import schemas_markdown

    assert (repo / "docs" / "schemas.md").read_text() == schemas_markdown(), (
        "docs/schemas.md is stale: python -m svalign.tables > docs/schemas.md"
    )


def test_rule_log_ends_with_the_jobs_cpu_wall_and_peak_memory(tmp_path):
    """Every rule's log ends with exact CPU and wall time (Snakemake's benchmark samples CPU time coarsely)."""
    log_file = tmp_path / "job.log"
    with rule_logging(log_file):
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:  # burn 0.3 s of CPU
            pass
    last = log_file.read_text().strip().splitlines()[-1]
    match = re.search(r"usage: cpu ([\d.]+) s, wall ([\d.]+) s, peak rss (\d+) MB", last)
    assert match, last
    cpu, wall, rss = float(match[1]), float(match[2]), int(match[3])
    assert 0.3 <= cpu <= wall and rss > 10
    failing = tmp_path / "failed.log"
    with pytest.raises(RuntimeError), rule_logging(failing):
        raise RuntimeError("boom")
    assert "usage:" not in failing.read_text() and "rule failed" in failing.read_text()
