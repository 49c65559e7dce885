"""``serving = { backend = "inprocess" }``: models loaded into this process and predicted on its threads.

Loading imports the flavor's framework (onnxruntime, scikit-learn, XGBoost) then and not before,
so ``matih-lite up`` starts without them. Flavors that can run code while loading (pickle,
cloudpickle, skops, pyfunc state) load only from the serving cache of the registry's artifacts
(:func:`matih_lite.serving.materialize.materialize`). Every method may be called from many threads:
predictions run side by side; a load for a key happens once while other keys keep predicting.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from matih_lite.contracts import BackendContext, Health
from matih_lite.contracts.slots import ServedModel
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.hookspecs import hookimpl
from matih_lite.serving.flavors.base import LoadOptions
from matih_lite.serving.materialize import cache_root, is_materialized


class InprocessSettings(msgspec.Struct, forbid_unknown_fields=True):
    intra_op_threads: int = 1
    """Threads one prediction may use (onnxruntime intra-op, XGBoost nthread); 0 lets the library decide."""
    inter_op_threads: int = 1
    trusted_types: list[str] = msgspec.field(default_factory=list)
    """skops types to trust for every model, beyond each model's own ``skops_trusted_types``."""
    trusted_dirs: list[str] = msgspec.field(default_factory=list)
    """Folders besides the serving cache from which pickled models may load (default: none)."""


class _Loaded:
    __slots__ = ("info", "lock", "predictor")

    def __init__(self, predictor: Any, info: ServedModel) -> None:
        self.predictor = predictor
        self.info = info
        self.lock = threading.Lock()


class InprocessServing:
    """The :class:`~matih_lite.contracts.ServingBackend` contract in this process."""

    def __init__(self, settings: InprocessSettings | None = None, home: str | Path = ".matih",
                 base_dir: str | Path = ".") -> None:
        self.settings = settings or InprocessSettings()
        self.home = Path(home)
        self.options = LoadOptions(intra_op_threads=self.settings.intra_op_threads,
                                   inter_op_threads=self.settings.inter_op_threads,
                                   trusted_types=tuple(self.settings.trusted_types))
        self._trusted_dirs = [(Path(base_dir) / d).resolve() for d in self.settings.trusted_dirs]
        self._models: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def health(self) -> Health:
        with self._lock:
            models = list(self._models.values())
        failing = [m.info.key for m in models if m.info.errors and m.info.last_error]
        detail = f"{len(models)} model(s) loaded"
        if failing:
            detail += f"; raising lately: {', '.join(failing[:5])}"
        return Health(True, detail)

    def load(self, key: str, model_dir: str | Path, flavor: Any) -> ServedModel:
        if not isinstance(key, str) or not key:
            raise InvalidInput("a serving key must be a non-empty string")
        flavor = _flavor(flavor)
        folder = Path(model_dir).resolve()
        if not folder.is_dir():
            raise NotFound(f"model folder {model_dir} does not exist")
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            current = self._models.get(key)
            if current is not None and current.info.model_dir == str(folder) and current.info.flavor == flavor.name:
                return current.info
            if getattr(flavor, "needs_trusted_source", True) and not self._trusted(folder):
                raise InvalidInput(
                    f"the {flavor.name} flavor unpickles code, so it loads only from the registry's artifacts: "
                    f"{model_dir} is not in the serving cache ({cache_root(self.home)}). Materialize the version "
                    "first (matih_lite.serving.load_version), or list the folder in the backend's trusted_dirs")
            predictor = flavor.load(folder, self.options)
            info = ServedModel(key=key, flavor=flavor.name, model_dir=str(folder), loaded_at=int(time.time() * 1000),
                               input_schema=predictor.input_schema, output_names=tuple(predictor.output_names))
            with self._lock:
                self._models[key] = _Loaded(predictor, info)
            return info

    def predict(self, key: str, inputs: Any) -> Any:
        model = self._models.get(key)
        if model is None:
            raise NotFound(f"no model is loaded under {key!r}")
        try:
            out = model.predictor.predict(inputs)
        except InvalidInput:
            with model.lock:
                model.info.rejected += 1
            raise
        except Exception as exc:
            with model.lock:
                model.info.errors += 1
                model.info.last_error = f"{type(exc).__name__}: {exc}"[:500]
            raise
        with model.lock:
            model.info.predictions += 1
        return out

    def predictor(self, key: str) -> Any:
        """The loaded predictor itself (for callers that batch or inspect). Raises NotFound."""
        model = self._models.get(key)
        if model is None:
            raise NotFound(f"no model is loaded under {key!r}")
        return model.predictor

    def unload(self, key: str) -> None:
        with self._lock:
            self._models.pop(key, None)
            self._loading.pop(key, None)

    def loaded(self) -> dict[str, ServedModel]:
        with self._lock:
            models = list(self._models.items())
        out = {}
        for key, model in models:
            with model.lock:
                out[key] = msgspec.structs.replace(model.info)
        return out

    def close(self) -> None:
        with self._lock:
            self._models.clear()

    def _trusted(self, folder: Path) -> bool:
        if is_materialized(folder, self.home):
            return True
        return any(folder == d or d in folder.parents for d in self._trusted_dirs)


def _flavor(flavor: Any) -> Any:
    if isinstance(flavor, str):
        from matih_lite.serving.flavors.pyfunc import builtin_flavor

        try:
            return builtin_flavor(flavor)
        except InvalidInput:
            raise InvalidInput(f"unknown flavor {flavor!r}: pass the flavor object from the host's register_flavors "
                               "registry (matih_lite.serving.flavor(host, name))") from None
    if not hasattr(flavor, "load") or not isinstance(getattr(flavor, "name", None), str):
        raise InvalidInput(f"{flavor!r} is not a model flavor (it needs a name and load())")
    return flavor


def create_backend(settings: InprocessSettings | None, context: BackendContext) -> InprocessServing:
    return InprocessServing(settings, home=context.home, base_dir=context.base_dir)


@hookimpl
def register_backends(register):
    register("serving", "inprocess", create_backend, settings=InprocessSettings,
             summary="models loaded in the ml-service (onnxruntime, scikit-learn, XGBoost, pyfunc); the lite default")
