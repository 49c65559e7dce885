"""Convert a registered scikit-learn or XGBoost version to ONNX, check it, register it as a new version.

``convert_version(host, principal, "churn", 3)``:

1. loads version 3 from the registry's artifacts through its flavor;
2. converts it: scikit-learn with skl2onnx (doubles where onnxruntime runs them, else floats;
   classifiers without ZipMap, so outputs are ``label`` and ``probabilities`` tensors), XGBoost
   with onnxmltools (``pip install onnxmltools``);
3. predicts a sample with both (the version's saved input example, else 64 random rows
   matching its input schema) and requires the ONNX outputs to equal the original's: labels
   exactly, scores within ``rtol`` (1e-5) relative (plus a 1e-6 absolute floor for values near 0);
4. registers the ONNX model as the next version of the same model, from the same run (its files
   beside the original's in the run's artifacts), with the same signature and training data,
   flavor ``onnx`` and the tag ``matih.converted_from=<version>``.

Models with string inputs, and kinds the converters do not know, are refused with the reason.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from matih_lite.errors import InvalidInput
from matih_lite.serving.flavors.base import InputSchema, LoadOptions, flavor_conf, read_mlmodel

if TYPE_CHECKING:
    from matih_lite.host import Host


CONVERTED_FROM_TAG = "matih.converted_from"
SAMPLE_ROWS = 64


class Conversion(msgspec.Struct):
    """What a conversion produced and how closely the ONNX model matched the original."""

    name: str
    from_version: int
    version: int
    """The new version's number."""
    source: str
    checked_rows: int
    compared: list[str]
    """The outputs compared (``label``, ``probabilities``, ``variable``...)."""
    max_abs_diff: float
    converter: str


def to_onnx(model: Any, n_features: int, *, sample: np.ndarray | None = None) -> tuple[Any, str]:
    """(onnx ModelProto, converter description) for a fitted sklearn estimator or XGBoost model.

    Raises InvalidInput when no installed converter handles the model.
    """
    module = type(model).__module__
    if module.startswith("xgboost"):
        return _xgboost_to_onnx(model, n_features)
    if not hasattr(model, "get_params"):
        raise InvalidInput(f"cannot convert a {type(model).__name__} to ONNX: only scikit-learn and XGBoost models "
                           "convert")
    return _sklearn_to_onnx(model, n_features, sample)


def _sklearn_to_onnx(model: Any, n_features: int, sample: np.ndarray | None) -> tuple[Any, str]:
    try:
        import skl2onnx
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    except ImportError as exc:
        raise InvalidInput("converting scikit-learn models needs skl2onnx: pip install skl2onnx") from exc
    options = {"zipmap": False} if hasattr(model, "predict_proba") else None
    problems = []
    for tensor_type, label in ((DoubleTensorType, "double"), (FloatTensorType, "float")):
        try:
            onx = skl2onnx.to_onnx(model, initial_types=[("input", tensor_type([None, n_features]))], options=options)
            _session(onx)  # some operators have no double kernel in onnxruntime: then floats
            return onx, f"skl2onnx {skl2onnx.__version__} ({label} inputs)"
        except Exception as exc:  # skl2onnx raises RuntimeError, MissingShapeCalculator, NameError...
            problems.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    raise InvalidInput(f"skl2onnx cannot convert {type(model).__name__}: {'; '.join(problems)}")


def _xgboost_to_onnx(model: Any, n_features: int) -> tuple[Any, str]:
    try:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError as exc:
        raise InvalidInput("converting XGBoost models needs onnxmltools: pip install onnxmltools "
                           "(or pip install 'matih-lite[ml]')") from exc
    try:
        onx = onnxmltools.convert_xgboost(model, initial_types=[("input", FloatTensorType([None, n_features]))])
        _session(onx)
    except Exception as exc:
        raise InvalidInput(f"onnxmltools cannot convert this XGBoost {type(model).__name__}: {type(exc).__name__}: "
                           f"{exc}") from exc
    return onx, f"onnxmltools {onnxmltools.__version__} (float inputs)"


def _session(onx: Any) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])


