"""Parquet I/O for every svalign intermediate.

Every table the pipeline writes is declared once as a :class:`TableSchema`: its columns, their Arrow
types, the symbolic shape of tensor columns (e.g. ``("d_model", "n_features")``) and a one-line doc per
column. Tensors are stored as Arrow fixed-shape tensor columns (``arrow.fixed_shape_tensor``), so a
reader gets ``[rows, *shape]`` arrays back without reshaping by hand; per-row vectors whose length
varies are plain list columns.

Writes are atomic (temporary file in the same directory, fsync, ``os.replace``), so an interrupted job
never leaves a truncated file under the final name. Each file carries provenance in its Parquet key-value
metadata under the key ``svalign``: the stage, the table name, the config subset the rule used, the seed,
package versions and the git commit. There is deliberately no timestamp: the same inputs give a
byte-identical file, which is what the determinism tests compare.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:  # pyarrow's to_pandas imports pandas when a frame is asked for; the other jobs skip its 0.6 s
    import pandas as pd

__all__ = [
    "HEAD_KEYS",
    "Column",
    "ParquetReadError",
    "PathLike",
    "SchemaMismatchError",
    "StepTables",
    "TableSchema",
    "TableVersionError",
    "atomic_file",
    "provenance",
    "read_frame",
    "read_provenance",
    "read_table",
    "rebuild_advice",
    "tensor",
    "to_frame",
    "write_step",
    "write_table",
    "write_text",
]

PathLike = str | os.PathLike[str]
"""A filesystem path as the library accepts it."""

PROVENANCE_KEY = b"svalign"
_VERSIONED_PACKAGES = ("svalign", "torch", "numpy", "pyarrow", "pandas", "scipy", "snakemake")


class ParquetReadError(RuntimeError):
    """A Parquet file is missing, unreadable or written by something else than its declared table."""


class SchemaMismatchError(ParquetReadError):
    """A table's columns or types differ from its declared :class:`TableSchema`."""


class TableVersionError(ParquetReadError):
    """A file holds another table, another version of its table, or no svalign provenance at all."""


def rebuild_advice(path: PathLike) -> str:
    """The command that rebuilds one output, whatever state its consumers are in.

    Naming the file as the target with ``--force`` reruns the job that writes it even when every consumer is up to
    date (deleting the file alone does not: Snakemake leaves a missing intermediate alone when nothing needs it).
    """
    return f"rebuild it with `snakemake --cores 1 --force {path}`"


@dataclass(frozen=True)
class Column:
    """One declared column.

    Attributes:
        name: column name.
        dtype: Arrow type of a scalar column, or the value type of a tensor / list column.
        doc: what the column holds (units, conventions).
        shape: symbolic shape of a tensor column per row, e.g. ``("d_model", "d_head")``; ``()`` for a
            scalar column.
        ragged: a per-row 1-D vector whose length may differ between rows (Arrow list column).
    """

    name: str
    dtype: pa.DataType
    doc: str
    shape: tuple[str, ...] = ()
    ragged: bool = False

    @property
    def is_tensor(self) -> bool:
        return bool(self.shape) and not self.ragged

    def describe_type(self) -> str:
        if self.ragged:
            return f"list<{self.dtype}>"
        if self.shape:
            return f"tensor<{self.dtype}>[{', '.join(self.shape)}]"
        return str(self.dtype)


