"""Job specs: TOML or Python, every mistake named by its key."""

from __future__ import annotations

import pytest

from matih_lite.errors import InvalidInput
from matih_lite.training.spec import JobSpec, ResourceSpec, TuneSpec, load_spec, parse_memory, parse_spec, trials_of

FULL = """
name = "churn-xgb"
entrypoint = "churn_train:train"
framework = "xgboost"
experiment = "churn"
max_failures = 2

[resources]
cpus = 1
gpus = 0.5
memory = "2GB"
num_workers = 1

[inputs]
train = "runs:/0123456789abcdef0123456789abcdef/artifacts/data/train.csv"
valid = { uri = "data/valid.csv" }

[params]
num_boost_round = 20

[tune]
metric = "validation-logloss"
mode = "min"
num_samples = 20
search = "random"
scheduler = "asha"
max_t = 20

[tune.space]
eta = { loguniform = [0.01, 0.3] }
max_depth = { randint = [2, 8] }
subsample = { uniform = [0.5, 1.0] }
booster = { choice = ["gbtree", "dart"] }
lambda = { grid = [0.1, 1.0] }
"""


def test_a_full_toml_spec_loads_with_paths_relative_to_its_folder(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(FULL)
    spec = load_spec(path, kind="tune")
    assert spec.kind == "tune" and spec.display_name == "churn-xgb"
    assert spec.base_dir == str(tmp_path.resolve())
    assert spec.resources == ResourceSpec(cpus=1.0, gpus=0.5, memory=2_000_000_000, num_workers=1)
    assert spec.inputs["valid"] == "data/valid.csv"
    assert spec.tune.space["max_depth"] == {"randint": [2, 8]}
    assert trials_of(spec) == 40  # 2 grid values x 20 samples
    assert parse_spec(spec.to_dict()) == spec  # round trip through JSON-able builtins


def test_a_python_object_spec_goes_through_the_same_checks():
    spec = JobSpec(entrypoint="train:main", tune=TuneSpec(metric="auc", mode="max", space={"lr": {"uniform": [0, 1]}}))
    assert parse_spec(spec).tune.search == "random"
    with pytest.raises(InvalidInput, match=r"tune.mode: expected \"min\" or \"max\""):
        parse_spec(JobSpec(entrypoint="train:main", tune=TuneSpec(metric="auc", mode="best",
                                                                  space={"lr": {"uniform": [0, 1]}})))


@pytest.mark.parametrize(("change", "message"), [
    ({"entrypoint": "train"}, "entrypoint: expected 'module:function' or a script"),
    ({"framework": "keras"}, "framework: unknown framework 'keras'"),
    ({"resources": {"cpus": 0}}, "resources.cpus: must be more than 0"),
    ({"resources": {"gpus": 1.5}}, "resources.gpus: must be 0, a fraction below 1"),
    ({"resources": {"memory": "lots"}}, "resources.memory: expected bytes or a size"),
    ({"resources": {"cpu": 2}}, "resources.cpu: unknown key; expected one of cpus, gpus, memory, num_workers"),
    ({"resources": {"num_workers": 2}, "framework": "sklearn"}, "scikit-learn trains on one worker"),
    ({"max_failures": -1}, "max_failures: must be 0 or more"),
    ({"inputs": {"train": "s3://bucket/x.csv"}}, "inputs.train: unsupported URI"),
    ({"inputs": {"train": {"features": ["churn:age"]}}}, "inputs.train: Object missing required field `entities`"),
    ({"register": "a/b"}, "register: invalid model name"),
    ({"resources": {"node_selector": {"pool": "gpu a"}}}, "resources.node_selector.pool: not a Kubernetes label"),
    ({"resources": {"tolerations": [{"key": "gpu", "operator": "Maybe"}]}},
     "resources.tolerations[0].operator: expected \"Equal\" or \"Exists\""),
    ({"resources": {"tolerations": [{"key": "gpu", "effect": "Never"}]}}, "resources.tolerations[0].effect: expected"),
    ({"resources": {"tolerations": [{"kee": "gpu"}]}}, "resources.tolerations[0].kee: unknown key"),
    ({"resources": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}},
     "resources.tolerations[0].value: a toleration with operator"),
    ({"resources": {"service_account": "Trainer_1"}}, "resources.service_account: 'Trainer_1' is not a Kubernetes"),
    ({"resources": {"image": "my image"}}, "resources.image: not an image reference"),
    ({"epochs": 3}, "epochs: unknown key; expected one of entrypoint, framework"),
])
def test_bad_train_specs_name_the_key(change, message):
    escaped = message.replace("(", r"\(").replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(InvalidInput, match=escaped):
        parse_spec({"entrypoint": "train:main", **change})


def test_kubernetes_placement_is_part_of_the_resources():
    spec = parse_spec({"entrypoint": "train:main", "resources": {
        "node_selector": {"example.com/pool": "gpu-a100"}, "image": "registry.example/ml:1.4",
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "service_account": "trainer"}})
    assert spec.resources.node_selector == {"example.com/pool": "gpu-a100"}
    assert spec.resources.tolerations[0]["effect"] == "NoSchedule" and spec.resources.service_account == "trainer"


