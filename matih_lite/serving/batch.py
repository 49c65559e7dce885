"""Batch inference: score a Parquet or CSV file, larger than memory if need be, into Parquet.

:func:`score_batch` streams the input through DuckDB (``read_parquet`` / ``read_csv``, in an
in-memory database with a memory limit) as Arrow record batches of at most ``chunk_rows``, calls
``predict`` on each, and appends the input columns plus ``prediction`` (and probability or
other output columns) to a Parquet file with one row group per chunk. Memory stays flat: a
chunk at a time is in Python, whatever the input's size. The output appears whole or not at
all (written beside it, then renamed).

The scoring function is pluggable: ``predict(batch: pyarrow.RecordBatch) -> outputs``, where
outputs are one array (first axis = rows) or a dict of named arrays (the first is the
prediction; a 2-D ``probabilities`` entry becomes ``probability_0``, ``probability_1``...).
:func:`load_scorer` builds one for a registered version or a deployment's primary version.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from matih_lite.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from matih_lite.host import Host


INPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".txt": "csv"}
"""File suffixes read, by format (``.gz`` and ``.zst`` compressed CSV too; a folder means its Parquet files)."""
DEFAULT_CHUNK_ROWS = 50_000


class BatchResult(msgspec.Struct):
    """What a batch scoring wrote."""

    input: str
    output: str
    rows: int
    chunks: int
    seconds: float
    columns: list[str]
    """The columns added to the input's."""


def input_format(path: Path) -> str:
    """``parquet`` or ``csv`` for an input path. Raises InvalidInput for other suffixes."""
    if path.is_dir():
        return "parquet"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".zst"):
        suffixes = suffixes[:-1]
    found = INPUT_FORMATS.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise InvalidInput(f"cannot tell the format of {path.name!r}: batch scoring reads "
                           f"{', '.join(sorted(INPUT_FORMATS))} files (or a folder of Parquet files)")
    return found


def open_input(con: Any, path: Path) -> tuple[Any, int | None]:
    """A DuckDB relation over the input, and its row count when it is cheap to know (Parquet metadata)."""
    import duckdb

    if not path.exists():
        raise NotFound(f"input {str(path)!r} does not exist")
    fmt = input_format(path)
    source = str(path / "**" / "*.parquet") if path.is_dir() else str(path)
    try:
        if fmt == "parquet":
            rel = con.read_parquet(source)
            total = int(con.sql("SELECT sum(num_rows) FROM parquet_file_metadata(?)", params=[source])
                        .fetchall()[0][0] or 0)
        else:
            rel = con.read_csv(source)
            total = None
    except duckdb.Error as exc:
        raise InvalidInput(f"cannot read {str(path)!r} as {fmt}: {exc}") from exc
    return rel, total


def score_batch(predict: Callable[[Any], Any], input: str | Path, output: str | Path,
                chunk_rows: int = DEFAULT_CHUNK_ROWS, *, progress: Callable[[int, int | None], None] | None = None,
                prediction_column: str = "prediction", memory_limit: str = "1GB",
                threads: int | None = None) -> BatchResult:
    """Score ``input`` (Parquet or CSV) chunk by chunk with ``predict`` into the Parquet file ``output``.

    ``progress(rows_done, total_rows_or_None)`` is called after each chunk. Raises NotFound (no
    input), InvalidInput (unreadable input, outputs that do not match the rows, a column name taken).
    """
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    if chunk_rows < 1:
        raise InvalidInput(f"chunk rows must be at least 1, got {chunk_rows}")
    source, target = Path(input), Path(output)
    started = time.perf_counter()
    config: dict[str, Any] = {"memory_limit": memory_limit}
    if threads:
        config["threads"] = threads
    con = duckdb.connect(config=config)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    writer = None
    rows = chunks = 0
    added: list[str] = []
    try:
        rel, total = open_input(con, source)
        reader = rel.to_arrow_reader(chunk_rows)
        schema = None
        target.parent.mkdir(parents=True, exist_ok=True)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            extra = prediction_columns(predict(batch), batch.num_rows, prediction_column)
            if schema is None:
                taken = [name for name in extra if name in batch.schema.names]
                if taken:
                    raise InvalidInput(f"the input already has a column {taken[0]!r}; name the prediction column "
                                       "otherwise (--prediction-column)")
                added = list(extra)
            elif list(extra) != added:
                raise InvalidInput(f"the model's outputs changed between chunks: {added} then {list(extra)}")
            scored = pa.RecordBatch.from_arrays([*batch.columns, *extra.values()],
                                                names=[*batch.schema.names, *extra])
            if writer is None:
                schema = scored.schema
                writer = pq.ParquetWriter(tmp, schema)
            elif scored.schema != schema:
                scored = pa.Table.from_batches([scored]).cast(schema)
            writer.write(scored)
            rows += batch.num_rows
            chunks += 1
            if progress is not None:
                progress(rows, total)
        if writer is None:  # no rows: the input's columns and a prediction column, empty
            empty = reader.schema.append(pa.field(prediction_column, pa.float64()))
            writer = pq.ParquetWriter(tmp, empty)
            added = [prediction_column]
        writer.close()
        writer = None
        os.replace(tmp, target)
    except duckdb.Error as exc:
        raise InvalidInput(f"reading {str(source)!r} failed: {exc}") from exc
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        con.close()
    return BatchResult(str(source), str(target), rows, chunks, round(time.perf_counter() - started, 3), added)