@dataclass(frozen=True)
class TableSchema:
    """A declared table: name, purpose and columns. Builds, validates and documents Arrow tables."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    version: int = 1
    _by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {c.name: c for c in self.columns}
        if len(by_name) != len(self.columns):
            raise ValueError(f"table {self.name!r} declares a column twice")
        object.__setattr__(self, "_by_name", by_name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def build(self, data: Mapping[str, Any]) -> pa.Table:
        """Assemble an Arrow table from column data, in declared order.

        Args:
            data: column name -> values. Scalar columns take a sequence or 1-D array of length ``rows``;
                tensor columns take an array ``[rows, *shape]``; ragged columns a sequence of 1-D arrays.
        """
        missing = [n for n in self.column_names if n not in data]
        extra = sorted(set(data) - set(self.column_names))
        if missing or extra:
            raise SchemaMismatchError(f"table {self.name!r}: missing columns {missing}, undeclared columns {extra}")
        arrays = [self._to_arrow(c, data[c.name]) for c in self.columns]
        lengths = {len(a) for a in arrays}
        if len(lengths) > 1:
            raise SchemaMismatchError(f"table {self.name!r}: columns have different lengths {lengths}")
        return pa.Table.from_arrays(arrays, names=self.column_names)

    def _to_arrow(self, column: Column, values: Any) -> pa.Array:
        if column.is_tensor:
            array = np.ascontiguousarray(np.asarray(values, dtype=column.dtype.to_pandas_dtype()))
            if array.ndim != len(column.shape) + 1:
                raise SchemaMismatchError(
                    f"table {self.name!r}, column {column.name!r}: expected [rows, "
                    f"{', '.join(column.shape)}], got an array of shape {array.shape}"
                )
            if not len(array):  # pyarrow builds no tensor array from zero rows: an empty one of the same shape
                tensor_type = pa.fixed_shape_tensor(pa.from_numpy_dtype(array.dtype), array.shape[1:])
                storage = pa.FixedSizeListArray.from_arrays(
                    pa.array([], pa.from_numpy_dtype(array.dtype)), int(np.prod(array.shape[1:]))
                )
                return pa.ExtensionArray.from_storage(tensor_type, storage)
            return pa.FixedShapeTensorArray.from_numpy_ndarray(array)
        if column.ragged:
            return pa.array([np.asarray(v).tolist() for v in values], type=pa.list_(column.dtype))
        return pa.array(np.asarray(values).tolist() if isinstance(values, np.ndarray) else values, type=column.dtype)

    def validate(self, arrow_schema: pa.Schema, source: PathLike = "<table>") -> None:
        """Raise :class:`SchemaMismatchError` unless the schema has exactly the declared columns and types."""
        names = arrow_schema.names
        missing = [n for n in self.column_names if n not in names]
        extra = [n for n in names if n not in self._by_name]
        problems = []
        if missing:
            problems.append(f"missing columns {missing}")
        if extra:
            problems.append(f"undeclared columns {extra}")
        for name in names:
            column = self._by_name.get(name)
            if column is not None and not _type_matches(column, arrow_schema.field(name).type):
                problems.append(
                    f"column {name!r} is {arrow_schema.field(name).type}, declared {column.describe_type()}"
                )
        if problems:
            raise SchemaMismatchError(
                f"{source}: does not match table {self.name!r} (v{self.version}): "
                + "; ".join(problems)
                + ". It was probably written by another version of svalign: delete it and rerun the rule."
            )

    def markdown(self) -> str:
        """The table's documentation as a Markdown section (used for docs/schemas.md)."""
        lines = [
            f"### `{self.name}` (v{self.version})",
            "",
            self.doc,
            "",
            "| column | type | meaning |",
            "|---|---|---|",
        ]
        lines += [f"| `{c.name}` | `{c.describe_type()}` | {c.doc} |" for c in self.columns]
        return "\n".join(lines) + "\n"


HEAD_KEYS = (
    Column("model", pa.string(), "model name (key of config `models`)"),
    Column("variant", pa.string(), "trained, or random (random-init twin with the same architecture)"),
    Column("layer", pa.int64(), "layer index"),
    Column("head", pa.int64(), "query head index"),
)
"""Key columns shared by every per-head table of the real-model stages."""


def _type_matches(column: Column, arrow_type: pa.DataType) -> bool:
    if column.is_tensor:
        return (
            isinstance(arrow_type, pa.FixedShapeTensorType)
            and arrow_type.value_type == column.dtype
            and len(arrow_type.shape) == len(column.shape)
        )
    if column.ragged:
        return pa.types.is_list(arrow_type) and arrow_type.value_type == column.dtype
    return arrow_type == column.dtype


