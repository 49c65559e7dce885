"""The job spec: what to run, on what, with which inputs, and for tuning what to search.

Written in TOML (``matih-lite train spec.toml``) or built in Python (:class:`JobSpec`); both go
through :func:`parse_spec`, which checks every key and names the one at fault::

    name = "churn-xgb"
    entrypoint = "churn_train:train"     # module:function, or a script: "train.py"
    framework = "xgboost"                # sklearn | xgboost | pytorch | custom
    experiment = "churn"
    max_failures = 2                     # restarts from the last checkpoint before the job fails

    [resources]                          # per worker (per trial when tuning)
    cpus = 1
    gpus = 0.5                           # fractions as Ray schedules them
    memory = "2GB"
    num_workers = 1                      # > 1: data-parallel (TorchTrainer, XGBoostTrainer), in a tune too
    node_selector = { pool = "gpu" }     # kuberay: where the workers' pods go
    tolerations = [{ key = "gpu", operator = "Exists", effect = "NoSchedule" }]
    image = "registry/ml:1.4"            # kuberay: the Ray image (default: the backend's)
    service_account = "trainer"          # kuberay: the pods' service account

    [inputs]
    train = "runs:/3f2a9c1e.../artifacts/data/train.csv"     # or a local path
    features = { service = "churn_v1", entities = "labels.parquet" }   # point-in-time training data

    [params]                             # passed to the entrypoint in its config
    num_boost_round = 20

    [tune]
    metric = "validation-logloss"
    mode = "min"
    num_samples = 20
    search = "random"                    # random | grid | optuna (TPE)
    scheduler = "asha"                   # fifo | asha | hyperband | pbt

    [tune.space]
    eta = { loguniform = [0.01, 0.3] }
    max_depth = { randint = [2, 8] }     # both ends included
    subsample = { uniform = [0.5, 1.0] }
    booster = { choice = ["gbtree", "dart"] }
    lambda = { grid = [0.1, 1.0] }       # every value, crossed with the samples

Nothing here imports Ray; :mod:`matih_lite.training.runner` turns a spec into Ray objects.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from matih_lite.errors import InvalidInput

FRAMEWORKS = ("sklearn", "xgboost", "pytorch", "custom")
SEARCH_ALGORITHMS = ("random", "grid", "optuna")
SCHEDULERS = ("fifo", "asha", "hyperband", "pbt")
DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint", "grid")
MODES = ("min", "max")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]{0,99}$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
          "ti": 2**40, "tib": 2**40}


class ResourceSpec(msgspec.Struct, forbid_unknown_fields=True):
    """Per worker; a tuning trial has ``num_workers`` workers (one by default)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int = 0
    """Bytes (TOML may say ``"2GB"`` or ``"512MiB"``)."""
    num_workers: int = 1
    node_selector: dict[str, str] = msgspec.field(default_factory=dict)
    """Kubernetes node labels the workers' pods must match (kuberay; other backends ignore it)."""
    tolerations: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """Kubernetes tolerations of the workers' pods (kuberay)."""
    image: str | None = None
    """The container image of the job's Ray cluster (kuberay; default: the backend's ``image``)."""
    service_account: str | None = None
    """The Kubernetes service account of the job's pods (kuberay; default: the backend's)."""


class TuneSpec(msgspec.Struct, forbid_unknown_fields=True):
    metric: str
    mode: str
    space: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """Each parameter as ``{DISTRIBUTION: ARGS}``, e.g. ``{"loguniform": [1e-4, 1e-1]}``."""
    num_samples: int | None = None
    """Trials to run (default 10; for grid search 1, i.e. every combination once)."""
    search: str = "random"
    scheduler: str = "fifo"
    max_concurrent: int | None = None
    """Trials at once (default: as many as the quota and the backend allow)."""
    max_t: int = 100
    """The most iterations (reports) a trial makes: where ASHA and HyperBand stop promoting."""
    grace_period: int = 1
    """ASHA: iterations every trial gets before it may be stopped."""
    reduction_factor: float = 3.0
    """ASHA and HyperBand: keep 1/reduction_factor of the trials at each rung."""
    perturbation_interval: int = 2
    """PBT: iterations between exploit/explore steps (trials should checkpoint at least this often)."""
    synch: bool = False
    """PBT: wait for every trial at each perturbation step (reproducible; all trials must run at once)."""
    seed: int | None = None
    time_budget_s: float | None = None


class FeatureInput(msgspec.Struct, forbid_unknown_fields=True):
    """Training data from the feature store: ``entities`` (a parquet or CSV file of entity keys, event times
    and labels) joined point in time with a feature ``service`` (or a list of ``features``) when the job
    starts; the entrypoint reads the joined frame as a parquet file with ``input_path(NAME)``."""

    entities: str
    service: str | None = None
    features: list[str] | None = None
    timestamp_column: str = "event_timestamp"


