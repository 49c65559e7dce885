"""Evaluating a model version on held-out data: metrics with bootstrap confidence intervals, and fairness.

Everything here is a pure function of labels, predictions and scores (NumPy only):

- **Metrics**: accuracy, precision, recall, F1 and ROC AUC for classifiers (binary: of the
  positive label; multiclass: macro averages, ROC AUC one-vs-rest), MSE, RMSE, MAE and R² for
  regressors. Undefined ratios (no predicted positives...) count as 0, as scikit-learn's
  ``zero_division=0`` does; an undefined ROC AUC (one class only) is left out.
- **Confidence intervals**: the percentile bootstrap. ``n_resamples`` resamples of the rows,
  drawn with replacement by a seeded generator, are represented as a matrix of counts
  (resample x row), so each metric is a few matrix products over all resamples at once; the
  interval is the central ``confidence`` mass of the resampled values.
- **Fairness** across each protected attribute, from the definitions fairlearn documents:
  per-group metrics; the *demographic parity difference*, the largest minus the smallest
  group selection rate P(ŷ = positive | group); the *equalized odds difference*, the larger of
  the true-positive-rate difference and the false-positive-rate difference between groups
  (each the largest minus the smallest group rate). Both with bootstrap intervals too.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from matih_lite.errors import InvalidInput

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mse", "rmse", "mae", "r2")
MAX_RESAMPLES = 20_000
_CELLS = 4_000_000  # counts held at once: resamples per chunk x rows


# ---- resampling ---------------------------------------------------------------------------------
def resample_counts(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap resamples of ``n`` rows as count matrices (resamples x rows, float), in chunks.

    Row ``i`` of a chunk says how often each row was drawn; rows sum to ``n``. The same seed
    gives the same resamples.
    """
    rng = np.random.default_rng(seed)
    per_chunk = max(1, min(n_resamples, _CELLS // max(n, 1)))
    done = 0
    while done < n_resamples:
        b = min(per_chunk, n_resamples - done)
        drawn = rng.integers(0, n, size=(b, n))
        flat = (drawn + (np.arange(b) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def _ratio(num: np.ndarray, den: np.ndarray, undefined: float = 0.0) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), undefined)


# ---- metrics over weighted rows (W: resamples x rows; one row of ones is the plain estimate) -----
def weighted_auc(W: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC AUC per weight row: P(score of a positive > score of a negative), ties counting half.

    NaN where a row has no positives or no negatives.
    """
    order = np.argsort(score, kind="mergesort")
    s, t = score[order], positive[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    Ws = W[:, order]
    pos = np.add.reduceat(Ws * t, starts, axis=1)
    neg = np.add.reduceat(Ws * (1.0 - t), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    return _ratio(num, den, math.nan)


def binary_rates(W: np.ndarray, t: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Confusion counts and rates of the positive class (``t``, ``p``: 0/1 truth and prediction)."""
    tp = W @ (t * p)
    fp = W @ ((1 - t) * p)
    fn = W @ (t * (1 - p))
    tn = W @ ((1 - t) * (1 - p))
    n = tp + fp + fn + tn
    return {
        "n": n, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "accuracy": _ratio(tp + tn, n, math.nan),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "selection_rate": _ratio(tp + fp, n, math.nan),
        "true_positive_rate": _ratio(tp, tp + fn, math.nan),
        "false_positive_rate": _ratio(fp, fp + tn, math.nan),
    }


def classification_metrics(W: np.ndarray, y: np.ndarray, pred: np.ndarray, scores: np.ndarray | None,
                           labels: Sequence[Any], positive: Any | None) -> dict[str, np.ndarray]:
    """accuracy, precision, recall, f1 (and roc_auc given scores) per weight row.

    Binary (``positive`` given): of the positive label; ``scores`` is its score per row.
    Multiclass: macro averages over the labels present in each resample (truth or prediction),
    ``scores`` a rows x labels matrix (ROC AUC one-vs-rest, macro).
    """
    correct = (y == pred).astype(np.float64)
    out: dict[str, np.ndarray] = {"accuracy": _ratio(W @ correct, W.sum(axis=1), math.nan)}
    if positive is not None:
        t = (y == positive).astype(np.float64)
        p = (pred == positive).astype(np.float64)
        rates = binary_rates(W, t, p)
        out.update({k: rates[k] for k in ("precision", "recall", "f1")})
        if scores is not None:
            out["roc_auc"] = weighted_auc(W, t, np.asarray(scores, dtype=np.float64))
        return out
    per: dict[str, list[np.ndarray]] = {"precision": [], "recall": [], "f1": [], "present": [], "auc": []}
    for k, label in enumerate(labels):
        t = (y == label).astype(np.float64)
        p = (pred == label).astype(np.float64)
        rates = binary_rates(W, t, p)
        for m in ("precision", "recall", "f1"):
            per[m].append(rates[m])
        per["present"].append(((rates["tp"] + rates["fn"] + rates["fp"]) > 0).astype(np.float64))
        if scores is not None:
            per["auc"].append(weighted_auc(W, t, np.asarray(scores[:, k], dtype=np.float64)))
    present = np.vstack(per["present"])
    count = present.sum(axis=0)
    for m in ("precision", "recall", "f1"):
        out[m] = _ratio((np.vstack(per[m]) * present).sum(axis=0), count, math.nan)
    if scores is not None:
        aucs = np.vstack(per["auc"])
        with np.errstate(invalid="ignore"):
            out["roc_auc"] = np.where(np.isnan(aucs).any(axis=0), math.nan, aucs.mean(axis=0))
    return out


def regression_metrics(W: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """mse, rmse, mae and r2 per weight row (R² is NaN when the resampled truth is constant)."""
    y = y.astype(np.float64)
    err = pred.astype(np.float64) - y
    n = W.sum(axis=1)
    sse = W @ (err * err)
    mse = _ratio(sse, n, math.nan)
    sst = W @ (y * y) - _ratio((W @ y) ** 2, n, math.nan)
    sst = np.where(sst > 1e-12 * np.maximum(W @ (y * y), 1e-300), sst, 0.0)  # rounding noise is no variance
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), math.nan)
    return {"mse": mse, "rmse": np.sqrt(mse), "mae": _ratio(W @ np.abs(err), n, math.nan), "r2": r2}


def group_gap(rates: Sequence[np.ndarray]) -> np.ndarray:
    """Largest minus smallest of per-group rates, per weight row, over the groups where it is defined."""
    stacked = np.vstack(rates)
    defined = ~np.isnan(stacked)
    hi = np.where(defined, stacked, -np.inf).max(axis=0)
    lo = np.where(defined, stacked, np.inf).min(axis=0)
    return np.where(defined.sum(axis=0) >= 1, hi - lo, math.nan)


# ---- the evaluation ---------------------------------------------------------------------------------
def estimate(point: float, resampled: np.ndarray, confidence: float) -> dict[str, Any]:
    """``{"value", "ci_low", "ci_high", "n_resamples"}`` (JSON-safe: NaN becomes None)."""
    finite = resampled[~np.isnan(resampled)]
    if finite.size and not math.isnan(point):
        alpha = (1.0 - confidence) / 2.0
        low, high = np.percentile(finite, [100 * alpha, 100 * (1 - alpha)])
    else:
        low = high = math.nan
    return {"value": _num(point), "ci_low": _num(low), "ci_high": _num(high), "n_resamples": int(finite.size)}


def _num(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def evaluate_predictions(
    y_true: Any, y_pred: Any, *, scores: Any = None, task: str | None = None, positive_label: Any = None,
    protected: Mapping[str, Any] | None = None, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
) -> dict[str, Any]:
    """Metrics with bootstrap intervals, and fairness across ``protected`` attributes (name -> group per row).

    ``task`` is ``classification`` or ``regression`` (guessed from the labels when not given).
    For classification ``scores`` is, for two classes, the positive class's score per row, and
    otherwise a rows x classes matrix in sorted label order. Returns a JSON-ready dict.
    """
    y = _vector(y_true, "y")
    pred = _vector(y_pred, "predictions")
    n = len(y)
    if n < 2 or len(pred) != n:
        raise InvalidInput(f"need at least 2 rows and one prediction per row; got {n} labels and "
                           f"{len(pred)} predictions")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or not 1 <= n_resamples <= MAX_RESAMPLES:
        raise InvalidInput(f"n_resamples must be between 1 and {MAX_RESAMPLES}, got {n_resamples!r}")
    if not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
        raise InvalidInput(f"confidence must be in [0.5, 1), got {confidence!r}")
    task = task or guess_task(y)
    if task not in ("classification", "regression"):
        raise InvalidInput(f"task must be classification or regression, not {task!r}")
    groups = {name: _vector(values, f"protected attribute {name!r}") for name, values in (protected or {}).items()}
    for name, g in groups.items():
        if len(g) != n:
            raise InvalidInput(f"protected attribute {name!r} has {len(g)} values for {n} rows")

    labels: list[Any] = []
    positive = None
    score_arr = None
    if task == "classification":
        labels = sorted(set(y.tolist()) | set(pred.tolist()), key=_sort_key)
        if positive_label is not None:
            positive = _match_label(positive_label, labels)
        elif len(labels) <= 2:
            positive = labels[-1]
        if scores is not None:
            score_arr = np.asarray(scores, dtype=np.float64)
            if positive is not None and score_arr.ndim == 2:
                raise InvalidInput("for a binary evaluation give the positive class's score per row, not a matrix")
            if positive is None and (score_arr.ndim != 2 or score_arr.shape[1] != len(labels)):
                score_arr = None  # scores that do not line up with the labels seen: no ROC AUC
            if score_arr is not None and score_arr.shape[0] != n:
                raise InvalidInput(f"got {score_arr.shape[0]} scores for {n} rows")

    def metrics(W: np.ndarray) -> dict[str, np.ndarray]:
        if task == "regression":
            return regression_metrics(W, y, pred)
        return classification_metrics(W, y, pred, score_arr, labels, positive)

    def fairness(W: np.ndarray) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, g in groups.items():
            per_group = {}
            for value in sorted(set(g.tolist()), key=_sort_key):
                mask = g == value
                Wg = W[:, mask]
                sub_scores = None if score_arr is None else score_arr[mask]
                if task == "regression":
                    m = regression_metrics(Wg, y[mask], pred[mask])
                else:
                    m = classification_metrics(Wg, y[mask], pred[mask], sub_scores, labels, positive)
                    if positive is not None:
                        rates = binary_rates(Wg, (y[mask] == positive).astype(np.float64),
                                             (pred[mask] == positive).astype(np.float64))
                        for k in ("selection_rate", "true_positive_rate", "false_positive_rate"):
                            m[k] = rates[k]
                m["count"] = Wg.sum(axis=1)
                per_group[value] = m
            entry: dict[str, Any] = {"groups": per_group}
            if task == "classification" and positive is not None:
                rates = list(per_group.values())
                entry["demographic_parity_difference"] = group_gap([r["selection_rate"] for r in rates])
                tpr = group_gap([r["true_positive_rate"] for r in rates])
                fpr = group_gap([r["false_positive_rate"] for r in rates])
                entry["true_positive_rate_difference"] = tpr
                entry["false_positive_rate_difference"] = fpr
                entry["equalized_odds_difference"] = np.fmax(tpr, fpr)
            out[name] = entry
        return out

    ones = np.ones((1, n))
    point = metrics(ones)
    point_fair = fairness(ones)
    boot: dict[str, list[np.ndarray]] = {k: [] for k in point}
    boot_fair: dict[tuple, list[np.ndarray]] = {}
    for W in resample_counts(n, n_resamples, seed):
        for k, v in metrics(W).items():
            boot[k].append(v)
        for path, v in _leaves(fairness(W)):
            boot_fair.setdefault(path, []).append(v)

    result_metrics = {k: estimate(point[k][0], np.concatenate(boot[k]), confidence) for k in point}
    result_fair: dict[str, Any] = {}
    for name, entry in point_fair.items():
        groups_out = {}
        for value, m in entry["groups"].items():
            count = int(m["count"][0])
            groups_out[str(value)] = {
                "count": count, "share": count / n,
                "metrics": {k: estimate(v[0], np.concatenate(boot_fair[(name, "groups", value, k)]), confidence)
                            for k, v in m.items() if k != "count"},
            }
        out_entry: dict[str, Any] = {"groups": groups_out}
        for k, v in entry.items():
            if k != "groups":
                out_entry[k] = estimate(v[0], np.concatenate(boot_fair[(name, k)]), confidence)
        if task == "classification" and positive is None:
            out_entry["note"] = ("demographic parity and equalized odds are defined for two classes; give "
                                 "positive_label to evaluate one class against the rest")
        result_fair[name] = out_entry

    return {
        "task": task,
        "n_samples": n,
        "labels": [_plain(label) for label in labels] if task == "classification" else None,
        "positive_label": _plain(positive) if positive is not None else None,
        "bootstrap": {"method": "percentile", "n_resamples": n_resamples, "seed": seed, "confidence": confidence},
        "metrics": result_metrics,
        "fairness": result_fair,
    }


def _leaves(fair: dict[str, dict[str, Any]]) -> Iterator[tuple[tuple, np.ndarray]]:
    for name, entry in fair.items():
        for value, m in entry["groups"].items():
            for k, v in m.items():
                yield (name, "groups", value, k), v
        for k, v in entry.items():
            if k != "groups":
                yield (name, k), v


def guess_task(y: np.ndarray) -> str:
    """Classification for labels that are text, booleans or few distinct integers; else regression."""
    if y.dtype.kind in "OUSb":
        return "classification"
    if y.dtype.kind in "iu":
        return "classification" if len(np.unique(y)) <= max(20, int(0.05 * len(y))) else "regression"
    return "regression"


def _vector(values: Any, what: str) -> np.ndarray:
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InvalidInput(f"{what} must be one value per row, got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise InvalidInput(f"{what} holds missing values (NaN); drop or fill those rows first")
    if arr.dtype.kind == "O":
        arr = np.asarray([_plain(v) for v in arr.tolist()], dtype=object)
    return arr


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _sort_key(v: Any) -> tuple:
    return (0, v, "") if isinstance(v, (int, float, bool, np.number)) else (1, 0, str(v))


def _match_label(label: Any, labels: Sequence[Any]) -> Any:
    for known in labels:
        if known == label or str(known) == str(label):
            return known
    raise InvalidInput(f"positive label {label!r} is not among the labels {list(labels)}")


def data_digest(*arrays: Any) -> str:
    """sha256 over the evaluation data, so a card says exactly which set it was computed on."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            continue
        if hasattr(a, "to_numpy"):
            a = a.to_numpy()
        arr = np.asarray(a)
        h.update(str(arr.shape).encode())
        h.update(arr.astype(str).tobytes() if arr.dtype.kind == "O" else np.ascontiguousarray(arr).tobytes())
    return "sha256:" + h.hexdigest()