def sample_inputs(folder: Path, schema: InputSchema, n_features: int, rows: int = SAMPLE_ROWS,
                  seed: int = 0) -> np.ndarray:
    """Rows to compare on: the saved input example (MLflow's ``input_example.json``), else random rows."""
    example = _input_example(folder, schema)
    if example is not None and example.ndim == 2 and example.shape[1] == n_features and len(example):
        return example
    rng = np.random.default_rng(seed)
    dtype = schema.row_dtype() if schema.specs else np.dtype(np.float64)
    data = rng.normal(size=(rows, n_features))
    if dtype.kind in "iu":
        data = np.rint(data * 3)
    elif dtype.kind == "b":
        data = data > 0
    return data.astype(dtype)


def _input_example(folder: Path, schema: InputSchema) -> np.ndarray | None:
    try:
        doc = read_mlmodel(folder)
    except Exception:
        return None
    info = doc.get("saved_input_example_info") or {}
    path = folder / str(info.get("artifact_path") or "input_example.json")
    if not path.is_file() or folder.resolve() not in path.resolve().parents:
        return None
    try:
        raw = json.loads(path.read_text())
        from matih_lite.serving.payload import parse_inputs

        if isinstance(raw, dict) and "data" in raw:
            value = parse_inputs("dataframe_split", {k: raw[k] for k in ("columns", "data") if k in raw}, schema)
        elif isinstance(raw, dict) and "inputs" in raw:
            value = parse_inputs("inputs", raw["inputs"], schema)
        else:
            value = parse_inputs("instances", raw, schema)
    except Exception:
        return None
    return value if isinstance(value, np.ndarray) else None


def compare(original: Any, converted: Any, *, rtol: float = 1e-5, extra: dict[str, Any] | None = None,
            ) -> tuple[list[str], float]:
    """Match the original's outputs against the ONNX outputs; returns (outputs compared, max abs diff).

    ``original`` is the original's primary output; ``extra`` more of its outputs (``probabilities``:
    ``predict_proba``). Raises InvalidInput saying which output diverged and by how much.
    """
    onnx_outputs = converted if isinstance(converted, dict) else {"output": converted}
    wanted = {"predictions": np.asarray(original), **{k: np.asarray(v) for k, v in (extra or {}).items()}}
    compared: list[str] = []
    worst = 0.0
    for label, ref in wanted.items():
        best: tuple[str, float] | None = None
        for name, out in onnx_outputs.items():
            for candidate in _views(np.asarray(out), ref):
                ok, diff = _close(ref, candidate, rtol)
                if ok:
                    best = (name, diff)
                    break
            if best:
                break
        if best is None:
            if label == "predictions":
                diffs = ", ".join(f"{n}: {_describe_diff(ref, np.asarray(o))}" for n, o in onnx_outputs.items())
                raise InvalidInput(f"the ONNX model's outputs differ from the original's predictions ({diffs}); "
                                   "not registering it")
            continue
        compared.append(best[0])
        worst = max(worst, best[1])
    return compared, worst


def _views(out: np.ndarray, ref: np.ndarray) -> list[np.ndarray]:
    views = []
    if out.shape == ref.shape:
        views.append(out)
    if out.size == ref.size and out.shape != ref.shape:
        views.append(out.reshape(ref.shape))
    if ref.ndim == 1 and out.ndim == 2 and out.shape[0] == ref.shape[0] and out.shape[1] == 2:
        views.append(out[:, 1])  # a binary classifier's positive-class score
    return views


def _close(ref: np.ndarray, out: np.ndarray, rtol: float) -> tuple[bool, float]:
    if ref.dtype.kind in "OUSb" or (ref.dtype.kind in "iu" and out.dtype.kind in "iu"):
        try:
            return bool(np.array_equal(ref.astype(out.dtype) if ref.dtype.kind != "O" else ref, out)), 0.0
        except (TypeError, ValueError):
            return False, float("inf")
    if out.dtype.kind not in "biuf":
        return False, float("inf")
    a, b = ref.astype(np.float64), out.astype(np.float64)
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return bool(np.allclose(b, a, rtol=rtol, atol=1e-6)), diff


def _describe_diff(ref: np.ndarray, out: np.ndarray) -> str:
    if out.size != ref.size:
        return f"shape {list(out.shape)} vs {list(ref.shape)}"
    try:
        a, b = ref.astype(np.float64).reshape(-1), out.astype(np.float64).reshape(-1)
        return f"max difference {float(np.max(np.abs(a - b))):.3g}, {int(np.sum(~np.isclose(a, b)))} values differ"
    except (TypeError, ValueError):
        return f"{int(np.sum(ref.reshape(-1) != out.reshape(-1)))} values differ"