class JobSpec(msgspec.Struct, forbid_unknown_fields=True):
    entrypoint: str
    """``module:function`` (imported from ``base_dir`` or the installed packages), or a script path."""
    framework: str = "custom"
    name: str | None = None
    experiment: str = "Default"
    resources: ResourceSpec = msgspec.field(default_factory=ResourceSpec)
    inputs: dict[str, str | FeatureInput] = msgspec.field(default_factory=dict)
    """Name -> artifact URI (``runs:/RUN_ID/PATH``), local path, or a :class:`FeatureInput`; the entrypoint
    reads them with :func:`matih_lite.training.input_path`."""
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    max_failures: int = 0
    tune: TuneSpec | None = None
    register: str | None = None
    """Register the job's best model under this name (a Development version) when it succeeds."""
    base_dir: str | None = None
    """Where relative paths (the script, module imports, local inputs) resolve: the spec file's folder."""

    @property
    def kind(self) -> str:
        return "tune" if self.tune is not None else "train"

    @property
    def display_name(self) -> str:
        return self.name or self.entrypoint.replace(":", ".").rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


def load_spec(path: str | Path, *, kind: str | None = None) -> JobSpec:
    """Read and check a TOML spec; relative paths in it resolve against its folder.

    ``kind="tune"`` requires a ``[tune]`` table; ``kind="train"`` refuses one.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"job spec {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{p}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{p}: cannot read: {exc}") from None
    data.setdefault("base_dir", str(p.resolve().parent))
    return parse_spec(data, kind=kind, source=str(p))


def parse_spec(data: Mapping[str, Any] | JobSpec, *, kind: str | None = None, source: str = "job spec") -> JobSpec:
    """A checked :class:`JobSpec` from a mapping (parsed TOML, JSON) or a JobSpec built in Python.

    Raises InvalidInput naming the key at fault and what it expects.
    """
    raw = msgspec.to_builtins(data) if isinstance(data, JobSpec) else dict(data)
    if not isinstance(raw, dict):
        raise InvalidInput(f"{source}: expected a table of settings")
    raw = dict(raw)
    for name, value in (raw.get("inputs") or {}).items() if isinstance(raw.get("inputs"), dict) else ():
        if isinstance(value, dict) and "uri" in value and len(value) == 1:
            raw["inputs"] = {**raw["inputs"], name: value["uri"]}
        elif isinstance(value, dict):
            raw["inputs"] = {**raw["inputs"], name: _feature_input(value, f"{source}: inputs.{name}")}
    resources = raw.get("resources")
    if isinstance(resources, dict) and "memory" in resources:
        resources = dict(resources)
        resources["memory"] = parse_memory(resources["memory"], f"{source}: resources.memory")
        raw["resources"] = resources
    try:
        spec = msgspec.convert(raw, JobSpec, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{source}: {_explain(exc)}") from None
    _check(spec, source)
    if kind == "tune" and spec.tune is None:
        raise InvalidInput(f"{source}: a tuning job needs a [tune] table with metric, mode and space")
    if kind == "train" and spec.tune is not None:
        raise InvalidInput(f"{source}: this spec has a [tune] table; run it with 'matih-lite tune'")
    return spec


def _feature_input(value: dict[str, Any], where: str) -> FeatureInput:
    """A feature-store input table, checked: entities, and exactly one of service or features."""
    known = ", ".join(FeatureInput.__struct_fields__)
    unknown = sorted(set(value) - set(FeatureInput.__struct_fields__))
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}: unknown key; expected one of {known} (or give an artifact URI "
                           "such as runs:/RUN_ID/PATH)")
    try:
        found = msgspec.convert(value, FeatureInput, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{where}: {_explain(exc)}") from None
    if (found.service is None) == (found.features is None):
        raise InvalidInput(f"{where}: give exactly one of service = \"NAME\" or features = [\"view:feature\", ...]")
    if not found.entities.strip():
        raise InvalidInput(f"{where}.entities: name the entity file (parquet or CSV) with keys, times and labels")
    if found.features is not None and not all(isinstance(f, str) and ":" in f for f in found.features):
        raise InvalidInput(f"{where}.features: expected references like \"customer_stats:conv_rate\"")
    return found


def parse_memory(value: Any, where: str) -> int:
    """Bytes from an integer or a string such as ``"2GB"``, ``"512MiB"``, ``"1.5g"``."""
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: expected bytes or a size like \"2GB\", got {value!r}")
    if isinstance(value, (int, float)) and value >= 0:
        return int(value)
    if isinstance(value, str):
        match = _MEMORY.match(value)
        if match:
            return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
    raise InvalidInput(f"{where}: expected bytes or a size like \"2GB\" or \"512MiB\", got {value!r}")


def _explain(exc: msgspec.ValidationError) -> str:
    """msgspec's message with the key path first; an unknown key is named with the known ones."""
    text, path = str(exc), ""
    if " - at `$." in text:
        text, path = text.split(" - at `$.", 1)
        path = path.rstrip("`")
    unknown = re.match(r"Object contains unknown field `(.+)`", text)
    if unknown:
        kind = {"": JobSpec, "resources": ResourceSpec, "tune": TuneSpec}.get(path)
        known = ", ".join(kind.__struct_fields__) if kind else ""
        key = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        return f"{key}: unknown key" + (f"; expected one of {known}" if known else "")
    return f"{path}: {text}" if path else text


