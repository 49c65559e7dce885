"""Serving core: flavors, the local model cache, request payloads (MLflow JSON and Open Inference
Protocol v2), and a micro-batcher. A library: HTTP routes and deployments are built on top of it.

- :mod:`~matih_lite.serving.flavors`: save and load models by flavor; :class:`Predictor`.
- :mod:`~matih_lite.serving.materialize`: a version's files in a local, checked cache.
- :mod:`~matih_lite.serving.payload`: MLflow scoring JSON to arrays, predictions to JSON.
- :mod:`~matih_lite.serving.oip`: Open Inference Protocol v2 requests and responses (JSON and binary).
- :mod:`~matih_lite.serving.batcher`: concurrent single-row requests into one model call.
- :mod:`~matih_lite.serving.convert`: sklearn and XGBoost models to ONNX, registered as new versions.

The helpers below join them to a host: :func:`load_version` is what a deployment calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matih_lite.contracts.flavors import ModelLoad
from matih_lite.errors import InvalidInput, MatihError
from matih_lite.serving.flavors.base import Flavor, InputSchema, LoadOptions, Predictor, detect_flavor, read_mlmodel

if TYPE_CHECKING:
    from matih_lite.host import Host


__all__ = [
    "Flavor",
    "InputSchema",
    "LoadOptions",
    "Predictor",
    "flavor",
    "flavors",
    "load_version",
    "model_load",
    "resolve_flavor",
    "serving_key",
]


def flavors(host: Host) -> dict[str, Any]:
    """Every flavor the host's plugins contribute, by name."""
    return host.registry("register_flavors")


def flavor(host: Host, name: str) -> Any:
    """The flavor named ``name``. Raises InvalidInput listing the installed flavors."""
    found = flavors(host).get(name)
    if found is None:
        raise InvalidInput(f"no flavor {name!r} is installed; installed: {', '.join(sorted(flavors(host))) or 'none'} "
                           "(a plugin adds one through register_flavors)")
    return found


def resolve_flavor(host: Host, name: str | None, model_dir: Any) -> Any:
    """The flavor to load ``model_dir`` with: ``name`` when the registry recorded one we have, else the
    one its MLmodel file names (MLflow's ``python_function`` loaders map to sklearn, xgboost, onnx)."""
    available = flavors(host)
    if name and name in available:
        return available[name]
    return available[detect_flavor(read_mlmodel(model_dir), list(available))]


def serving_key(tenant: str, name: str, version: int | str) -> str:
    """The key a version is loaded under: ``tenant/name/version``."""
    return f"{tenant}/{name}/{version}"


def load_version(host: Host, tenant: str, version: Any, *, key: str | None = None) -> Any:
    """Materialize a registry ModelVersion and load it into the host's serving backend.

    Returns the backend's :class:`~matih_lite.contracts.slots.ServedModel` (with ``key``, the
    input schema and output names); an ``llm`` version goes to the llm slot instead and gives its
    :class:`~matih_lite.contracts.llm.ServedLLM`. Idempotent: loading a loaded version again does nothing.
    """
    from matih_lite.serving.materialize import materialize

    key = key or serving_key(tenant, version.name, version.version)
    if getattr(flavors(host).get(getattr(version, "flavor", "") or ""), "serving_slot", "serving") == "llm":
        from matih_lite.serving.llm import load_llm_version

        return load_llm_version(host, tenant, version, key=key)  # an LLM server runs it, not this process
    folder = materialize(host, tenant, version)
    return host.backend("serving").load(model_load(host, folder, getattr(version, "flavor", None), key))


def model_load(host: Host, folder: Any, flavor_name: str | None, key: str) -> ModelLoad:
    """What the serving backend is handed for the model in ``folder``: the flavor by name and as the
    host's loader, and the input schema and outputs its MLmodel signature declares."""
    chosen = resolve_flavor(host, flavor_name, folder)
    try:
        signature = read_mlmodel(folder).get("signature")
    except MatihError:  # a bare model file (model.onnx) without an MLmodel beside it
        signature = None
    signature = dict(signature) if isinstance(signature, dict) else None
    return ModelLoad(key=key, model_dir=str(folder), flavor=chosen.name, loader=chosen,
                     input_schema=InputSchema.from_signature(signature), signature=signature,
                     output_names=output_names_of(signature),
                     needs_trusted_source=bool(getattr(chosen, "needs_trusted_source", True)))


def output_names_of(signature: dict[str, Any] | None) -> tuple[str, ...]:
    """The output names an MLflow signature declares (none when it names none)."""
    import json

    outputs = (signature or {}).get("outputs")
    if isinstance(outputs, str):
        try:
            outputs = json.loads(outputs)
        except ValueError:
            return ()
    if not isinstance(outputs, list):
        return ()
    return tuple(str(o["name"]) for o in outputs if isinstance(o, dict) and o.get("name"))
