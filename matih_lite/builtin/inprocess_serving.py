"""``serving = { backend = "inprocess" }``: models loaded into this process and predicted on its threads.

A model arrives as a :class:`~matih_lite.contracts.flavors.ModelLoad` and is loaded with its
``loader`` (the flavor a plugin contributed), which imports the flavor's framework (onnxruntime,
scikit-learn, XGBoost) then and not before, so ``matih-lite up`` starts without them. Flavors that
can run code while loading (pickle, cloudpickle, skops, pyfunc state) load only from the serving
cache (``BackendContext.model_cache``: verified copies of the registry's artifacts) or a folder the
settings list in ``trusted_dirs``. Every method may be called from many threads: predictions run
side by side; a load for a key happens once while other keys keep predicting.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from matih_lite.contracts import BackendContext, Health
from matih_lite.contracts.flavors import LoadOptions, ModelLoad, is_verified_copy
from matih_lite.contracts.slots import ServedModel
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.hookspecs import hookimpl


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

    def __init__(self, settings: InprocessSettings | None = None, *, model_cache: str | Path,
                 base_dir: str | Path = ".") -> None:
        self.settings = settings or InprocessSettings()
        self.model_cache = Path(model_cache)
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

    def load(self, model: ModelLoad) -> ServedModel:
        key, loader = model.key, model.loader
        if not isinstance(key, str) or not key:
            raise InvalidInput("a serving key must be a non-empty string")
        if loader is None or not callable(getattr(loader, "load", None)):
            raise InvalidInput(f"the inprocess backend loads a {model.flavor!r} model with its flavor object, and "
                               "none was given: install the plugin that registers that flavor (register_flavors)")
        folder = Path(model.model_dir).resolve()
        if not folder.is_dir():
            raise NotFound(f"model folder {model.model_dir} does not exist")
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            current = self._models.get(key)
            if current is not None and current.info.model_dir == str(folder) and current.info.flavor == model.flavor:
                return current.info
            runs_code = model.needs_trusted_source or getattr(loader, "needs_trusted_source", True)
            if runs_code and not self._trusted(folder):
                raise InvalidInput(
                    f"the {model.flavor} flavor unpickles code, so it loads only from the registry's artifacts: "
                    f"{model.model_dir} is not in the serving cache ({self.model_cache}). Materialize the version "
                    "first (matih_lite.serving.load_version), or list the folder in the backend's trusted_dirs")
            predictor = loader.load(folder, self.options)
            info = ServedModel(key=key, flavor=model.flavor, model_dir=str(folder),
                               loaded_at=int(time.time() * 1000), input_schema=predictor.input_schema,
                               output_names=tuple(predictor.output_names),
                               output_specs=tuple(getattr(predictor, "output_specs", ()) or ()))
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
        if is_verified_copy(folder, self.model_cache):
            return True
        return any(folder == d or d in folder.parents for d in self._trusted_dirs)


def create_backend(settings: InprocessSettings | None, context: BackendContext) -> InprocessServing:
    return InprocessServing(settings, model_cache=context.model_cache, base_dir=context.base_dir)


@hookimpl
def register_backends(register):
    register("serving", "inprocess", create_backend, settings=InprocessSettings,
             summary="models loaded in the ml-service (onnxruntime, scikit-learn, XGBoost, pyfunc); the lite default")