def _check(spec: JobSpec, source: str) -> None:
    def bad(key: str, message: str) -> InvalidInput:
        return InvalidInput(f"{source}: {key}: {message}")

    if not (_ENTRYPOINT.match(spec.entrypoint) or spec.entrypoint.endswith(".py")):
        raise bad("entrypoint", f"expected 'module:function' or a script ending in .py, got {spec.entrypoint!r}")
    if spec.framework not in FRAMEWORKS:
        raise bad("framework", f"unknown framework {spec.framework!r}; one of {', '.join(FRAMEWORKS)}")
    if spec.name is not None and not _NAME.match(spec.name):
        raise bad("name", f"{spec.name!r}: 1 to 100 letters, digits, '.', '_' or '-'")
    if not spec.experiment.strip():
        raise bad("experiment", "must be a non-empty name")
    r = spec.resources
    if not (r.cpus > 0 and math.isfinite(r.cpus)):
        raise bad("resources.cpus", f"must be more than 0, got {r.cpus}")
    if r.gpus < 0 or not math.isfinite(r.gpus) or (r.gpus > 1 and r.gpus != int(r.gpus)):
        raise bad("resources.gpus", f"must be 0, a fraction below 1 (such as 0.5) or a whole number; got {r.gpus}")
    if r.num_workers < 1:
        raise bad("resources.num_workers", f"must be at least 1, got {r.num_workers}")
    if r.num_workers > 1 and spec.framework == "sklearn":
        raise bad("resources.num_workers", "scikit-learn trains on one worker; use xgboost, pytorch or custom for "
                                           "data-parallel training")
    for key, value in r.node_selector.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise bad(f"resources.node_selector.{key}", f"not a Kubernetes label ({key}={value!r}): keys like "
                                                        "'pool' or 'example.com/pool', values of at most 63 letters, "
                                                        "digits, '-', '_' or '.'")
    for i, toleration in enumerate(r.tolerations):
        _check_toleration(toleration, f"resources.tolerations[{i}]", bad)
    if r.image is not None and (not r.image.strip() or any(c.isspace() for c in r.image)):
        raise bad("resources.image", f"not an image reference: {r.image!r}")
    if r.service_account is not None and not _DNS_NAME.match(r.service_account):
        raise bad("resources.service_account", f"{r.service_account!r} is not a Kubernetes name (lower-case "
                                               "letters, digits, '-' and '.')")
    if spec.max_failures < 0:
        raise bad("max_failures", f"must be 0 or more, got {spec.max_failures}")
    for name, uri in spec.inputs.items():
        if not re.match(r"^[A-Za-z_][\w\-]*$", name):
            raise bad(f"inputs.{name}", "input names are letters, digits, '_' and '-'")
        if isinstance(uri, FeatureInput):
            continue
        if not uri.strip():
            raise bad(f"inputs.{name}", "empty URI")
        scheme = uri.split(":", 1)[0] if re.match(r"^[a-z][a-z0-9+.-]*:", uri) else ""
        if scheme not in ("", "runs", "file"):
            raise bad(f"inputs.{name}", f"unsupported URI {uri!r}: use runs:/RUN_ID/PATH, file:///path or a "
                                        "local path")
    if spec.register is not None:
        from matih_lite.registry.service import check_model_name

        try:
            check_model_name(spec.register)
        except InvalidInput as exc:
            raise bad("register", exc.message) from None
    if spec.tune is not None:
        _check_tune(spec, bad)


