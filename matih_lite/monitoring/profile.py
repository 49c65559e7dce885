"""Baselines: what a model version saw when it was trained, as one JSON profile per version.

A :class:`Profile` holds, per feature, the aggregate :mod:`~matih_lite.monitoring.stats` compares
windows against -- numeric: quantile edges (1,000 bins), counts and offsets on them, deciles for
PSI, moments, null rate, every value when there are at most 10,000; categorical: category
frequencies and null rate -- and the same for the model's predictions, plus the evaluation
metrics on the training data (from its labels and predictions, when both are given).

Profiles are stored by :class:`~matih_lite.monitoring.service.Monitoring` in the artifacts slot,
``<tenant>/_drift/<model>/v<version>/baseline.json``, and referenced by the version tag
``matih.drift.baseline``. Building one reads columns from a pandas DataFrame, a pyarrow Table,
a dict of arrays, or a Parquet/CSV file (through DuckDB, so neither pandas nor pyarrow is needed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from matih_lite.errors import InvalidInput
from matih_lite.monitoring import stats

BASELINE_SCHEMA = "matih-lite/drift-baseline/v1"
BASELINE_TAG = "matih.drift.baseline"
KINDS = ("numeric", "categorical")
TASKS = ("classification", "regression")
META_COLUMNS = frozenset({"timestamp", "request_id", "row", "deployment", "variant", "version", "latency_ms",
                          "shadow", "label", "label_timestamp", "_offset"})
"""Columns that are never features when a profile picks them itself."""


class Profile:
    """A version's baseline: feature, prediction and performance summaries of its training data."""

    def __init__(self, *, model: str, version: int, rows: int, features: dict[str, Any], prediction: Any = None,
                 target: str | None = None, prediction_column: str | None = None, task: str | None = None,
                 metrics: dict[str, float] | None = None, metrics_source: str = "", created_at: int = 0,
                 created_by: str = "", source: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                 notes: list[str] | None = None) -> None:
        self.model = model
        self.version = int(version)
        self.rows = int(rows)
        self.features = features
        self.prediction = prediction
        self.target = target
        self.prediction_column = prediction_column
        self.task = task
        self.metrics = dict(metrics or {})
        self.metrics_source = metrics_source
        self.created_at = created_at or int(time.time() * 1000)
        self.created_by = created_by
        self.source = dict(source or {})
        self.settings = dict(settings or {})
        self.notes = list(notes or [])

    def kinds(self) -> dict[str, str]:
        return {name: agg.kind for name, agg in self.features.items()}

    def summary(self) -> dict[str, Any]:
        """What a person wants to see: rows, each feature's kind, null rate and range or top categories."""
        features = {}
        for name, agg in self.features.items():
            entry: dict[str, Any] = {"kind": agg.kind, "null_rate": agg.null_rate, "count": agg.n}
            if agg.kind == "numeric":
                entry.update(mean=agg.mean if agg.n else None, std=agg.std if agg.n else None, min=agg.min,
                             max=agg.max, distinct=agg.distinct,
                             quantiles=_summary_quantiles(agg))
            else:
                freq = sorted(agg.frequencies().items(), key=lambda kv: -kv[1])[:10]
                entry.update(categories=len(agg.categories), top={k: v / agg.n for k, v in freq} if agg.n else {})
            features[name] = entry
        return {"schema": BASELINE_SCHEMA, "model": self.model, "version": self.version, "rows": self.rows,
                "created_at": self.created_at, "created_by": self.created_by, "target": self.target,
                "prediction_column": self.prediction_column, "task": self.task, "metrics": self.metrics,
                "metrics_source": self.metrics_source, "features": features,
                "prediction": None if self.prediction is None else {"kind": self.prediction.kind,
                                                                     "null_rate": self.prediction.null_rate},
                "source": self.source, "settings": self.settings, "notes": self.notes}

    def to_dict(self) -> dict[str, Any]:
        return {"schema": BASELINE_SCHEMA, "model": self.model, "version": self.version, "rows": self.rows,
                "created_at": self.created_at, "created_by": self.created_by, "target": self.target,
                "prediction_column": self.prediction_column, "task": self.task, "metrics": self.metrics,
                "metrics_source": self.metrics_source, "source": self.source, "settings": self.settings,
                "notes": self.notes, "features": {k: v.to_dict() for k, v in self.features.items()},
                "prediction": None if self.prediction is None else self.prediction.to_dict()}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        if d.get("schema") != BASELINE_SCHEMA:
            raise InvalidInput(f"not a matih-lite baseline (schema {d.get('schema')!r}, expected {BASELINE_SCHEMA})")
        return cls(model=d["model"], version=d["version"], rows=d["rows"],
                   features={k: stats.aggregate_from_dict(v) for k, v in d["features"].items()},
                   prediction=stats.aggregate_from_dict(d.get("prediction")), target=d.get("target"),
                   prediction_column=d.get("prediction_column"), task=d.get("task"), metrics=d.get("metrics"),
                   metrics_source=d.get("metrics_source", ""), created_at=d.get("created_at", 0),
                   created_by=d.get("created_by", ""), source=d.get("source"), settings=d.get("settings"),
                   notes=d.get("notes"))

    @classmethod
    def from_json(cls, data: bytes | str) -> Profile:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise InvalidInput(f"the stored baseline is not JSON: {exc}") from None
        return cls.from_dict(doc)


