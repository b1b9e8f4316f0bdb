import json
import os
import re
import subprocess
import sys
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
    with pytest.raises(io.ParquetReadError, match=r"no such Parquet file.*`snakemake --cores 1 --force .*absent"):
        io.read_table(tmp_path / "absent.parquet", SCHEMA)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_file_gives_clear_error(tmp_path, damage):
    path = io.write_table(tmp_path / "t.parquet", SCHEMA, _data(), io.provenance("test"))
    content = path.read_bytes()
    path.write_bytes(b"not parquet at all" if damage == "garbage" else content[: len(content) // 2])
    with pytest.raises(io.ParquetReadError, match="corrupt"):
        io.read_table(path, SCHEMA)


def _foreign(path, columns: dict, record: dict | None) -> None:
    """A Parquet file written outside svalign, with ``record`` as its svalign provenance (None: no provenance)."""
    table = pa.table(columns)
    if record is not None:
        table = table.replace_schema_metadata({io.PROVENANCE_KEY: json.dumps(record).encode()})
    pq.write_table(table, path)


def test_schema_mismatch_names_the_columns(tmp_path):
    path = tmp_path / "other.parquet"
    columns = {"name": ["a"], "value": pa.array([1], type=pa.int32())}
    _foreign(path, columns, {"table": "example", "table_version": 1})
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


def test_configure_torch_makes_kernels_deterministic_without_loading_the_compiler():
    """A fresh process: deterministic kernels (warn-only), the rule's threads, and no torch._inductor import (the public
    switch loads it for 1.2 s of CPU per job)."""
    code = (
        "import sys, torch\n"
        "from svalign.runtime import configure_torch\n"
        "configure_torch(1)\n"
        "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
        " torch.get_num_threads(), 'torch._inductor' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True", "1", "False"]


@pytest.mark.parametrize(
    ("record", "found"),
    [
        ({"table": "example", "table_version": 999}, "found example v999"),
        ({"table": "sad_pairs", "table_version": 1}, "found sad_pairs v1"),
        (None, "no svalign provenance"),
    ],
)
def test_another_table_or_version_is_refused_naming_both(tmp_path, record, found):
    path = tmp_path / "t.parquet"
    _foreign(path, {name: column for name, column in SCHEMA.build(_data()).to_pydict().items()}, record)
    with pytest.raises(io.TableVersionError, match=found) as error:
        io.read_table(path, SCHEMA)
    assert str(path) in str(error.value) and "example v1" in str(error.value) and "--force" in str(error.value)


def test_a_flipped_bit_in_the_data_pages_is_caught_or_harmless(tmp_path):
    """Every data page carries a checksum: 40 seeded single-bit flips between the magic bytes and the footer either
    fail the read, naming the file, or leave every value as written (a flip in statistics nobody reads)."""
    data = _data(rows=400)
    path = io.write_table(tmp_path / "t.parquet", SCHEMA, data, io.provenance("test"))
    content = bytearray(path.read_bytes())
    footer = int.from_bytes(content[-8:-4], "little")
    expected = io.read_table(path, SCHEMA)
    rng = np.random.default_rng(0)
    outcomes = {"caught": 0, "harmless": 0}
    for offset in rng.integers(4, len(content) - footer - 8, size=40):
        flipped = bytearray(content)
        flipped[offset] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(flipped))
        try:
            table = io.read_table(path, SCHEMA)
        except io.ParquetReadError as error:
            assert str(path) in str(error)
            outcomes["caught"] += 1
            continue
        assert table.equals(expected), f"a flip at byte {offset} changed the data without an error"
        outcomes["harmless"] += 1
    assert outcomes["caught"] >= 30, outcomes


def test_a_killed_writes_temp_file_is_removed_by_the_next_write(tmp_path):
    stale = tmp_path / ".t.parquet.abc123.tmp"  # what atomic_file leaves when its process is killed mid-write
    stale.write_bytes(b"half a table")
    other = tmp_path / ".u.parquet.abc123.tmp"  # another table's: left alone
    other.write_bytes(b"x")
    io.write_table(tmp_path / "t.parquet", SCHEMA, _data(), io.provenance("test"))
    assert sorted(os.listdir(tmp_path)) == [".u.parquet.abc123.tmp", "t.parquet"]


def test_zero_rows_round_trip_with_tensor_shapes(tmp_path):
    path = io.write_table(tmp_path / "t.parquet", SCHEMA, _data(rows=0), io.provenance("test"))
    table = io.read_table(path, SCHEMA)
    assert table.num_rows == 0 and io.tensor(table, "matrix").shape == (0, 4, 5)


def test_an_input_that_cannot_be_empty_names_its_file(tmp_path):
    """A zero-row SVD or weights table (pipeline.read_svd / read_weights ask for one row) fails naming the file."""
    from svalign import pipeline, tables

    path = io.write_table(tmp_path / "empty.parquet", SCHEMA, _data(rows=0), io.provenance("test"))
    with pytest.raises(io.ParquetReadError, match=r"empty\.parquet: 0 rows in table example, at least 1 needed"):
        io.read_table(path, SCHEMA, min_rows=1)
    columns = {c.name: np.zeros((0, *(2,) * len(c.shape))) if c.is_tensor else [] for c in tables.HEAD_SVD.columns}
    svd_path = io.write_table(tmp_path / "svd.parquet", tables.HEAD_SVD, columns, io.provenance("svd"))
    with pytest.raises(io.ParquetReadError, match=r"svd\.parquet: 0 rows in table head_svd"):
        pipeline.read_svd(svd_path, svd_path)


def test_a_write_error_without_a_path_gets_one(tmp_path):
    """A full disk or a file-size limit (EFBIG) names the file being written, and leaves no temp file behind."""
    import errno

    target = tmp_path / "t.parquet"
    expected = r"File too large \(writing .*t\.parquet\)"
    with pytest.raises(OSError, match=expected) as error, io.atomic_file(target) as handle:
        handle.write(b"partial")
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    assert error.value.errno == errno.EFBIG and os.listdir(tmp_path) == []