_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def _check_toleration(toleration: Any, key: str, bad: Any) -> None:
    if not isinstance(toleration, dict):
        raise bad(key, f"expected a table like {{ key = \"gpu\", operator = \"Exists\" }}, got {toleration!r}")
    unknown = set(toleration) - _TOLERATION_KEYS
    if unknown:
        raise bad(f"{key}.{min(unknown)}", f"unknown key; expected one of {', '.join(sorted(_TOLERATION_KEYS))}")
    operator = toleration.get("operator", "Equal")
    if operator not in ("Equal", "Exists"):
        raise bad(f"{key}.operator", f"expected \"Equal\" or \"Exists\", got {operator!r}")
    if operator == "Exists" and toleration.get("value"):
        raise bad(f"{key}.value", "a toleration with operator \"Exists\" takes no value")
    effect = toleration.get("effect")
    if effect is not None and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise bad(f"{key}.effect", f"expected NoSchedule, PreferNoSchedule or NoExecute, got {effect!r}")
    seconds = toleration.get("tolerationSeconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
        raise bad(f"{key}.tolerationSeconds", f"expected whole seconds, got {seconds!r}")
    for field in ("key", "value"):
        if field in toleration and not isinstance(toleration[field], str):
            raise bad(f"{key}.{field}", f"expected a string, got {toleration[field]!r}")


def _check_tune(spec: JobSpec, bad: Any) -> None:
    t = spec.tune
    assert t is not None
    if not t.metric.strip():
        raise bad("tune.metric", "name the metric the entrypoint reports, e.g. \"validation-logloss\"")
    if t.mode not in MODES:
        raise bad("tune.mode", f"expected \"min\" or \"max\", got {t.mode!r}")
    if t.search not in SEARCH_ALGORITHMS:
        raise bad("tune.search", f"unknown search algorithm {t.search!r}; one of {', '.join(SEARCH_ALGORITHMS)} "
                                 "(optuna is TPE)")
    if t.scheduler not in SCHEDULERS:
        raise bad("tune.scheduler", f"unknown scheduler {t.scheduler!r}; one of {', '.join(SCHEDULERS)}")
    if not t.space:
        raise bad("tune.space", "give at least one parameter to search, e.g. lr = { loguniform = [1e-4, 1e-1] }")
    for key, value in (("num_samples", t.num_samples), ("max_concurrent", t.max_concurrent)):
        if value is not None and value < 1:
            raise bad(f"tune.{key}", f"must be at least 1, got {value}")
    for key in ("max_t", "grace_period", "perturbation_interval"):
        if getattr(t, key) < 1:
            raise bad(f"tune.{key}", f"must be at least 1, got {getattr(t, key)}")
    if t.grace_period > t.max_t:
        raise bad("tune.grace_period", f"({t.grace_period}) cannot exceed tune.max_t ({t.max_t})")
    if t.reduction_factor <= 1:
        raise bad("tune.reduction_factor", f"must be more than 1, got {t.reduction_factor}")
    for name, dist in t.space.items():
        kind = check_distribution(dist, f"tune.space.{name}", bad)
        if t.search == "grid" and kind not in ("grid", "choice"):
            raise bad(f"tune.space.{name}", f"grid search needs finite values (grid or choice), not {kind}")
        if t.search == "optuna" and kind == "grid":
            raise bad(f"tune.space.{name}", "optuna samples its own points; use choice instead of grid")
        if t.scheduler == "pbt" and kind == "grid":
            raise bad(f"tune.space.{name}", "PBT mutates sampled values; use choice instead of grid")
    if t.synch and t.scheduler != "pbt":
        raise bad("tune.synch", "only PBT waits for its population; remove synch or use scheduler = \"pbt\"")
    if t.synch and t.max_concurrent is not None and t.max_concurrent < trials_of(spec):
        raise bad("tune.max_concurrent", f"synchronous PBT runs every trial at once: needs {trials_of(spec)}, "
                                         f"got {t.max_concurrent}")
    if t.scheduler == "pbt" and t.search != "random":
        raise bad("tune.scheduler", "PBT explores by itself; use search = \"random\" with it")


def check_distribution(dist: Any, key: str, bad: Any) -> str:
    """The distribution's name, after checking its arguments."""
    if not isinstance(dist, dict) or len(dist) != 1:
        raise bad(key, f"expected one of {', '.join(DISTRIBUTIONS)} as {{ uniform = [low, high] }}, got {dist!r}")
    (kind, args), = dist.items()
    if kind not in DISTRIBUTIONS:
        raise bad(key, f"unknown distribution {kind!r}; one of {', '.join(DISTRIBUTIONS)}")
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise bad(key, f"{kind} needs a non-empty list of values, got {args!r}")
        return kind
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                                             for a in args)):
        raise bad(key, f"{kind} needs [low, high], got {args!r}")
    low, high = args
    if not low < high:
        raise bad(key, f"{kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise bad(key, f"loguniform needs positive bounds, got [{low}, {high}]")
    if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise bad(key, f"randint needs whole-number bounds, got [{low}, {high}]")
    return kind


def trials_of(spec: JobSpec) -> int:
    """How many trials a tuning spec runs (grid points times samples)."""
    t = spec.tune
    if t is None:
        return 1
    grid = 1
    for dist in t.space.values():
        (kind, args), = dist.items()
        if kind == "grid" or (kind == "choice" and t.search == "grid"):
            grid *= len(args)
    samples = t.num_samples if t.num_samples is not None else (1 if t.search == "grid" else 10)
    return grid * samples