def _summary_quantiles(agg: stats.NumericAggregate) -> dict[str, float] | None:
    if agg.n == 0 or len(agg.edges) < 2:
        return None
    cum = np.cumsum(agg.counts) / agg.n
    out = {}
    for q in (0.01, 0.25, 0.5, 0.75, 0.99):
        i = int(np.searchsorted(cum, q))
        out[f"p{int(q * 100)}"] = float(agg.edges[min(max(i - 1, 0), len(agg.edges) - 1)])
    return out


# ---- columns from anything tabular --------------------------------------------------------------------
def columns_of(data: Any) -> dict[str, Any]:
    """``{name: column}`` from a pandas DataFrame, a pyarrow Table, a dict of arrays or lists, or a
    path to a Parquet or CSV file. Columns stay in their own type (numpy, pandas or pyarrow)."""
    if isinstance(data, (str, Path)):
        return read_table(data)
    if hasattr(data, "column_names") and hasattr(data, "column"):  # pyarrow Table
        return {str(name): data.column(name) for name in data.column_names}
    if hasattr(data, "columns") and hasattr(data, "dtypes"):  # pandas DataFrame
        return {str(name): data[name] for name in data.columns}
    if isinstance(data, Mapping):
        return {str(k): v for k, v in data.items()}
    if isinstance(data, np.ndarray) and data.dtype.names:
        return {name: data[name] for name in data.dtype.names}
    raise InvalidInput("data must be a DataFrame, a pyarrow Table, {column: values}, or a .parquet/.csv path")


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """A Parquet or CSV file's columns as numpy arrays (strings as object arrays), read with DuckDB."""
    import duckdb

    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"no file {p} to read")
    reader = "read_parquet" if p.suffix.lower() in (".parquet", ".pq") else "read_csv_auto"
    con = duckdb.connect()
    try:
        result = con.execute(f"SELECT * FROM {reader}(?)", [str(p)]).fetchnumpy()
    except duckdb.Error as exc:
        raise InvalidInput(f"cannot read {p.name}: {exc}") from None
    finally:
        con.close()
    out = {}
    for name, col in result.items():
        if isinstance(col, np.ma.MaskedArray):
            mask = np.ma.getmaskarray(col)
            if col.dtype.kind in "iuf":
                col = col.astype(np.float64).filled(np.nan)
            else:  # filled(None) would fill with the default "?" for objects
                data = np.asarray(col.data, dtype=object).copy()
                data[mask] = None
                col = data
        out[str(name)] = np.asarray(col)
    return out


