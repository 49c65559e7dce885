"""The ``llm`` flavor: a large language model that an LLM server (vLLM, any OpenAI-compatible one) runs.

A version holds no weights: it records what the server was started with (a Hugging Face id or a
path), the name the server serves it under, and the sampling a request gets for the fields it leaves
out. Saved as an MLmodel folder like every flavor, so it is logged to a run and registered (SDK, CLI,
REST) like any model::

    from matih_lite.serving.flavors.llm import LanguageModel, save_llm

    save_llm(LanguageModel("HuggingFaceTB/SmolLM2-135M-Instruct", served_model_name="smollm2",
                           sampling={"temperature": 0.2, "max_tokens": 128}, max_model_len=2048), "model")

writes ``model/MLmodel``::

    flavors:
      llm:
        model: HuggingFaceTB/SmolLM2-135M-Instruct
        served_model_name: smollm2
        sampling: {temperature: 0.2, max_tokens: 128}
        max_model_len: 2048

A deployment of such a version is served by the ``llm`` slot's backend
(:class:`~matih_lite.contracts.llm.LLMBackend`), never loaded into the ml-service's process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matih_lite.contracts.flavors import LoadOptions
from matih_lite.contracts.llm import LLMModel
from matih_lite.errors import InvalidInput
from matih_lite.serving.flavors.base import flavor_conf, read_mlmodel, write_mlmodel

FLAVOR = "llm"

# (kind, low, high) for the sampling fields we know; others go to the server as they are (vLLM has many).
_NUMBERS: dict[str, tuple[type, float, float]] = {
    "temperature": (float, 0.0, 100.0), "top_p": (float, 0.0, 1.0), "min_p": (float, 0.0, 1.0),
    "presence_penalty": (float, -2.0, 2.0), "frequency_penalty": (float, -2.0, 2.0),
    "repetition_penalty": (float, 0.0, 100.0), "max_tokens": (int, 1, 2**31), "n": (int, 1, 128),
    "top_k": (int, -1, 2**31), "seed": (int, -(2**63), 2**63 - 1),
}
_NOT_SAMPLING = ("model", "prompt", "messages", "stream", "stream_options", "user")


@dataclass(frozen=True)
class LanguageModel:
    """What an ``llm`` version records (see the module docstring)."""

    model: str
    """A Hugging Face id (``Qwen/Qwen2.5-0.5B-Instruct``) or a path, as the server was started with."""
    served_model_name: str | None = None
    """The name the server serves it under (vLLM's ``--served-model-name``); default: ``model``."""
    sampling: Mapping[str, Any] = field(default_factory=dict)
    """Defaults for the request fields a caller leaves out: ``temperature``, ``top_p``, ``max_tokens``, ``stop``..."""
    max_model_len: int | None = None
    """The context window in tokens, when known (vLLM's ``--max-model-len``)."""

    def checked(self) -> LanguageModel:
        """This spec, validated. Raises InvalidInput naming the field at fault."""
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidInput("llm: 'model' must name a Hugging Face id or a path")
        name = self.served_model_name if self.served_model_name is not None else self.model
        if not isinstance(name, str) or not name.strip() or len(name) > 512:
            raise InvalidInput("llm: 'served_model_name' must be a non-empty name (at most 512 characters)")
        if self.max_model_len is not None and (isinstance(self.max_model_len, bool) or
                                               not isinstance(self.max_model_len, int) or self.max_model_len < 1):
            raise InvalidInput(f"llm: 'max_model_len' must be a positive number of tokens, got {self.max_model_len!r}")
        return LanguageModel(self.model.strip(), name.strip(), check_sampling(self.sampling), self.max_model_len)


def check_sampling(sampling: Any, where: str = "llm.sampling") -> dict[str, Any]:
    """Default sampling parameters, checked: known fields by type and range, others JSON values."""
    if sampling is None:
        return {}
    if not isinstance(sampling, Mapping):
        raise InvalidInput(f"{where} must be a table of sampling parameters, got {type(sampling).__name__}")
    out: dict[str, Any] = {}
    for key, value in sampling.items():
        if not isinstance(key, str) or key in _NOT_SAMPLING:
            raise InvalidInput(f"{where}: {key!r} is not a sampling parameter")
        if key in _NUMBERS:
            kind, low, high = _NUMBERS[key]
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
                (kind is float or float(value).is_integer()) and low <= value <= high
            if not ok:
                raise InvalidInput(f"{where}.{key} must be {'a whole number' if kind is int else 'a number'} "
                                   f"in [{low:g}, {high:g}], got {value!r}")
            value = kind(value)
        elif key == "stop":
            if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))):
                raise InvalidInput(f"{where}.stop must be a string or a list of strings, got {value!r}")
        elif not _json_value(value):
            raise InvalidInput(f"{where}.{key} must be a JSON value, got {type(value).__name__}")
        out[key] = value
    return out


def _json_value(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_value(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _json_value(v) for k, v in value.items())
    return False


def save_llm(spec: LanguageModel, folder: str | Path) -> Path:
    """Write ``spec`` as an MLmodel folder (the ``llm`` flavor only); returns the folder."""
    spec = spec.checked()
    conf: dict[str, Any] = {"model": spec.model, "served_model_name": spec.served_model_name,
                            "sampling": dict(spec.sampling)}
    if spec.max_model_len is not None:
        conf["max_model_len"] = spec.max_model_len
    return write_mlmodel(folder, {FLAVOR: conf})


def read_llm(folder: str | Path) -> LanguageModel:
    """The spec saved in ``folder``. Raises NotFound without an MLmodel, InvalidInput when it is no llm model."""
    conf = flavor_conf(read_mlmodel(folder), FLAVOR)
    if not conf:
        raise InvalidInput(f"the MLmodel in {folder} has no 'llm' flavor")
    return LanguageModel(conf.get("model"), conf.get("served_model_name"), conf.get("sampling") or {},
                         conf.get("max_model_len")).checked()


def llm_model(folder: str | Path, key: str) -> LLMModel:
    """What the ``llm`` slot's backend is handed to serve the version saved in ``folder`` under ``key``."""
    spec = read_llm(folder)
    return LLMModel(key=key, model=spec.model, served_model_name=str(spec.served_model_name),
                    sampling=dict(spec.sampling), max_model_len=spec.max_model_len)


class LLMFlavor:
    """``llm``: served by an LLM server through the ``llm`` slot, never loaded in-process."""

    name = FLAVOR
    needs_trusted_source = False
    serving_slot = "llm"
    """The slot whose backend serves this flavor's versions (every other flavor's: ``serving``)."""

    def accepts(self, model: Any) -> bool:
        return isinstance(model, LanguageModel)

    def save(self, model: Any, folder: str | Path, *, signature: Mapping[str, Any] | None = None,
             input_example: Any = None) -> Path:
        if isinstance(model, Mapping):
            model = LanguageModel(**{k: model[k] for k in ("model", "served_model_name", "sampling",
                                                            "max_model_len") if k in model})
        if not isinstance(model, LanguageModel):
            raise InvalidInput(f"the llm flavor saves a LanguageModel (or a mapping with 'model'), got "
                               f"{type(model).__name__}")
        return save_llm(model, folder)

    def load(self, folder: str | Path, options: LoadOptions | None = None) -> Any:
        raise InvalidInput(f"{read_llm(folder).model!r} is an llm model: it is served by an LLM server through the "
                           "llm slot (llm = { backend = \"vllm\", url = ... } in the profile), not in this process")