def prediction_columns(outputs: Any, n: int, prediction_column: str = "prediction") -> dict[str, Any]:
    """A model's outputs for ``n`` rows as named Arrow columns (see the module docstring)."""
    import pyarrow as pa

    if isinstance(outputs, (pa.Array, pa.ChunkedArray)):
        outputs = outputs.to_numpy(zero_copy_only=False)
    named = list(outputs.items()) if isinstance(outputs, Mapping) else [(prediction_column, outputs)]
    if not named:
        raise InvalidInput("the model returned no outputs")
    columns: dict[str, Any] = {}
    for i, (name, value) in enumerate(named):
        name = prediction_column if i == 0 else str(name)
        arr = np.asarray(value)
        if arr.ndim == 0 or len(arr) != n:
            got = "one value" if arr.ndim == 0 else f"{len(arr)} rows"
            raise InvalidInput(f"the model returned {got} of {name!r} for a chunk of {n} rows")
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim == 1:
            columns[name] = _arrow(arr)
        elif arr.ndim == 2:
            stem = "probability" if name in ("probabilities", "probability") else name
            for j in range(arr.shape[1]):
                columns[f"{stem}_{j}"] = _arrow(np.ascontiguousarray(arr[:, j]))
        else:
            columns[name] = pa.array(list(arr.reshape(n, -1)))  # tensors per row, as lists
    return columns


def _arrow(arr: np.ndarray) -> Any:
    import pyarrow as pa

    if arr.dtype.kind in "OUS":
        return pa.array(arr.tolist())
    return pa.array(arr)


# ---------------------------------------------------------------------------------------------
# Scorers: a registered version, or a deployment's primary version
# ---------------------------------------------------------------------------------------------

class Scorer:
    """A loaded model as a batch ``predict(batch)``: picks the model's input columns out of each chunk."""

    def __init__(self, predictor: Any, description: str, columns: Sequence[str] | None = None,
                 probabilities: bool = True) -> None:
        self.predictor = predictor
        self.description = description
        self.columns = list(columns) if columns else None
        self.probabilities = probabilities

    def __call__(self, batch: Any) -> Any:
        inputs = model_inputs(batch, self.predictor.input_schema, self.columns)
        outputs = self.predictor.predict(inputs)
        proba = getattr(self.predictor, "predict_proba", None)
        if not self.probabilities or proba is None or isinstance(outputs, Mapping):
            return outputs
        try:
            probabilities = np.asarray(proba(inputs))
        except Exception:  # a regressor, or a model without probabilities
            return outputs
        classes = getattr(getattr(self.predictor, "raw", None), "classes_", None)
        if probabilities.ndim != 2 or classes is None or len(classes) != probabilities.shape[1]:
            return {"prediction": outputs, "probabilities": probabilities}
        return {"prediction": outputs, **{f"probability_{c}": probabilities[:, j] for j, c in enumerate(classes)}}