def numeric_values(column: Any) -> np.ndarray:
    """A column as float64 with NaN for nulls (numpy, pandas, pyarrow, lists)."""
    if hasattr(column, "to_numpy") and hasattr(column, "null_count"):  # pyarrow Array/ChunkedArray
        import pyarrow as pa
        import pyarrow.compute as pc

        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                or pa.types.is_boolean(column.type)):
            try:
                column = pc.cast(column, pa.float64(), safe=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return stats.as_float(column.to_pylist())
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if hasattr(column, "to_numpy") and hasattr(column, "dtype"):  # pandas Series
        try:
            return column.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            return stats.as_float(column.to_numpy(dtype=object))
    return stats.as_float(column)


def category_counts(column: Any) -> tuple[dict[str, int], int]:
    """({category: count}, nulls) of a column, counted by pyarrow or pandas when it is theirs."""
    if hasattr(column, "null_count") and hasattr(column, "value_counts"):  # pyarrow
        import pyarrow.compute as pc

        counted = pc.value_counts(column)
        counts: dict[str, int] = {}
        for value, count in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()):
            key = stats.category_key(value)
            if key is not None:
                counts[key] = counts.get(key, 0) + int(count)
        return counts, int(column.null_count)
    if hasattr(column, "value_counts") and hasattr(column, "isna"):  # pandas
        counted = column.value_counts(dropna=True)
        counts = {}
        for value, count in counted.items():
            key = stats.category_key(value)
            if key is not None:
                counts[key] = counts.get(key, 0) + int(count)
        return counts, int(column.isna().sum())
    return stats.count_categories(column)


def column_kind(column: Any) -> str:
    """``numeric`` for integer and floating columns, ``categorical`` for the rest (bool, strings, objects)."""
    if hasattr(column, "type") and hasattr(column, "null_count"):  # pyarrow
        import pyarrow as pa

        return "numeric" if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) else "categorical"
    dtype = getattr(column, "dtype", None)
    if dtype is None:
        column = np.asarray(column)
        dtype = column.dtype
    kind = getattr(dtype, "kind", "O")
    if kind in "iuf":
        return "numeric"
    if kind == "O":
        sample = [v for v in list(np.asarray(column, dtype=object)[:1000]) if v is not None]
        if sample and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                          for v in sample):
            return "numeric"
    return "categorical"


def guess_task(column: Any) -> str:
    """``regression`` for float targets with many distinct values, else ``classification``."""
    values = numeric_values(column) if column_kind(column) == "numeric" else None
    if values is None:
        return "classification"
    finite = values[np.isfinite(values)]
    if finite.size and (np.any(finite != np.round(finite)) and np.unique(finite[:100_000]).size > 20):
        return "regression"
    return "classification"