def tensor(table: pa.Table, name: str) -> np.ndarray:
    """A fixed-shape tensor column as one array ``[rows, *shape]``."""
    chunked = table.column(name)
    if not isinstance(chunked.type, pa.FixedShapeTensorType):
        raise TypeError(f"column {name!r} is {chunked.type}, not a fixed-shape tensor")
    if len(chunked) == 0:
        return np.zeros((0, *chunked.type.shape), dtype=chunked.type.value_type.to_pandas_dtype())
    return chunked.combine_chunks().to_numpy_ndarray()


def to_frame(table: pa.Table) -> pd.DataFrame:
    """A pandas DataFrame in which each fixed-shape tensor cell is an array of its declared shape.

    (pyarrow's own ``to_pandas`` flattens tensor cells to 1-D.)
    """
    tensor_names = [f.name for f in table.schema if isinstance(f.type, pa.FixedShapeTensorType)]
    frame = table.drop_columns(tensor_names).to_pandas()
    for name in tensor_names:
        frame[name] = list(tensor(table, name))
    return frame[table.schema.names]


@functools.cache
def _package_versions() -> dict[str, str]:
    versions = {}
    for package in _VERSIONED_PACKAGES:
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            versions[package] = importlib_metadata.version(package)
    return versions


@functools.cache
def _git_commit() -> str | None:
    """The commit of the svalign checkout this code runs from, with ``-dirty`` for local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance(stage: str, config: Mapping[str, Any] | None = None, seed: int | None = None) -> dict[str, Any]:
    """Provenance record for a file written by ``stage`` from ``config`` (the subset the rule used)."""
    return {
        "stage": stage,
        "config": dict(config or {}),
        "seed": seed,
        "packages": _package_versions(),
        "git_commit": _git_commit(),
    }


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[BinaryIO]:
    """A binary handle whose content appears under ``path`` only when the block ends without error.

    Written to a temporary file in the same directory, fsynced, then renamed over ``path``; on any error the
    previous file (if any) is left untouched and the temporary file is removed. A temporary file of the same target
    left by a killed process (no ``except`` ran) is removed by the next write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a write that was killed
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the mode a plain open() would
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(error, OSError) and error.filename is None:  # a full disk, a file-size limit: say where
            raise type(error)(error.errno, f"{error.strerror} (writing {path})", str(path)) from error
        raise


def write_text(path: PathLike, text: str) -> Path:
    """Atomically write a UTF-8 text file (generated Markdown, CSV)."""
    with atomic_file(path) as handle:
        handle.write(text.encode())
    return Path(path)


def write_table(
    path: PathLike,
    schema: TableSchema,
    data: Mapping[str, Any] | pa.Table,
    provenance_record: Mapping[str, Any],
    row_groups_by: str | None = None,
) -> Path:
    """Validate and atomically write one declared table with its provenance.

    The file appears under ``path`` only once it is complete; on any error the previous file (if any) is
    left untouched and the temporary file is removed. Every data page carries a CRC32 checksum, which
    :func:`read_table` verifies. With ``row_groups_by`` (a column the rows are sorted
    by, e.g. ``layer``) each value gets its own row group, so readers filtering on it read only that part.
    """
    path = Path(path)
    table = data if isinstance(data, pa.Table) else schema.build(data)
    schema.validate(table.schema, source=path)
    record = {"table": schema.name, "table_version": schema.version, **provenance_record}
    metadata = dict(table.schema.metadata or {})
    metadata[PROVENANCE_KEY] = json.dumps(record, sort_keys=True, default=_json_default).encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_file(path) as handle:
        if row_groups_by is None:
            pq.write_table(table, handle, compression="zstd", write_page_checksum=True)
        else:
            with pq.ParquetWriter(handle, table.schema, compression="zstd", write_page_checksum=True) as writer:
                values = table.column(row_groups_by).to_numpy()
                starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
                for start, stop in zip(starts, [*starts[1:], len(values)], strict=True):
                    writer.write_table(table.slice(start, stop - start))
    return path


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot record {type(value).__name__} in provenance")


