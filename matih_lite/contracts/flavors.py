"""What a serving backend needs to load and call a model, with no serving-domain import.

A model version reaches a serving backend as a :class:`ModelLoad`: its key, the folder holding
its files (laid out as MLflow lays a model out: an ``MLmodel`` file beside the model's files),
the flavor's *name*, what the model takes (:class:`InputSchema`) and gives, and how to load it
(:class:`LoadOptions`). A remote backend (Triton, a model server) needs no more than the name
and the folder. A backend that runs models in its own process also gets ``loader``, the flavor
object a plugin contributed through ``register_flavors`` (:class:`Flavor`), whose ``load``
returns a :class:`Predictor`.

The trust root for models whose loading can run code (pickle, cloudpickle, skops): the serving
cache, ``BackendContext.model_cache``, where the registry's artifacts are copied and checked
file by file (:func:`is_verified_copy`). Such models load only from there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

if TYPE_CHECKING:
    import numpy as np

SERVING_CACHE = "serving-cache"
"""The serving cache's folder name under a state folder."""
MANIFEST = ".matih-manifest.json"
"""Written last into a cached model folder: its files, sizes and sha256 as the artifact store recorded them."""


# MLflow column types -> numpy dtype names. ``str``/``bytes``/``object`` columns become object arrays.
MLFLOW_TYPES: dict[str, str] = {
    "boolean": "bool", "integer": "int32", "long": "int64", "float": "float32", "double": "float64",
    "string": "str", "binary": "bytes", "datetime": "object", "object": "object",
}
NUMERIC_KINDS = "biuf"


class TensorSpec(msgspec.Struct, frozen=True):
    """One input: a named column (``shape`` None) or a tensor (``shape`` with -1 where any size goes)."""

    name: str
    dtype: str
    """A numpy dtype name (``float64``, ``int64``, ``bool``...) or ``str``, ``bytes``, ``object``."""
    shape: tuple[int, ...] | None = None
    optional: bool = False

    @property
    def numeric(self) -> bool:
        return self.dtype not in ("str", "bytes", "object")

    def np_dtype(self) -> np.dtype:
        import numpy as np

        return np.dtype(self.dtype) if self.numeric else np.dtype(object)


class InputSchema(msgspec.Struct, frozen=True, dict=True):
    """What a model takes, in order.

    ``kind`` is ``columns`` (named scalar columns: an MLflow column signature, or scikit-learn's
    ``feature_names_in_``), ``tensors`` (named tensors with shapes: ONNX inputs, an MLflow tensor
    signature, or one unnamed ``(-1, n_features)`` tensor), or ``any`` (nothing is known).
    """

    kind: str = "any"
    specs: tuple[TensorSpec, ...] = ()

    @cached_property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @cached_property
    def numeric(self) -> bool:
        """Every input is a number or a boolean: the rows fit one 2-D array."""
        return all(s.numeric for s in self.specs)

    def row_dtype(self) -> np.dtype:
        """The dtype of the 2-D array of rows when every column is numeric (float64 when they mix)."""
        return self._row_dtype

    @cached_property
    def _row_dtype(self) -> np.dtype:
        import numpy as np

        if not self.specs:
            return np.dtype(np.float64)
        dtypes = {s.dtype for s in self.specs}
        if len(dtypes) == 1:
            return np.dtype(dtypes.pop())
        found = np.result_type(*[np.dtype(d) for d in dtypes])
        return found if found.kind != "b" else np.dtype(np.float64)

    @cached_property
    def width(self) -> int | None:
        """Columns per row: the column count, or a single tensor's last dimension when it is 2-D."""
        if self.kind == "columns":
            return len(self.specs)
        if self.kind == "tensors" and len(self.specs) == 1:
            shape = self.specs[0].shape
            if shape is not None and len(shape) == 2 and shape[1] > 0:
                return shape[1]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "inputs": [
            {"name": s.name, "dtype": s.dtype, **({"shape": list(s.shape)} if s.shape is not None else {})}
            for s in self.specs]}

    @classmethod
    def from_signature(cls, signature: Mapping[str, Any] | None) -> InputSchema | None:
        """The schema of an MLflow signature (``{"inputs": [...]}``, as the registry keeps it), or None."""
        if not signature:
            return None
        cols = signature.get("inputs")
        if isinstance(cols, str):
            try:
                cols = json.loads(cols)
            except ValueError:
                return None
        if not isinstance(cols, list) or not cols:
            return None
        specs: list[TensorSpec] = []
        tensors = all(isinstance(c, Mapping) and c.get("type") == "tensor" for c in cols)
        for i, col in enumerate(cols):
            if not isinstance(col, Mapping):
                return None
            name = col.get("name")
            name = str(name) if name is not None else ("" if len(cols) == 1 else str(i))
            optional = col.get("required") is False or bool(col.get("optional", False))
            if col.get("type") == "tensor":
                spec = col.get("tensor-spec") or {}
                dtype = dtype_name(spec.get("dtype", "float64"))
                shape = spec.get("shape")
                specs.append(TensorSpec(name, dtype, tuple(int(d) for d in shape) if shape else None, optional))
            else:
                kind = col.get("type")
                dtype = MLFLOW_TYPES.get(kind, "object") if isinstance(kind, str) else "object"
                specs.append(TensorSpec(name, dtype, None, optional))
        return cls("tensors" if tensors else "columns", tuple(specs))