# ---- building -------------------------------------------------------------------------------------------
def build_profile(data: Any, *, model: str, version: int, features: Sequence[str] | None = None,
                  target: str | None = None, prediction: str | Any = None, kinds: Mapping[str, str] | None = None,
                  task: str | None = None, metrics: Mapping[str, float] | None = None, metrics_source: str = "",
                  bins: int = stats.DEFAULT_BINS, coarse_bins: int = stats.DEFAULT_COARSE_BINS,
                  sample_cap: int = stats.DEFAULT_SAMPLE_CAP, max_categories: int = stats.DEFAULT_MAX_CATEGORIES,
                  created_by: str = "", source: Mapping[str, Any] | None = None, threads: int | None = None) -> Profile:
    """Profile ``data`` (the training set) for ``model`` version ``version``.

    ``features`` defaults to every column but ``target``, the prediction column and the
    inference log's own columns. ``prediction`` is a column name, or the predictions themselves
    (an array, one per row). With both ``target`` and predictions, the profile's metrics are
    computed on them (``task`` guessed from the target unless given); otherwise ``metrics`` are
    kept as given. Raises InvalidInput naming a missing column or an unknown kind.
    """
    columns = columns_of(data)
    if not columns:
        raise InvalidInput("the training data has no columns")
    rows = _rows(next(iter(columns.values())))
    prediction_column = prediction if isinstance(prediction, str) else None
    for name in [target, prediction_column, *(features or [])]:
        if name is not None and name not in columns:
            raise InvalidInput(f"the training data has no column {name!r}; its columns: {', '.join(columns)}")
    chosen = list(features) if features else [c for c in columns if c not in {target, prediction_column}
                                              and c not in META_COLUMNS]
    if not chosen:
        raise InvalidInput("no feature columns to profile; name them with features=[...]")
    kinds = dict(kinds or {})
    for name, kind in kinds.items():
        if kind not in KINDS:
            raise InvalidInput(f"kind of feature {name!r} must be numeric or categorical, not {kind!r}")

    def one(name: str) -> tuple[str, Any]:
        return name, _aggregate(columns[name], kinds.get(name), bins, coarse_bins, sample_cap, max_categories)

    workers = threads if threads is not None else min(8, len(chosen))
    if workers > 1 and rows >= 50_000:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="matih-baseline") as pool:
            profiled = dict(pool.map(one, chosen))
    else:
        profiled = dict(map(one, chosen))
    predictions = columns[prediction_column] if prediction_column else prediction
    pred_agg = None
    notes: list[str] = []
    if predictions is not None:
        if _rows(predictions) != rows:
            raise InvalidInput(f"{_rows(predictions)} predictions for {rows} rows of training data")
        pred_agg = _aggregate(predictions, kinds.get("__prediction__"), bins, coarse_bins, sample_cap, max_categories)
    computed: dict[str, float] = {}
    if target is not None and predictions is not None:
        task = task or guess_task(columns[target])
        if task not in TASKS:
            raise InvalidInput(f"task must be classification or regression, not {task!r}")
        labels = numeric_values(columns[target]) if task == "regression" else _objects(columns[target])
        preds = numeric_values(predictions) if task == "regression" else _objects(predictions)
        computed = stats.PerformanceAggregate.of(task, labels, preds).metrics()
        metrics_source = "training data (target and predictions)"
    elif target is not None:
        task = task or guess_task(columns[target])
        notes.append("no predictions given: the baseline has no prediction distribution (concept drift is not "
                     "checked) and no metrics of its own")
    return Profile(model=model, version=version, rows=rows, features=profiled, prediction=pred_agg, target=target,
                   prediction_column=prediction_column, task=task, metrics=computed or dict(metrics or {}),
                   metrics_source=metrics_source if (computed or metrics) else "", created_by=created_by,
                   source=source, notes=notes,
                   settings={"bins": bins, "coarse_bins": coarse_bins, "sample_cap": sample_cap,
                             "max_categories": max_categories})


def _aggregate(column: Any, kind: str | None, bins: int, coarse_bins: int, sample_cap: int,
               max_categories: int) -> Any:
    kind = kind or column_kind(column)
    if kind == "numeric":
        return stats.NumericAggregate.baseline(numeric_values(column), bins, coarse_bins, sample_cap)
    counts, nulls = category_counts(column)
    return stats.CategoricalAggregate.baseline(counts=counts, nulls=nulls, max_categories=max_categories)


def window_aggregate(baseline: Any, column: Any) -> Any:
    """``column`` (a window's values of one feature; None when the window lacks it) on ``baseline``'s edges."""
    if isinstance(baseline, stats.NumericAggregate):
        return baseline.like(numeric_values(column) if column is not None else np.empty(0))
    if column is None:
        return baseline.like(counts={})
    counts, nulls = category_counts(column)
    return baseline.like(counts=counts, nulls=nulls)


def aggregate_features(baselines: Mapping[str, Any], column: Any, rows: int, *,
                       threads: int | None = None) -> dict[str, Any]:
    """Each feature's window aggregate on its baseline; ``column(name)`` gives the window's values (or None).

    Large windows are aggregated on a few threads (numpy sorts without the GIL).
    """
    def one(name: str) -> tuple[str, Any]:
        return name, window_aggregate(baselines[name], column(name))

    workers = threads if threads is not None else min(4, len(baselines))
    if workers > 1 and rows >= 50_000:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="matih-window") as pool:
            return dict(pool.map(one, list(baselines)))
    return dict(map(one, list(baselines)))


def _objects(column: Any) -> np.ndarray:
    if hasattr(column, "to_pylist"):
        return np.asarray(column.to_pylist(), dtype=object)
    if hasattr(column, "to_numpy"):
        return column.to_numpy(dtype=object)
    return np.asarray(column, dtype=object)


def _rows(column: Any) -> int:
    return len(column) if not hasattr(column, "shape") else int(column.shape[0])
