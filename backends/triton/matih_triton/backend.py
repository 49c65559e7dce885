"""The serving contract over a Triton Inference Server: model repository writes, the repository extension, infer.

``load`` turns a :class:`~matih_lite.contracts.flavors.ModelLoad` (a key, a folder and a flavor name)
into one Triton model (:mod:`matih_triton.model_config` names it and lays out its tensors), writes it
into the repository (:mod:`matih_triton.repository`), asks Triton to load it (explicit model-control
mode) and waits until it is ready. ONNX models run on Triton's ``onnxruntime_onnx`` platform, or
through the Python backend where Triton has no onnxruntime backend (``onnx_runtime``); every other
flavor runs through the Python backend, whose generated ``model.py`` loads the folder with the very
flavor the ml-service would load it with (its class travels by name). Flavors whose loading runs code
are sent to Triton only from the serving cache (verified copies), and ``model.py`` checks every file's
sha256 again before loading.

``predict`` sends binary tensors (the binary-data extension, :mod:`matih_triton.wire`: the bytes
``tritonclient.http`` sends) on one keep-alive connection per calling thread; a request of more rows
than the model's ``max_batch_size`` goes as several requests, answered whole and in order. Triton's
answers map to the contract: 400 (the inputs do not fit) is InvalidInput, an unreachable server is
StoreError, an error of the model itself is :class:`TritonModelError`; a model Triton has forgotten
(it restarted) is loaded again from the repository and the call retried once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from matih_lite.contracts import Health
from matih_lite.contracts.flavors import InputSchema, ModelLoad, is_verified_copy
from matih_lite.contracts.slots import ServedModel
from matih_lite.errors import InvalidInput, NotFound, StoreError
from matih_triton.model_config import (
    ModelIO,
    Tensor,
    io_for,
    model_config,
    numpy_dtype,
    onnx_graph,
    output_specs,
    render_pbtxt,
    schema_from_config,
    tensors_of,
    triton_name,
    triton_version,
)
from matih_triton.plugin import TritonSettings
from matih_triton.repository import open_repository
from matih_triton.wire import HEADER_LENGTH, Connection, ProtocolError, decode_response, encode_request

PYTHON_MODEL = Path(__file__).with_name("python_model.py")
MODEL_FOLDER = "model"
ONNX_PLATFORM = "onnxruntime_onnx"


class TritonModelError(RuntimeError):
    """The model itself failed inside Triton (HTTP 500 from its infer): counted as the model's error."""


@dataclass
class _Served:
    name: str
    version: int
    io: ModelIO
    info: ServedModel
    lock: threading.Lock
    max_batch_size: int = 0
    """Rows Triton takes in one request of this model (its config's ``max_batch_size``); 0: no batch dimension."""

    @property
    def infer_path(self) -> str:
        return f"/v2/models/{self.name}/versions/{self.version}/infer"