def read_table(
    path: PathLike, schema: TableSchema, columns: Sequence[str] | None = None, min_rows: int = 0
) -> pa.Table:
    """Read a declared table, failing clearly on a missing, corrupt, foreign or outdated file.

    Checks, each failing with a message that names the file and the command that rebuilds it: the file exists and
    is Parquet; its provenance names ``schema``'s table and version (:class:`TableVersionError`); its columns and
    types are the declared ones (:class:`SchemaMismatchError`); every data page read matches its checksum.

    Args:
        path: the Parquet file.
        schema: the table it must hold.
        columns: read only these columns (validated against the full file schema first).
        min_rows: fail unless the table has at least this many rows (inputs that cannot be empty).
    """
    path = Path(path)
    if not path.is_file():
        raise ParquetReadError(f"{path}: no such Parquet file: {rebuild_advice(path)} (or run the stage's target)")
    try:
        parquet_file = pq.ParquetFile(path, page_checksum_verification=True)
        file_schema = parquet_file.schema_arrow
    except (pa.ArrowInvalid, OSError) as error:
        raise ParquetReadError(
            f"{path}: not a readable Parquet file ({error}); it is corrupt or truncated: {rebuild_advice(path)}"
        ) from error
    _check_version(path, file_schema, schema)
    schema.validate(file_schema, source=path)
    try:
        table = parquet_file.read(columns=list(columns) if columns is not None else None)
    except (pa.ArrowInvalid, OSError) as error:
        raise ParquetReadError(f"{path}: corrupt Parquet data ({error}): {rebuild_advice(path)}") from error
    if table.num_rows < min_rows:
        raise ParquetReadError(
            f"{path}: {table.num_rows} rows in table {schema.name}, at least {min_rows} needed: {rebuild_advice(path)}"
        )
    return table


def _check_version(path: Path, file_schema: pa.Schema, schema: TableSchema) -> None:
    """Raise :class:`TableVersionError` unless the file's provenance names ``schema``'s table and version."""
    metadata = file_schema.metadata or {}
    if PROVENANCE_KEY not in metadata:
        raise TableVersionError(
            f"{path}: no svalign provenance, so not a table svalign wrote (expected {schema.name} "
            f"v{schema.version}): {rebuild_advice(path)}"
        )
    record = json.loads(metadata[PROVENANCE_KEY])
    found = (record.get("table"), record.get("table_version"))
    if found != (schema.name, schema.version):
        raise TableVersionError(
            f"{path}: expected table {schema.name} v{schema.version}, found {found[0]} v{found[1]} "
            f"(written by another version of svalign, or another table): {rebuild_advice(path)}"
        )


def read_provenance(path: PathLike) -> dict[str, Any]:
    """The provenance record stored in a file written by :func:`write_table`."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError) as error:
        raise ParquetReadError(f"{path}: not a readable Parquet file ({error})") from error
    if PROVENANCE_KEY not in metadata:
        raise ParquetReadError(f"{path}: no svalign provenance; it was not written by svalign")
    return json.loads(metadata[PROVENANCE_KEY])


def read_frame(path: PathLike, schema: TableSchema, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A declared table as a DataFrame (:func:`read_table`, then :func:`to_frame`: tensor cells as arrays)."""
    return to_frame(read_table(path, schema, columns=columns))


@dataclass
class StepTables:
    """The tables one pipeline step made: output name → (schema, columns), one provenance record for all of them.

    Library steps return it; rule scripts write it with :func:`write_step`. ``row_groups_by`` names, per output,
    the column whose values get their own row group (see :func:`write_table`).
    """

    tables: dict[str, tuple[TableSchema, Any]]
    record: dict[str, Any]
    row_groups_by: dict[str, str] = field(default_factory=dict)


def write_step(step: StepTables, paths: Mapping[str, PathLike]) -> None:
    """Write every table of ``step`` to ``paths[output name]`` (atomically, one file at a time)."""
    for name, (schema, columns) in step.tables.items():
        write_table(paths[name], schema, columns, step.record, row_groups_by=step.row_groups_by.get(name))