def test_a_tune_may_have_data_parallel_trials():
    spec = parse_spec({"entrypoint": "train:main", "framework": "pytorch", "resources": {"num_workers": 2},
                       "tune": {"metric": "loss", "mode": "min", "space": {"lr": {"uniform": [0, 1]}}}})
    assert spec.kind == "tune" and spec.resources.num_workers == 2


def _tune(**kw):
    base = {"metric": "loss", "mode": "min", "space": {"lr": {"loguniform": [1e-4, 1e-1]}}}
    return {"entrypoint": "train:main", "tune": {**base, **kw}}


@pytest.mark.parametrize(("tune", "message"), [
    ({"metric": ""}, "tune.metric: name the metric"),
    ({"search": "bayes"}, "tune.search: unknown search algorithm 'bayes'"),
    ({"scheduler": "median"}, "tune.scheduler: unknown scheduler 'median'"),
    ({"space": {}}, "tune.space: give at least one parameter"),
    ({"space": {"lr": {"normal": [0, 1]}}}, "tune.space.lr: unknown distribution 'normal'"),
    ({"space": {"lr": {"loguniform": [0, 1]}}}, "tune.space.lr: loguniform needs positive bounds"),
    ({"space": {"lr": {"uniform": [1, 0]}}}, "tune.space.lr: uniform needs low < high"),
    ({"space": {"lr": {"uniform": [0, 1], "choice": [1]}}}, "tune.space.lr: expected one of"),
    ({"space": {"n": {"randint": [1.5, 4]}}}, "tune.space.n: randint needs whole-number bounds"),
    ({"space": {"b": {"choice": []}}}, "tune.space.b: choice needs a non-empty list"),
    ({"search": "grid"}, "tune.space.lr: grid search needs finite values"),
    ({"search": "optuna", "space": {"b": {"grid": [1, 2]}}}, "tune.space.b: optuna samples its own points"),
    ({"scheduler": "pbt", "search": "optuna"}, "tune.scheduler: PBT explores by itself"),
    ({"num_samples": 0}, "tune.num_samples: must be at least 1"),
    ({"grace_period": 5, "max_t": 3}, "tune.grace_period: (5) cannot exceed tune.max_t (3)"),
    ({"reduction_factor": 1}, "tune.reduction_factor: must be more than 1"),
    ({"synch": True}, "tune.synch: only PBT waits for its population"),
    ({"synch": True, "scheduler": "pbt", "num_samples": 4, "max_concurrent": 2},
     "tune.max_concurrent: synchronous PBT runs every trial at once: needs 4, got 2"),
])
def test_bad_tune_specs_name_the_key(tune, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        parse_spec(_tune(**tune))


def test_kind_must_match_the_command(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text('entrypoint = "m:f"\n')
    with pytest.raises(InvalidInput, match="needs a \\[tune\\] table"):
        load_spec(path, kind="tune")
    path.write_text(FULL)
    with pytest.raises(InvalidInput, match="run it with 'matih-lite tune'"):
        load_spec(path, kind="train")


def test_unreadable_specs_say_so(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("entrypoint = \n")
    with pytest.raises(InvalidInput, match="bad.toml: not valid TOML"):
        load_spec(tmp_path / "bad.toml")
    (tmp_path / "multi.toml").write_text('entrypoint = "m:f"\n[tune]\nmode = "min"\n')
    with pytest.raises(InvalidInput, match="tune: Object missing required field `metric`"):
        load_spec(tmp_path / "multi.toml")


def test_memory_sizes():
    assert parse_memory("512MiB", "m") == 512 * 2**20
    assert parse_memory("1.5g", "m") == 1_500_000_000
    assert parse_memory(1024, "m") == 1024
    with pytest.raises(InvalidInput):
        parse_memory(True, "m")


def test_search_spaces_become_ray_tune_domains():
    pytest.importorskip("ray.tune")
    from ray import tune

    from matih_lite.training.runner import scheduler, search_algorithm, search_space

    spec = parse_spec(_tune(space={"lr": {"loguniform": [1e-4, 1e-1]}, "depth": {"randint": [2, 4]},
                                   "sub": {"uniform": [0.5, 1.0]}, "b": {"choice": ["a", "b"]},
                                   "l": {"grid": [1, 2]}})).tune
    space = search_space(msgspec_builtins(spec))
    assert isinstance(space["lr"], tune.search.sample.Float)
    assert space["depth"].lower == 2 and space["depth"].upper == 5  # randint includes its upper bound
    assert space["b"].categories == ["a", "b"]
    assert space["l"] == {"grid_search": [1, 2]}
    grid = parse_spec(_tune(search="grid", space={"b": {"choice": ["a", "b"]}})).tune
    assert search_space(msgspec_builtins(grid))["b"] == {"grid_search": ["a", "b"]}
    assert search_algorithm(msgspec_builtins(spec)) is None
    assert type(scheduler({"scheduler": "asha", "max_t": 8})).__name__ == "AsyncHyperBandScheduler"
    assert type(scheduler({"scheduler": "hyperband"})).__name__ == "HyperBandScheduler"
    assert scheduler({"scheduler": "fifo"}) is None


def msgspec_builtins(value):
    import msgspec

    return msgspec.to_builtins(value)