class TritonServing:
    """The :class:`~matih_lite.contracts.ServingBackend` contract over one Triton server."""

    def __init__(self, settings: TritonSettings, *, repository: str, model_cache: str | Path,
                 trusted_dirs: list[Path] | None = None) -> None:
        self.settings = settings
        self.model_cache = Path(model_cache)
        self.repository = open_repository(repository, region=settings.s3_region,
                                          access_key_id=settings.s3_access_key_id,
                                          secret_access_key=settings.s3_secret_access_key)
        self._trusted_dirs = [Path(d).resolve() for d in trusted_dirs or ()]
        self._models: dict[str, _Served] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._local = threading.local()
        self._clients: list[Any] = []
        self._no_onnxruntime = settings.onnx_runtime == "python"
        self._closed = False
        self._ensured = False

    # ---- clients -----------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return self.settings.url.split("://", 1)[1]

    def client(self, *, timeout: float | None = None) -> Any:
        """This thread's ``tritonclient.http`` client (one per thread: the client is not thread-safe)."""
        attr = "client" if timeout is None else "admin"
        found = getattr(self._local, attr, None)
        if found is None:
            import tritonclient.http as httpclient

            wait = timeout or self.settings.timeout_s
            found = httpclient.InferenceServerClient(self.address, ssl=self.settings.url.startswith("https"),
                                                     connection_timeout=min(wait, 10.0), network_timeout=wait)
            setattr(self._local, attr, found)
            with self._lock:
                self._clients.append(found)
        return found

    def _admin(self) -> Any:
        return self.client(timeout=self.settings.load_timeout_s)

    def _unreachable(self, exc: BaseException, doing: str) -> StoreError:
        return StoreError(f"Triton at {self.settings.url} did not answer while {doing}: "
                          f"{type(exc).__name__}: {exc}"[:1000])

    # ---- health --------------------------------------------------------------------------------------------
    def health(self) -> Health:
        """Triton live (its process answers and can load and run models). Not Triton's own server readiness:
        under its default strict readiness a model unloaded in explicit mode (a deployment removed) stays
        listed as unavailable and makes the whole server "not ready", though everything served still answers;
        and a model Triton lost (a restart) is loaded again by this backend on its next request."""
        with self._lock:
            served = {s.name for s in self._models.values()}
        try:
            client = self.client()
            if not client.is_server_live():
                return Health(False, f"Triton at {self.settings.url} answers but is not live")
            index = client.get_model_repository_index() if served else []
        except Exception as exc:  # health reports, never raises
            return Health(False, f"Triton at {self.settings.url} is not reachable: {type(exc).__name__}: {exc}"[:500])
        ready = sum(1 for m in index if m.get("name") in served and m.get("state") == "READY")
        return Health(True, f"Triton at {self.settings.url} is live; {ready} of {len(served)} served model(s) "
                            f"ready (others load on their next request), from {self.repository.url}")

    # ---- loading -------------------------------------------------------------------------------------------
    def load(self, model: ModelLoad) -> ServedModel:
        key = model.key
        if not isinstance(key, str) or not key:
            raise InvalidInput("a serving key must be a non-empty string")
        folder = Path(model.model_dir).resolve()
        if not folder.is_dir():
            raise NotFound(f"model folder {model.model_dir} does not exist")
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            current = self._models.get(key)
            if current is not None and current.info.model_dir == str(folder) and current.info.flavor == model.flavor:
                return msgspec.structs.replace(current.info)
            loader = model.loader
            runs_code = model.needs_trusted_source or bool(getattr(loader, "needs_trusted_source", False))
            if runs_code and not self._trusted(folder):
                raise InvalidInput(
                    f"the {model.flavor} flavor unpickles code, so it loads only from the registry's artifacts: "
                    f"{model.model_dir} is not in the serving cache ({self.model_cache}). Materialize the version "
                    "first (matih_lite.serving.load_version), or list the folder in the backend's trusted_dirs")
            name, version = triton_name(key), triton_version(key)
            served = self._load_into_triton(model, folder, name, version, runs_code)
            with self._lock:
                self._models[key] = served
            return msgspec.structs.replace(served.info)

    def _load_into_triton(self, model: ModelLoad, folder: Path, name: str, version: int,
                          runs_code: bool) -> _Served:
        onnx_file = _onnx_file(folder) if model.flavor == "onnx" else None
        graph = onnx_graph(str(onnx_file)) if onnx_file is not None else None
        io = io_for(model.input_schema, graph)
        if onnx_file is not None and not self._no_onnxruntime:
            platform_files = {p.relative_to(folder).as_posix(): p for p in _files(folder)}
            config = model_config(name, io, platform=ONNX_PLATFORM, version=version, **self._shape(),
                                  default_model_filename=onnx_file.relative_to(folder).as_posix())
            try:
                return self._write_and_load(model, folder, name, version, io, config, platform_files)
            except InvalidInput as exc:
                if self.settings.onnx_runtime == "onnxruntime" or not _no_backend(str(exc)):
                    raise
                self._no_onnxruntime = True  # this Triton has no onnxruntime backend: the Python backend from now on
        flavor_class = _class_reference(model)
        params = {"matih_flavor_class": flavor_class, "matih_layout": io.layout,
                  "matih_schema": json.dumps(io.schema.to_dict()) if io.layout != "auto" else "",
                  "matih_verify": "true" if runs_code else "false",
                  "matih_threads": str(self.settings.intra_op_threads),
                  "matih_trusted_types": json.dumps(list(self.settings.trusted_types))}
        files: dict[str, Path | bytes] = {"model.py": PYTHON_MODEL.read_bytes()}
        files.update({f"{MODEL_FOLDER}/{p.relative_to(folder).as_posix()}": p for p in _files(folder)})
        config = model_config(name, io, backend="python", version=version, parameters=params, **self._shape())
        return self._write_and_load(model, folder, name, version, io, config, files)

    def _shape(self) -> dict[str, int]:
        return {"instances": self.settings.instances, "max_batch_size": self.settings.max_batch_size,
                "max_queue_delay_us": self.settings.max_queue_delay_us}

    def _write_and_load(self, model: ModelLoad, folder: Path, name: str, version: int, io: ModelIO,
                        config: dict[str, Any], files: Mapping[str, Path | bytes]) -> _Served:
        if not self._ensured:
            self.repository.ensure()
            self._ensured = True
        self.repository.write(name, render_pbtxt(config), version, files)
        client = self._admin()
        try:
            client.load_model(name)
        except Exception as exc:
            reason = _message(exc)
            if _is_http_error(exc):
                if model.key not in self._models:  # nothing of this key serves: leave no broken model behind
                    self.repository.remove(name)
                raise InvalidInput(f"Triton refused to load {model.key} (model {name}): {reason}"[:2000],
                                   detail={"triton_model": name}) from None
            raise self._unreachable(exc, f"loading {name}") from exc
        deadline = time.monotonic() + self.settings.load_timeout_s
        while True:
            try:
                if client.is_model_ready(name, str(version)):
                    break
            except Exception as exc:
                if not _is_http_error(exc):
                    raise self._unreachable(exc, f"waiting for {name}") from exc
            if time.monotonic() > deadline:
                raise InvalidInput(f"Triton did not make {name} ready within {self.settings.load_timeout_s:g} s")
            time.sleep(0.05)
        try:
            loaded = client.get_model_config(name)
        except Exception as exc:
            raise self._unreachable(exc, f"reading the config of {name}") from exc
        io = _completed(io, loaded)
        info = ServedModel(key=model.key, flavor=model.flavor, model_dir=str(folder),
                           loaded_at=int(time.time() * 1000), input_schema=io.schema,
                           output_names=tuple(t.name for t in io.outputs), output_specs=output_specs(io.outputs))
        return _Served(name, version, io, info, threading.Lock(), int(loaded.get("max_batch_size") or 0))

    # ---- predicting ----------------------------------------------------------------------------------------
    def predict(self, key: str, inputs: Any) -> Any:
        served = self._models.get(key)
        if served is None:
            raise NotFound(f"no model is loaded under {key!r}")
        try:
            tensors = feeds(inputs, served.io)
            outputs = self._infer(served, tensors)
        except InvalidInput:
            with served.lock:
                served.info.rejected += 1
            raise
        except TritonModelError as exc:
            with served.lock:
                served.info.errors += 1
                served.info.last_error = str(exc)[:500]
            raise
        except StoreError as exc:
            with served.lock:
                served.info.last_error = exc.message[:500]
            raise
        with served.lock:
            served.info.predictions += 1
        return outputs[served.io.outputs[0].name] if len(outputs) == 1 and served.io.outputs else outputs

    def _infer(self, served: _Served, tensors: list[tuple[Tensor, np.ndarray]], retry: bool = True) -> dict[str, Any]:
        """One request to Triton, or one per ``max_batch_size`` rows: Triton refuses a larger batch, which the
        in-process backend answers whole (so one large request answers the same on both)."""
        limit = served.max_batch_size
        rows = tensors[0][1].shape[0] if tensors and tensors[0][1].ndim else 0
        if not limit or rows <= limit:
            return self._infer_once(served, tensors, retry)
        parts = [self._infer_once(served, [(t, arr[start:start + limit]) for t, arr in tensors], retry)
                 for start in range(0, rows, limit)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _infer_once(self, served: _Served, tensors: list[tuple[Tensor, np.ndarray]],
                    retry: bool = True) -> dict[str, Any]:
        body, header_length = encode_request(tensors, [t.name for t in served.io.outputs])
        status, headers, data = self._post(served.infer_path, body, header_length, f"predicting with {served.name}")
        if status != 200:
            reason = _error_text(data)
            if retry and (status == 404 or "unknown model" in reason or "no available versions" in reason):
                self._reload(served)  # Triton restarted (explicit mode forgets its models): load it again
                return self._infer_once(served, tensors, retry=False)
            if 400 <= status < 500:
                raise InvalidInput(f"Triton refused the inputs: {reason}"[:2000])
            raise TritonModelError(reason)
        length = headers.get(HEADER_LENGTH)
        try:
            result = decode_response(data, int(length) if length else None)
        except (ValueError, KeyError, msgspec.DecodeError) as exc:
            raise StoreError(f"Triton at {self.settings.url} answered {served.name} with a body that is not an "
                             f"inference response: {exc}") from exc
        out: dict[str, Any] = {}
        for t in served.io.outputs or ():
            arr = result.get(t.name)
            if arr is None:
                continue
            if len(t.shape) == 1 and arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr.reshape(-1)  # dims [1] reshaped to [] on the model's side: one value per row
            if arr.dtype == object:
                arr = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.reshape(-1)],
                               dtype=object).reshape(arr.shape)
            out[t.name] = arr
        return out

    def _post(self, path: str, body: bytes, header_length: int | None, doing: str) -> tuple[int, dict, bytes]:
        """POST on this thread's keep-alive connection; one that Triton closed meanwhile is opened again once.
        Raises StoreError when Triton does not answer."""
        for attempt in (0, 1):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                return conn.post(path, body, header_length)
            except (OSError, ProtocolError) as exc:
                conn.close()
                if attempt == 0 and reused and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                    continue  # a kept-alive connection Triton had closed
                raise self._unreachable(exc, doing) from exc
        raise AssertionError("unreachable")

    def _connection(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            host, _, port = self.address.rpartition(":")
            conn = Connection(host, int(port), self.settings.timeout_s, tls=self.settings.url.startswith("https"))
            self._local.conn = conn
            with self._lock:
                self._clients.append(conn)
        return conn

    def _reload(self, served: _Served) -> None:
        try:
            self._admin().load_model(served.name)
        except Exception as exc:
            if _is_http_error(exc):
                raise TritonModelError(f"Triton cannot load {served.name} again: {_message(exc)}") from None
            raise self._unreachable(exc, f"loading {served.name} again") from exc

    # ---- unloading -----------------------------------------------------------------------------------------
    def unload(self, key: str) -> None:
        with self._lock:
            served = self._models.pop(key, None)
            self._loading.pop(key, None)
        if served is None:
            return
        try:
            self._admin().unload_model(served.name)
        except Exception:  # the server is gone or forgot it: nothing is loaded there either way
            pass
        try:
            self.repository.remove(served.name)
        except StoreError:
            pass

    def loaded(self) -> dict[str, ServedModel]:
        with self._lock:
            models = list(self._models.items())
        out = {}
        for key, served in models:
            with served.lock:
                out[key] = msgspec.structs.replace(served.info)
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for key in list(self._models):
            self.unload(key)
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            try:
                c.close()
            except Exception:
                pass

    # ---- Triton's own view (the ml-service passes it through for deployments) ---------------------------------
    def triton_model(self, key: str) -> tuple[str, int] | None:
        """The Triton model name and version a key is served as, or None when it is not loaded."""
        served = self._models.get(key)
        return None if served is None else (served.name, served.version)

    def model_config(self, key: str) -> dict[str, Any]:
        """Triton's ``get_model_config`` of the model loaded under ``key``. Raises NotFound, StoreError."""
        served = self._known(key)
        try:
            return self.client().get_model_config(served.name)
        except Exception as exc:
            raise self._unreachable(exc, f"reading the config of {served.name}") from exc

    def model_statistics(self, key: str) -> dict[str, Any]:
        """Triton's ``get_inference_statistics`` of the model loaded under ``key``. Raises NotFound, StoreError."""
        served = self._known(key)
        try:
            return self.client().get_inference_statistics(served.name, str(served.version))
        except Exception as exc:
            raise self._unreachable(exc, f"reading the statistics of {served.name}") from exc

    def _known(self, key: str) -> _Served:
        served = self._models.get(key)
        if served is None:
            raise NotFound(f"no model is loaded under {key!r}")
        return served

    def _trusted(self, folder: Path) -> bool:
        if is_verified_copy(folder, self.model_cache):
            return True
        return any(folder == d or d in folder.parents for d in self._trusted_dirs)

    def __repr__(self) -> str:
        return f"<TritonServing {self.settings.url} repository={self.repository.url} models={len(self._models)}>"


# ---- inputs to tensors ---------------------------------------------------------------------------------------------
def feeds(inputs: Any, io: ModelIO) -> list[tuple[Tensor, np.ndarray]]:
    """The model's input tensors for ``inputs`` (one 2-D array of rows, or arrays by name), cast to each tensor's
    dtype and shape. Raises InvalidInput naming the input at fault."""
    specs = io.inputs
    if not specs:
        raise InvalidInput("the model declares no inputs")
    if hasattr(inputs, "columns") and hasattr(inputs, "to_numpy"):  # a pandas DataFrame, off the hot path
        inputs = {str(c): inputs[c].to_numpy() for c in inputs.columns} if len(specs) > 1 else inputs.to_numpy()
    if isinstance(inputs, Mapping):
        names = [t.name for t in specs]
        if len(specs) == 1 and names[0] not in inputs:
            if len(inputs) == 1:
                return [(specs[0], _cast(specs[0], next(iter(inputs.values()))))]
            order = io.schema.names if io.schema.kind == "columns" else list(inputs)
            missing = [n for n in order if n not in inputs]
            if missing:
                raise InvalidInput(f"missing column {missing[0]!r}")
            return [(specs[0], _cast(specs[0], np.column_stack([np.asarray(inputs[n]).reshape(-1) for n in order])))]
        missing = [n for n in names if n not in inputs]
        if missing:
            raise InvalidInput(f"missing input {missing[0]!r}; the model takes {', '.join(names)}")
        return [(t, _cast(t, inputs[t.name])) for t in specs]
    arr = np.asarray(inputs)
    if len(specs) == 1:
        return [(specs[0], _cast(specs[0], arr))]
    if arr.ndim == 2 and arr.shape[1] == len(specs):  # one column per input
        return [(t, _cast(t, arr[:, i])) for i, t in enumerate(specs)]
    raise InvalidInput(f"the model takes {len(specs)} inputs ({', '.join(t.name for t in specs)}); send them by name")


def _cast(t: Tensor, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if t.numeric:
        if arr.dtype.kind in "OUS":
            raise InvalidInput(f"input {t.name!r} takes {t.dtype} numbers, got {arr.dtype} values")
        arr = arr.astype(numpy_dtype(t), copy=False)
    else:
        flat = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in arr.reshape(-1).tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        arr = out.reshape(arr.shape)
    want = t.shape
    if len(want) == 1:  # one value per row: Triton gets [N, 1] (dims [1], reshaped to [] for the model)
        if arr.ndim == 2 and arr.shape[1] == 1:
            return arr
        if arr.ndim != 1:
            raise InvalidInput(f"input {t.name!r} has shape {list(arr.shape)}; it takes one value per row")
        return arr.reshape(-1, 1)
    if arr.ndim == len(want) - 1 and len(want) == 2:
        arr = arr.reshape(1, -1) if want[1] != 1 else arr.reshape(-1, 1)
    if arr.ndim != len(want) or any(w not in (-1, g) for w, g in zip(want, arr.shape)):
        raise InvalidInput(f"input {t.name!r} has shape {list(arr.shape)}; the model takes "
                           f"{[('N' if i == 0 and w == -1 else w) for i, w in enumerate(want)]}")
    return np.ascontiguousarray(arr)


# ---- small pieces ----------------------------------------------------------------------------------------------------
def _completed(io: ModelIO, loaded: Mapping[str, Any]) -> ModelIO:
    """The model's tensors as Triton loaded them: what ``model.py`` declared itself fills what was not known."""
    batched = int(loaded.get("max_batch_size") or 0) > 0
    inputs = io.inputs or tensors_of(loaded.get("input"), batched)
    outputs = io.outputs or tensors_of(loaded.get("output"), batched)
    layout, schema = io.layout, io.schema
    if layout == "auto":
        schema = schema_from_config(loaded)
        if all(len(t.shape) == 1 for t in inputs) and schema.kind == "columns":
            layout = "columns"
        elif len(inputs) == 1 and len(inputs[0].shape) == 2:
            layout = "rows"
        else:
            layout = "tensors"
    return ModelIO(layout, tuple(inputs), tuple(outputs), schema if isinstance(schema, InputSchema) else InputSchema())


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _onnx_file(folder: Path) -> Path:
    preferred = folder / "model.onnx"
    if preferred.is_file():
        return preferred
    found = sorted(folder.rglob("*.onnx"))
    if not found:
        raise NotFound(f"no ONNX model file in {folder}")
    return found[0]


def _class_reference(model: ModelLoad) -> str:
    loader = model.loader
    if loader is None:
        raise InvalidInput(f"the triton backend runs a {model.flavor!r} model with the flavor object that loads it, "
                           "and none was given: install the plugin that registers that flavor (register_flavors)")
    kind = type(loader)
    if kind.__module__ in ("__main__", "builtins") or "<locals>" in kind.__qualname__:
        raise InvalidInput(f"the {model.flavor!r} flavor's class {kind.__qualname__} is not importable by name, so "
                           "Triton's Python cannot load models with it; define it in an installed module")
    return f"{kind.__module__}:{kind.__qualname__}"


def _is_http_error(exc: BaseException) -> bool:
    """Triton answered (an HTTP error status), as opposed to not answering at all."""
    status = getattr(exc, "status", None)
    return callable(status) and status() is not None and type(exc).__name__ == "InferenceServerException"


def _error_text(data: bytes) -> str:
    """The ``error`` of Triton's JSON error body (the body itself when it is not that)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")[:2000]
    return str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)


def _message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return str(text or exc).strip()


def _no_backend(reason: str) -> bool:
    """Triton's refusal says it has no onnxruntime backend (as the ``nvidia-pytriton`` build)."""
    return "unable to find backend library for backend 'onnxruntime'" in reason