def dtype_name(value: Any) -> str:
    """A numpy dtype name for a dtype-like value (``str``, ``bytes`` or ``object`` for the non-numeric ones)."""
    import numpy as np

    text = str(value)
    if text in ("str", "string", "object", "bytes"):
        return {"string": "str"}.get(text, text)
    try:
        dt = np.dtype(text)
    except TypeError:
        return "object"
    if dt.kind in "US":
        return "str" if dt.kind == "U" else "bytes"
    return dt.name if dt.kind in NUMERIC_KINDS else "object"


class LoadOptions(msgspec.Struct, frozen=True):
    """How the serving backend wants a model loaded; flavors ignore what does not concern them."""

    intra_op_threads: int = 1
    """Threads one prediction may use (onnxruntime intra-op, XGBoost nthread); 0 lets the library choose."""
    inter_op_threads: int = 1
    trusted_types: tuple[str, ...] = ()
    """skops types trusted beyond the ones the model's MLmodel lists (``sklearn.tree._tree.Tree``...)."""


@runtime_checkable
class Predictor(Protocol):
    """A loaded model: ``predict`` over numpy arrays, and what it takes and gives.

    ``inputs`` is a 2-D array of rows (columns in :attr:`input_schema` order), or a mapping of
    input name to array when the schema has columns of different kinds or several named tensors.
    The result is one array (first axis = rows) for a one-output model, else a dict of output name
    to array; the first of :attr:`output_names` is the primary output.
    """

    input_schema: InputSchema
    output_names: tuple[str, ...]

    def predict(self, inputs: Any) -> Any:
        """Outputs for a batch of rows. Raises InvalidInput on unusable inputs."""


@runtime_checkable
class Flavor(Protocol):
    """How one kind of model is saved to a folder and loaded back as a :class:`Predictor`."""

    name: str
    needs_trusted_source: bool
    """True when loading runs a deserializer that can execute code (pickle, cloudpickle, skops)."""

    def save(self, model: Any, folder: str | Path, *, signature: Mapping[str, Any] | None = None,
             input_example: Any = None) -> Path:
        """Write the model and its MLmodel file into ``folder``; returns the folder."""

    def load(self, folder: str | Path, options: LoadOptions | None = None) -> Predictor:
        """A predictor for the model saved in ``folder``. Raises InvalidInput, NotFound."""

    def accepts(self, model: Any) -> bool:
        """Whether ``save`` knows this model object."""


class ModelLoad(msgspec.Struct, frozen=True):
    """One model version as a serving backend is asked to load it."""

    key: str
    """What ``predict`` and ``unload`` name it by (``tenant/model/version`` for a deployment's versions)."""
    model_dir: str
    """The folder with the model's files (the MLmodel file and what it names)."""
    flavor: str
    """The flavor's name as the registry records it (``onnx``, ``sklearn``, ``xgboost``, ``pyfunc``...)."""
    loader: Any = None
    """The :class:`Flavor` object for ``flavor`` when the host has one; in-process backends load with it."""
    input_schema: InputSchema | None = None
    """What the model takes, from its signature when it has one."""
    output_names: tuple[str, ...] = ()
    """The model's outputs by name, when its signature or files say (the first is the primary one)."""
    signature: dict[str, Any] | None = None
    """The MLflow signature as the MLmodel file holds it (``inputs``/``outputs`` JSON), for output dtypes."""
    needs_trusted_source: bool = True
    """Loading can run code: load only from a verified copy (:func:`is_verified_copy`)."""


def resolve_reference(reference: str) -> Any:
    """The object a ``module:qualname`` reference names (a flavor class handed to another process by name, a
    pyfunc model's class). Raises ValueError for a reference of another shape; ImportError or AttributeError
    when it cannot be imported here."""
    import importlib

    module, _, qualname = str(reference).partition(":")
    if not module or not qualname:
        raise ValueError(f"{reference!r} must look like 'package.module:Name'")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def verify_copy(folder: str | Path) -> None:
    """Every file the folder's manifest lists is there with its recorded size and sha256 (what a process outside
    the service checks before it loads a model whose loading runs code: Triton's Python backend, a Flink job).
    Raises ValueError naming the first file that is not (the copy was changed after the service verified it)."""
    import hashlib

    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise ValueError(f"{folder} has no {MANIFEST}: refusing to load a model whose loading runs code from "
                         "files nobody verified")
    for entry in json.loads(manifest.read_text()).get("files", []):
        path = folder / entry["path"]
        if folder.resolve() not in path.resolve().parents:
            raise ValueError(f"manifest entry {entry['path']!r} points outside the model folder")
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        if size != entry.get("size", size) or (entry.get("sha256") and digest.hexdigest() != entry["sha256"]):
            raise ValueError(f"{entry['path']} does not match the sha256 the registry recorded: refusing to load it")


def is_verified_copy(path: str | Path, cache: str | Path) -> bool:
    """Whether ``path`` lies in a model folder of the serving cache ``cache`` that was copied whole and checked."""
    root = Path(cache).resolve()
    resolved = Path(path).resolve()
    if root not in resolved.parents:
        return False
    top = root / resolved.relative_to(root).parts[0]
    return (top / MANIFEST).is_file()