def convert_version(host: Host, principal: Any, name: str, version: int | str, *, to: str = "onnx",
                    rtol: float = 1e-5) -> Conversion:
    """Convert a registered version to ONNX, verify it, and register the result (see the module docstring)."""
    from matih_lite.registry.service import Registry
    from matih_lite.serving import resolve_flavor
    from matih_lite.serving.flavors.onnx import OnnxFlavor, OnnxPredictor
    from matih_lite.serving.materialize import materialize

    if to != "onnx":
        raise InvalidInput(f"cannot convert to {to!r}: matih-lite converts to onnx")
    registry = Registry(host)
    mv = registry.get_version(principal, name, version)
    folder = materialize(host, principal.tenant, mv)
    flavor = resolve_flavor(host, mv.flavor, folder)
    if flavor.name == "onnx":
        raise InvalidInput(f"version {mv.version} of {name!r} is already an ONNX model")
    if flavor.name not in ("sklearn", "xgboost") and not _mlflow_loader(folder):
        raise InvalidInput(f"cannot convert the {flavor.name} flavor: matih-lite converts sklearn and xgboost models")
    predictor = flavor.load(folder, _options(host))
    schema = predictor.input_schema
    if schema.specs and not schema.numeric:
        raise InvalidInput(f"version {mv.version} of {name!r} takes string columns; converting it needs a per-column "
                           "ONNX graph, which 'models convert' does not build: convert it with skl2onnx yourself")
    n_features = schema.width
    if n_features is None:
        raise InvalidInput(f"cannot tell how many features version {mv.version} of {name!r} takes (no signature and "
                           "the model does not say); register it with a signature")
    raw = predictor.raw
    sample = sample_inputs(folder, schema, n_features)
    onx, converter = to_onnx(raw, n_features, sample=sample)
    original = predictor.predict(sample)
    extra = {}
    if hasattr(raw, "predict_proba") and type(raw).__name__ != "Booster":
        try:
            extra["probabilities"] = np.asarray(raw.predict_proba(sample))
        except Exception:
            pass
    with tempfile.TemporaryDirectory() as tmp:
        onnx_flavor = OnnxFlavor()
        out_dir = Path(tmp) / "model"
        onnx_flavor.save(onx, out_dir, signature=mv.signature)
        converted = onnx_flavor.load(out_dir, LoadOptions(intra_op_threads=0))
        assert isinstance(converted, OnnxPredictor)
        compared, worst = compare(original, converted.predict(sample), rtol=rtol, extra=extra)
        source = _store(host, principal, mv, out_dir)
    new = registry.register_version(
        principal, name, source, run_id=mv.run_id if source.startswith("runs:/") else None, flavor="onnx",
        signature=mv.signature, training_data=mv.training_data,
        description=f"ONNX conversion of version {mv.version} ({converter})",
        tags={CONVERTED_FROM_TAG: str(mv.version)}, create_model=False)
    return Conversion(name, mv.version, new.version, source, len(sample), compared, worst, converter)


def _mlflow_loader(folder: Path) -> bool:
    loader = flavor_conf(read_mlmodel(folder), "python_function").get("loader_module")
    return loader in ("mlflow.sklearn", "mlflow.xgboost")


def _options(host: Host) -> LoadOptions:
    selected = host.selection().get("serving") or {}
    trusted = selected.get("trusted_types") or []
    return LoadOptions(intra_op_threads=0, trusted_types=tuple(str(t) for t in trusted))


def _store(host: Host, principal: Any, mv: Any, folder: Path) -> str:
    """Upload the converted model beside the original: into its run when it has one."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    rel = f"onnx-from-v{mv.version}-{uuid.uuid4().hex[:8]}"
    if mv.run_id:
        from matih_lite.tracking.service import Tracking

        tracking = Tracking(host)
        try:
            for path in files:
                tracking.log_artifact(principal.tenant, mv.run_id, f"{rel}/{path.relative_to(folder).as_posix()}",
                                      path.read_bytes())
            return f"runs:/{mv.run_id}/{rel}"
        except Exception:  # a deleted run takes no files: keep them in the registry's own folder instead
            pass
    root = f"_converted/{mv.name}/{rel}"
    for path in files:
        host.artifacts.put(f"{principal.tenant}/{root}/{path.relative_to(folder).as_posix()}", path.read_bytes())
    return f"mlflow-artifacts:/{root}"