class ServiceScorer:
    """A deployment of a remote ml-service as a batch ``predict(batch)``: each chunk is one request to its
    predict route (``dataframe_split``), answered through the deployment's routes like any client's."""

    def __init__(self, http: Any, deployment: str, columns: Sequence[str] | None = None,
                 request_rows: int = 5_000) -> None:
        from urllib.parse import quote

        self.http = http
        self.path = f"/api/v1/deployments/{quote(deployment, safe='')}/predict"
        self.columns = list(columns) if columns else None
        self.request_rows = request_rows
        self.description = f"deployment {deployment} at {http.url}"

    def __call__(self, batch: Any) -> Any:
        names = self.columns or list(batch.schema.names)
        missing = [c for c in names if c not in batch.schema.names]
        if missing:
            raise InvalidInput(f"the input has no column {missing[0]!r}")
        table = batch.select(names)
        parts: list[Any] = []
        for start in range(0, table.num_rows, self.request_rows):
            chunk = table.slice(start, self.request_rows)
            rows = [list(r) for r in zip(*(chunk.column(i).to_pylist() for i in range(chunk.num_columns)))]
            body = {"dataframe_split": {"columns": names, "data": rows}}
            parts.append(self.http.call("POST", self.path, json=body)["predictions"])
        if parts and isinstance(parts[0], Mapping):
            return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
        return np.concatenate([np.asarray(p) for p in parts]) if parts else np.empty(0)


def model_inputs(batch: Any, schema: Any, columns: Sequence[str] | None = None) -> Any:
    """A record batch as what a predictor takes: a 2-D array of its columns in the model's order
    (numeric models), or a dict of column arrays (models with string columns)."""
    available = batch.schema.names
    kind = getattr(schema, "kind", "any")
    names = list(schema.names) if kind == "columns" else None
    if columns:
        names = list(columns)
    elif names is None:
        width = getattr(schema, "width", None)
        numeric = [n for n in available if _numeric(batch.column(n).type)]
        names = available if width in (None, len(available)) else numeric
        if width is not None and len(names) != width:
            raise InvalidInput(f"the model takes {width} features but the input has {len(available)} columns "
                               f"({len(numeric)} numeric); choose them with --columns")
    missing = [n for n in names if n not in available]
    if missing:
        raise InvalidInput(f"the input has no column {missing[0]!r}; the model takes: {', '.join(names)}")
    arrays = {n: batch.column(n).to_numpy(zero_copy_only=False) for n in names}
    if all(a.dtype.kind in "biuf" for a in arrays.values()):
        dtype = schema.row_dtype() if kind == "columns" and not columns else np.float64
        return np.column_stack([a.astype(dtype, copy=False) for a in arrays.values()]) if arrays else \
            np.empty((batch.num_rows, 0))
    return arrays


def _numeric(arrow_type: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)


def load_scorer(host: Host, principal: Any, *, deployment: str | None = None, model: str | None = None,
                version: str | int | None = None, columns: Sequence[str] | None = None) -> Scorer:
    """A :class:`Scorer` for a deployment's primary version, or for ``model`` at ``version`` (a number or
    an alias). Loads the version in this process from the registry's artifacts.
    Raises NotFound, InvalidInput."""
    from matih_lite.registry.service import Registry
    from matih_lite.serving import resolve_flavor
    from matih_lite.serving.flavors.base import LoadOptions
    from matih_lite.serving.materialize import materialize

    registry = Registry(host)
    via = ""
    if deployment:
        from matih_lite.serving.deployments import Deployments
        from matih_lite.serving.routing import primary_version

        d = Deployments(host).get(principal, deployment)
        version = primary_version(d)
        if version is None:
            raise InvalidInput(f"deployment {deployment!r} serves no version yet (it follows {d.target} "
                               f"{d.follows!r} of model {d.model!r})")
        model = d.model
        via = f" (deployment {deployment})"
    if not model or version is None:
        raise InvalidInput("name a deployment, or a model and a version")
    text = str(version).strip()
    if text.lstrip("vV").isdigit():
        mv = registry.get_version(principal, model, int(text.lstrip("vV")))
    else:
        mv = registry.get_version_by_alias(principal, model, text.lstrip("@"))
    folder = materialize(host, principal.tenant, mv)
    flavor = resolve_flavor(host, mv.flavor, folder)
    selected = host.selection().get("serving") or {}
    trusted = tuple(str(t) for t in selected.get("trusted_types") or [])
    predictor = flavor.load(folder, LoadOptions(intra_op_threads=0, trusted_types=trusted))
    return Scorer(predictor, f"{model} v{mv.version} ({flavor.name}){via}", columns)
